"""Test configuration shared by every test.

Network safety: every rclpy process of the test suite keeps DDS discovery on this machine,
and the suite uses its own ROS domain so parallel runs on one machine do not cross-talk.
This runs before any test module imports rclpy.
"""
import os
import random
import subprocess
import sys

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(100, 200)))
os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture(scope="module")
def roca_home(tmp_path_factory):
    """A private ROCA_HOME (cache of the embedded CAD library) for one test module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ROCA_HOME", str(tmp_path_factory.mktemp("roca_home")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module of tiny models: they gain nothing from two, and
    spinning OpenMP threads slow down tenfold when the 2 cores are shared with other work."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def random_small_checkpoint(tmp_path_factory):
    """A randomly initialised small-preset model (seed 0) saved once for the whole run."""
    import torch

    from roca_core.checkpoint import save_checkpoint
    from roca_core.model import RocaModel, load_preset
    cfg = load_preset("small")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("random_small") / "small.safetensors"
    save_checkpoint(path, RocaModel(cfg), cfg)
    return path


@pytest.fixture(scope="module")
def tiny_render(tmp_path_factory, roca_home):
    """A data set of 6 rendered 48x64 images in 2 rooms, for the crop heads' CLIs (a
    subprocess keeps EGL out of the test process)."""
    root = tmp_path_factory.mktemp("tiny_render")
    (root / "render.yaml").write_text("min_visible_pixels: 20\n")
    cmd = [sys.executable, "-m", "roca_core.cli.make_dataset", "--out", str(root / "data"), "--images", "6",
           "--height", "48", "--width", "64", "--focal", "58", "--images-per-scene", "3",
           "--config", str(root / "render.yaml"), "--workers", "1", "--seed", "4", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "data"
