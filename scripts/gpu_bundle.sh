#!/usr/bin/env bash
# Download the wheels the GPU job needs on a machine without network (requirements/gpu.txt)
# for CPython 3.12 on manylinux x86_64, into an ignored folder that travels with the
# repository (the device tool's `carry`), and check the 64 MB limit of repository + wheels.
#
#   bash scripts/gpu_bundle.sh [DEST]        # default .whl/gpu
#   bash scripts/gpu_bundle.sh --list        # only print what would be downloaded
#
# PYTHON_VERSION (default 3.12) and PIP (default .venv/bin/pip, else pip3) can be overridden.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$ROOT/requirements/gpu.txt"
LIMIT_MB=64
if [[ "${1:-}" == "--list" ]]; then
  grep -vE '^\s*(#|$)' "$REQ" | sed 's/\s*#.*//'
  exit 0
fi
DEST="${1:-$ROOT/.whl/gpu}"
PIP="${PIP:-}"
if [[ -z "$PIP" ]]; then
  if [[ -x "$ROOT/.venv/bin/pip" ]]; then PIP="$ROOT/.venv/bin/pip"; else PIP=pip3; fi
fi
mkdir -p "$DEST"
rm -f "$DEST"/*.whl
echo "[gpu_bundle] downloading $(grep -cvE '^\s*(#|$)' "$REQ") package(s) for CPython ${PYTHON_VERSION:-3.12} into $DEST"
"$PIP" download --disable-pip-version-check --quiet --no-deps --only-binary=:all: \
  --python-version "${PYTHON_VERSION:-3.12}" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -r "$REQ" -d "$DEST"
# The GL loader packages (glvnd's libEGL.so.1), unpacked by gpu_run.sh where the image lacks them.
GL="${ROCA_GL_DEBS:-$ROOT/.gl}"
if command -v apt-get > /dev/null; then
  mkdir -p "$GL" /tmp/roca_apt_amd64/partial
  apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/roca_apt_amd64)
  if apt-get "${apt_opts[@]}" update > /dev/null 2>&1 \
     && (cd "$GL" && apt-get "${apt_opts[@]}" download libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 libvulkan1 > /dev/null 2>&1); then
    echo "[gpu_bundle] GL loader packages in $GL: $(ls "$GL"/*.deb | wc -l)"
  else
    echo "[gpu_bundle] WARNING: could not download the GL loader packages (apt-get); the GPU image must have libEGL.so.1" >&2
  fi
fi
ls -l "$DEST"/*.whl | awk '{printf "  %8.2f MB  %s\n", $5 / 1048576, $NF}'
wheels=$(du -cb "$DEST"/*.whl "$GL"/*.deb 2>/dev/null | tail -1 | cut -f1)
# What the device tool copies: tracked and untracked-but-not-ignored files, plus the wheels.
repo=$(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 -r du -cb 2>/dev/null \
       | awk '$2 == "total" {s += $1} END {print s + 0}')
total=$((wheels + repo))
awk -v w="$wheels" -v r="$repo" -v l="$LIMIT_MB" 'BEGIN {
  printf "[gpu_bundle] wheels and GL packages %.1f MB + repository %.1f MB = %.1f MB (limit %d MB)\n", w / 1048576, r / 1048576, (w + r) / 1048576, l }'
if ((total > LIMIT_MB * 1048576)); then
  echo "[gpu_bundle] over the ${LIMIT_MB} MB limit" >&2
  exit 1
fi
