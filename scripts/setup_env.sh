#!/usr/bin/env bash
# One-command environment for roca: a virtual environment in the repository (.venv) with the
# pinned dependencies (requirements/lock.txt), roca_msgs built with cmake against the ROS 2
# wheels and installed into it, and this project installed editable.
#
# Idempotent: when nothing it depends on changed since the last successful run, it checks the
# environment and returns in seconds. Every process started from .venv defaults to
# ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (a .pth file), so DDS discovery stays on this machine.
#
# Environment: PYTHON (interpreter for the venv, must be CPython 3.11: the ROS wheels are cp311),
# ROCA_VENV (venv path, default .venv), ROCA_SETUP_FORCE=1 (redo every step).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${ROCA_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.roca_setup_stamp"
BUILD="$ROOT/build/roca_msgs"

step() { printf '\n[setup] %s\n' "$*"; }
fail() { printf '\n[setup] FAILED: %s\n' "$*" >&2; exit 1; }
trap 'fail "command failed at line $LINENO: $BASH_COMMAND (see the output above)"' ERR

# Everything the result depends on; any change re-runs the full setup.
fingerprint() {
  cat requirements/lock.txt setup.py setup.cfg scripts/setup_env.sh \
      roca_msgs/CMakeLists.txt roca_msgs/package.xml roca_msgs/msg/*.msg roca_msgs/srv/*.srv \
    | sha256sum | cut -d' ' -f1
}

check_env() {
  ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST "$VENV/bin/python" - <<'PY'
import importlib, os, sys
for name in ("torch", "torchvision", "rclpy", "roca_msgs.msg", "roca_msgs.srv", "roca_core", "roca_ros"):
    importlib.import_module(name)
if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
    sys.exit("discovery range default missing")
PY
}

# Editable wheels install neither setup.py's data_files nor scripts where ROS tools look, so
# lay them out as colcon --symlink-install does: real directories under share/roca_ros holding
# one link per file (ros2launch walks share/<pkg> with os.walk, which does not enter directory
# links), and lib/roca_ros/<script> -> bin/<script> (launch_ros and `ros2 run` run
# <prefix>/lib/<pkg>/<executable>). Re-run on every call: cheap, and picks up new files.
install_ros_layout() {
  local share="$VENV/share/roca_ros" libexec="$VENV/lib/roca_ros" folder src name
  mkdir -p "$VENV/share/ament_index/resource_index/packages" "$share"
  cp resource/roca_ros "$VENV/share/ament_index/resource_index/packages/roca_ros"
  ln -sfn "$ROOT/package.xml" "$share/package.xml"
  for folder in launch config models; do
    rm -rf "${share:?}/$folder"
    mkdir -p "$share/$folder"
    for src in "$ROOT/$folder"/*; do
      if [[ -f "$src" ]]; then ln -sfn "$src" "$share/$folder/$(basename "$src")"; fi
    done
  done
  rm -rf "$libexec"; mkdir -p "$libexec"
  "$VENV/bin/python" -c 'from importlib import metadata
for ep in metadata.distribution("roca_ros").entry_points.select(group="console_scripts"): print(ep.name)' \
    | while read -r name; do ln -sfn "$VENV/bin/$name" "$libexec/$name"; done
}

WANT="$(fingerprint)"
if [[ "${ROCA_SETUP_FORCE:-0}" != 1 && -x "$VENV/bin/python" && -f "$STAMP" \
      && "$(cat "$STAMP")" == "$WANT" ]] && check_env 2>/dev/null; then
  install_ros_layout
  echo "[setup] environment up to date: $VENV"
  exit 0
fi

step "checking the interpreter"
command -v "$PYTHON" >/dev/null || fail "no '$PYTHON' on PATH; set PYTHON to a CPython 3.11 interpreter"
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$PYVER" == "3.11" ]] || fail "$PYTHON is Python $PYVER; the ROS 2 wheels need CPython 3.11 (set PYTHON=python3.11)"
command -v cmake >/dev/null || fail "cmake not found; install it (Debian: apt-get install cmake)"
command -v c++ >/dev/null || fail "no C++ compiler found; install one (Debian: apt-get install g++)"

step "checking EGL/Mesa (headless rendering of the synthetic data)"
if ! ldconfig -p | grep -q 'libEGL.so.1' || ! ldconfig -p | grep -q 'libEGL_mesa'; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri
  else
    echo "[setup] warning: Mesa EGL not found; install libegl1 libegl-mesa0 libgl1-mesa-dri to render synthetic data" >&2
  fi
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  step "creating the virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
# pip, quiet, without the notes about this machine's optional local indexes.
pipq() { "$PY" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v '^WARNING: Location' >&2); }

step "installing pinned dependencies (requirements/lock.txt; torch is large, the first run takes minutes)"
pipq install --upgrade "pip>=23.2" "setuptools>=68,<82" wheel
pipq install -r requirements/lock.txt
"$PY" -m pip check > /dev/null || { "$PY" -m pip check; fail "installed packages are inconsistent (pip check)"; }

step "pointing the ROS wheels' cmake files at this interpreter's headers"
PYINC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NPINC="$("$PY" -c 'import numpy; print(numpy.get_include())')"
[[ -f "$PYINC/Python.h" ]] || fail "Python headers not found at $PYINC (install python3.11-dev)"
{ grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null || true; } | while read -r f; do
  sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
         -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" "$f"
done

step "building roca_msgs with cmake and installing it into the environment"
export AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
rm -rf "$BUILD"; mkdir -p "$ROOT/build"
cmake -S roca_msgs -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
      -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > "$ROOT/build/roca_msgs.log" 2>&1 \
  || { tail -40 "$ROOT/build/roca_msgs.log"; fail "cmake configure of roca_msgs (log: build/roca_msgs.log)"; }
cmake --build "$BUILD" -j "$(nproc)" >> "$ROOT/build/roca_msgs.log" 2>&1 \
  || { tail -40 "$ROOT/build/roca_msgs.log"; fail "building roca_msgs (log: build/roca_msgs.log)"; }
cmake --install "$BUILD" >> "$ROOT/build/roca_msgs.log" 2>&1 \
  || { tail -40 "$ROOT/build/roca_msgs.log"; fail "installing roca_msgs (log: build/roca_msgs.log)"; }

step "installing roca (editable)"
pipq install --no-deps --no-build-isolation -e .

step "installing the ROS layout: share/roca_ros (launch, config, models) and lib/roca_ros (executables)"
install_ros_layout

step "defaulting ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and AMENT_PREFIX_PATH for processes in $VENV"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import os, sys; os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST'); os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)" \
  > "$SITE/roca_env.pth"

step "checking the environment"
check_env || fail "the environment does not import (see the error above)"
echo "$WANT" > "$STAMP"
echo "[setup] done: $VENV"
