#!/usr/bin/env bash
# The GPU job in one command: install the brought-along wheels without network, then
# benchmark, train and evaluate roca on the CUDA machine (roca_core/gpu_job; README "GPU").
#
#   bash scripts/gpu_run.sh OUT_DIR [--minutes M] [--preset config/small_heads.yaml] [--work DIR]
#   bash scripts/gpu_run.sh OUT_DIR --dry-run        # CPU check with tiny sizes (the test suite)
#
# Wheels: ROCA_WHEELS (default .whl/gpu, made by scripts/gpu_bundle.sh) are installed into
# WORK/site with `pip install --no-index` (or unpacked when the image has no pip). Python:
# PYTHON, else .venv/bin/python for --dry-run when it exists, else python3.
set -euo pipefail
export ROCA_GPU_JOB_T0="${ROCA_GPU_JOB_T0:-$(date +%s.%N)}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: scripts/gpu_run.sh OUT_DIR [--minutes M] [--preset YAML] [--work DIR] [--dry-run]" >&2
  exit 2
fi
OUT="$1"; shift
DRY=0; WORK=""
ARGS=("$@")
for ((i = 0; i < ${#ARGS[@]}; i++)); do
  case "${ARGS[$i]}" in
    --dry-run) DRY=1 ;;
    --work) WORK="${ARGS[$((i + 1))]:-}" ;;
  esac
done
if [[ -z "$WORK" ]]; then
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/roca_gpu_job_XXXXXX")"
  ARGS+=(--work "$WORK")
fi
mkdir -p "$OUT" "$WORK"

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ $DRY == 1 && -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi

WHEELS="${ROCA_WHEELS:-$ROOT/.whl/gpu}"
if [[ $DRY == 0 ]]; then
  if compgen -G "$WHEELS/*.whl" > /dev/null; then
    SITE="$WORK/site"
    echo "[gpu_run] installing $(ls "$WHEELS"/*.whl | wc -l) wheel(s) from $WHEELS into $SITE (no network)" \
      | tee -a "$OUT/job.log" >&2
    if "$PY" -m pip --version > /dev/null 2>&1; then
      "$PY" -m pip install --quiet --no-index --no-deps --disable-pip-version-check \
        --target "$SITE" "$WHEELS"/*.whl 2>&1 | tee -a "$OUT/job.log" >&2
    else  # wheels of pure-Python and manylinux packages are zip files that unpack into site-packages
      for w in "$WHEELS"/*.whl; do "$PY" -m zipfile -e "$w" "$SITE"; done
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "[gpu_run] no wheels in $WHEELS: using the packages the image has" | tee -a "$OUT/job.log" >&2
  fi
fi
# EGL for the renderer: GPU images may lack the GL vendor-neutral loader (libEGL.so.1).
# scripts/gpu_bundle.sh downloads its Debian packages into .gl; unpacked as root only.
GL_DEBS="${ROCA_GL_DEBS:-$ROOT/.gl}"
if [[ $DRY == 0 ]] && ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1 ' && compgen -G "$GL_DEBS/*.deb" > /dev/null; then
  if [[ $(id -u) == 0 ]]; then
    echo "[gpu_run] no libEGL.so.1: unpacking $(ls "$GL_DEBS"/*.deb | wc -l) GL loader package(s) from $GL_DEBS" \
      | tee -a "$OUT/job.log" >&2
    for f in "$GL_DEBS"/*.deb; do dpkg -x "$f" /; done
    ldconfig
  else
    echo "[gpu_run] no libEGL.so.1 and not root: cannot unpack $GL_DEBS" | tee -a "$OUT/job.log" >&2
  fi
fi
NV_EGL=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
if [[ $DRY == 0 && -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" && -f $NV_EGL ]] \
   && ! compgen -G "/usr/share/glvnd/egl_vendor.d/*nvidia*" > /dev/null; then
  export __EGL_VENDOR_LIBRARY_FILENAMES=$NV_EGL  # the driver's EGL lives outside glvnd's search path
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
exec "$PY" -m roca_core.cli.gpu_job "$OUT" "${ARGS[@]}"
