#!/usr/bin/env bash
# Regenerate requirements/lock.txt from the packages installed in .venv.
# Only real distributions (dist-info) are listed: the ROS wheels carry nested *.egg-info
# metadata (action_msgs, rclpy, ...) that pip freeze reports but no index serves, and
# roca_msgs/roca_ros are built from this repository.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/python - > requirements/lock.txt <<'PY'
from importlib import metadata

print("# Exact versions installed by scripts/setup_env.sh; regenerate with scripts/freeze_requirements.sh")
seen = {}
for dist in metadata.distributions():
    path = str(getattr(dist, "_path", ""))
    name = dist.metadata["Name"]
    if not path.endswith(".dist-info") or name.lower().replace("_", "-") in ("roca-ros", "roca-msgs"):
        continue
    if getattr(dist, "origin", None) is not None and getattr(dist.origin, "dir_info", None) is not None:
        continue  # editable/local installs
    seen[name.lower()] = f"{name}=={dist.version}"
for key in sorted(seen):
    print(seen[key])
PY
echo "wrote requirements/lock.txt ($(grep -vc '^#' requirements/lock.txt) packages)"
