"""roca_node: camera images in, 9-DoF aligned CAD models out.

The node is made of the parts in :mod:`roca_ros.node_parts` (parameters, model, input
pairing, inference worker, publishing), all set up at construction; the managed variant
(:mod:`roca_ros.lifecycle_node`) sets up the same parts on its lifecycle transitions.

Run ``roca_node`` (or ``python -m roca_ros.node``): with no arguments it loads the committed
demo model and the embedded CAD library and listens on ``/roca/image`` and
``/roca/camera_info``; ``--ros-args`` remaps, parameters and parameter files work as usual.
SIGINT and SIGTERM (once or repeatedly) stop it cleanly with exit code 0
(:mod:`roca_ros.shutdown`).
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

from rclpy.node import Node

from roca_ros.node_parts import PredictorFactory, RocaParts, StartupError
from roca_ros.shutdown import run_node

NODE_NAME = "roca_node"
DEFAULT_NAMESPACE = "roca"

__all__ = ["DEFAULT_NAMESPACE", "NODE_NAME", "RocaNode", "StartupError", "main"]


class RocaNode(RocaParts, Node):
    """The ROS 2 node around :class:`roca_core.Predictor`, running from construction on.

    ``predictor_factory(settings, cad_database) -> predictor`` is injectable for tests and
    embedding; the default builds ``roca_core.Predictor`` from the parameters.
    """

    def __init__(self, node_name: str = NODE_NAME, namespace: str = DEFAULT_NAMESPACE,
                 predictor_factory: Optional[PredictorFactory] = None, **node_kwargs: Any) -> None:
        super().__init__(node_name, namespace=namespace, **node_kwargs)
        try:
            self.declare_roca_parameters(predictor_factory)
            self.load_model()
            self.open_io()
        except StartupError as exc:
            self.get_logger().fatal(str(exc))
            self.destroy_node()
            raise

    def destroy_node(self) -> None:
        """Finish the frame in flight and publish its results before the node goes away."""
        self.close_io()
        self.unload_model()
        super().destroy_node()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``roca_node``; returns the process exit code."""
    return run_node(RocaNode, list(sys.argv if argv is None else argv), (StartupError,),
                    doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
