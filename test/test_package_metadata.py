"""Package metadata: entry points import, data files land where ROS tools look for them."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def console_scripts() -> dict[str, str]:
    eps = metadata.distribution("roca_ros").entry_points
    return {ep.name: ep.value for ep in eps if ep.group == "console_scripts"}


def test_console_entry_points_are_importable_callables():
    scripts = console_scripts()
    assert {"roca_node", "roca-demo", "roca-predict", "roca-train", "roca-eval", "roca-cad-db",
            "roca-make-dataset", "roca-train-yaw"} <= set(scripts)
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        obj = getattr(importlib.import_module(module), func)
        assert callable(obj), f"{name} -> {target} is not callable"
        assert (VENV_BIN / name).exists(), f"console script {name} not installed in {VENV_BIN}"


def test_every_console_script_answers_help():
    for name in console_scripts():
        out = subprocess.run([str(VENV_BIN / name), "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{name} --help failed: {out.stderr[-2000:]}"
        assert "usage" in out.stdout.lower()


def test_launch_and_config_found_through_ament_index():
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("roca_ros"))
    for folder in ("launch", "config"):
        for src in (REPO / folder).iterdir():
            if src.is_file():
                assert (share / folder / src.name).is_file(), f"{folder}/{src.name} not under {share}"
    assert (share / "package.xml").is_file()
    msgs_share = Path(get_package_share_directory("roca_msgs"))
    assert (msgs_share / "msg" / "ObjectAlignmentArray.msg").is_file()


def test_package_xml_declares_what_the_code_uses():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "roca_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    for needed in ("rclpy", "roca_msgs", "sensor_msgs", "visualization_msgs", "geometry_msgs", "std_msgs"):
        assert needed in deps, f"package.xml lacks a dependency on {needed}"
    msgs_root = ET.parse(REPO / "roca_msgs" / "package.xml").getroot()
    assert msgs_root.findtext("member_of_group") == "rosidl_interface_packages"


def test_setup_py_versions_match_package_xml():
    root = ET.parse(REPO / "package.xml").getroot()
    assert metadata.version("roca_ros") == root.findtext("version")


def _copy_sources(repo: Path, dest: Path) -> None:
    """Copy what a user's clone holds (the files git tracks, and new ones it does not ignore),
    not a developer's data sets and training runs (tens of GB under data/ and out/), nor the
    demo model (colcon does not need it)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True)
    if listed.returncode != 0:  # not a git checkout: everything but the usual build and output folders
        shutil.copytree(repo, dest, ignore=shutil.ignore_patterns(
            ".venv", "build", "install", "log", ".git", "*.egg-info", "__pycache__", "demo_out", "models", "data", "out"))
        return
    for rel in filter(None, listed.stdout.decode().split("\0")):
        src = repo / rel
        if rel.startswith("models/") or not src.is_file():  # deleted but still tracked
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


@pytest.mark.slow
def test_readme_colcon_command_builds_both_packages(tmp_path):
    """The README's colcon command, run in a fresh workspace, installs roca_msgs and roca_ros."""
    colcon = VENV_BIN / "colcon"
    if not colcon.exists():
        pytest.skip("colcon not installed in this environment")
    readme = (REPO / "README.md").read_text()
    command = next(line.strip() for line in readme.splitlines() if line.strip().startswith("colcon build"))
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    _copy_sources(REPO, ws / "src" / "roca")
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV_BIN.parent), PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    out = subprocess.run(command + " --event-handlers console_direct-", shell=True, cwd=ws, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    install = ws / "install"
    assert (install / "roca_ros" / "share" / "roca_ros" / "launch" / "roca.launch.py").is_file()
    assert (install / "roca_ros" / "share" / "roca_ros" / "config" / "roca.yaml").is_file()
    assert (install / "roca_ros" / "share" / "ament_index" / "resource_index" / "packages" / "roca_ros").is_file()
    assert list((install / "roca_msgs").rglob("roca_msgs/msg/_object_alignment_array.py"))
