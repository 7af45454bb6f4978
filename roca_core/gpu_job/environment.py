"""What the GPU job runs on: versions, the GPU, optional backends, and EGL rendering.

Checked before any long work, so a machine that cannot do the job says why in its first
seconds (no CUDA, a missing wheel, no EGL) instead of after minutes.
"""
from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys
from typing import Any

# Imported at run time by rendering, loading, training or evaluation.
REQUIRED = ("numpy", "scipy", "cv2", "PIL", "yaml", "safetensors", "tqdm", "matplotlib",
            "trimesh", "pycocotools", "moderngl", "glcontext", "torch", "torchvision")
# Used when present; roca_core has a fallback without them.
OPTIONAL = {"faiss": "numpy exact L2 index", "pytorch3d": "pure-torch voxeliser"}

_EGL_PROBE = ("import moderngl; ctx = moderngl.create_standalone_context(backend='egl'); "
              "print(ctx.info['GL_RENDERER'] + ' | OpenGL ' + ctx.info['GL_VERSION']); ctx.release()")


class JobEnvironmentError(RuntimeError):
    """The machine cannot run the job (the message says what is missing)."""


def _version(module: str) -> "str | None":
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return None
    return str(getattr(mod, "__version__", "present"))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def egl_renderer(timeout_s: float = 60.0) -> str:
    """The OpenGL renderer of a headless EGL context, probed in a child process (a GL context
    and CUDA do not share the job's process); raises when there is none."""
    try:
        res = subprocess.run([sys.executable, "-c", _EGL_PROBE], capture_output=True, text=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise JobEnvironmentError(f"EGL probe did not answer in {timeout_s:.0f} s") from exc
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise JobEnvironmentError("no headless OpenGL (EGL) context for the renderer: "
                                  + " / ".join(tail))
    return res.stdout.strip()


def voxeliser_backend(configured: str) -> str:
    """The backend a model with ``voxelize_backend: configured`` uses on this machine."""
    from roca_core.geometry import voxelize

    if configured == "torch" or (configured == "auto" and not voxelize.HAVE_PYTORCH3D):
        return "torch (pure-torch scatter)"
    return "pytorch3d (compiled points_to_volumes, torch at the border)"


def check_environment(device: str, probe_egl: bool = True) -> dict[str, Any]:
    """Versions and backends as a dict; raises :class:`JobEnvironmentError` when the job
    cannot run (``device == "cuda"`` without CUDA, a missing required package, no EGL)."""
    missing = [m for m in REQUIRED if _version(m) is None]
    if missing:
        raise JobEnvironmentError(
            f"missing Python packages {missing}: bring their wheels (scripts/gpu_bundle.sh "
            "downloads requirements/gpu.txt) in ROCA_WHEELS (default .whl/gpu) for scripts/gpu_run.sh")
    import torch
    import torchvision
    from roca_core.geometry import voxelize

    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu_cores": usable_cores(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "packages": {m: _version(m) for m in REQUIRED if m not in ("torch", "torchvision")},
        "voxeliser": voxeliser_backend("auto") + ("" if voxelize.HAVE_PYTORCH3D
                                                   else "; pytorch3d not importable"),
        "retrieval_index": "faiss IndexFlatL2" if _version("faiss") else "numpy exact L2 (faiss not installed)",
        "optional": {m: _version(m) or f"absent -> {fallback}" for m, fallback in OPTIONAL.items()},
    }
    if device == "cuda":
        if not torch.cuda.is_available():
            raise JobEnvironmentError(
                f"CUDA is not available (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda or 'none'}, {torch.cuda.device_count()} device(s) visible): "
                "the GPU job needs an NVIDIA GPU. For a CPU check of the job run it with --dry-run.")
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2 ** 30, 1),
                    gpu_capability=f"{props.major}.{props.minor}",
                    cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
    if probe_egl:
        info["egl_renderer"] = egl_renderer()
    return info


def describe(info: dict[str, Any]) -> str:
    """The lines the job log starts with."""
    gpu = (f"{info['gpu']} ({info['gpu_memory_gb']} GB, sm {info['gpu_capability']}, cuDNN {info['cudnn']})"
           if "gpu" in info else "none (CPU run)")
    return "\n".join([
        f"python {info['python']} on {info['platform']}, {info['cpu_cores']} usable cores",
        f"torch {info['torch']} (CUDA {info['torch_cuda']}), torchvision {info['torchvision']}",
        f"GPU: {gpu}",
        f"voxeliser backend (voxelize_backend: auto): {info['voxeliser']}",
        f"retrieval index: {info['retrieval_index']}",
        f"EGL renderer: {info.get('egl_renderer', 'not probed')}",
        "packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()),
    ])
