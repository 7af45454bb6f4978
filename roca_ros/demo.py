"""The roca demo: the README's main command (``make demo``).

Placeholder until the demo model lands (see issue "roca_ros: the ROS 2 node ... and the demo").
"""
from __future__ import annotations

import argparse
import sys


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(prog="roca-demo", description=__doc__)
    parser.add_argument("--out", default="demo_out", help="output folder")
    parser.parse_args(argv)
    print("roca-demo: the demo is not built yet (it needs the node and the trained demo model).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
