"""Where roca finds its shipped files (demo model, embedded CAD library, configs)."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# Source checkout (editable install): the repository root holds models/ and config/.
REPO_ROOT = PACKAGE_DIR.parent


def share_dir() -> Path:
    """Directory with config/ and launch/: the ament share dir when installed, else the repo."""
    try:
        from ament_index_python.packages import get_package_share_directory  # type: ignore
        return Path(get_package_share_directory("roca_ros"))
    except Exception:
        return REPO_ROOT


def data_home() -> Path:
    """Writable cache for generated assets (embedded CAD library, databases)."""
    base = os.environ.get("ROCA_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "roca")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
