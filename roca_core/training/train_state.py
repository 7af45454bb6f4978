"""Save and resume the full training state: weights, optimiser, schedule, iteration, RNGs.

A checkpoint is a directory written atomically (see :mod:`roca_core.atomic_io`)::

    checkpoints/iter_0001000/
        model.safetensors   model weights (no pickle)
        train_state.pt      optimiser + scheduler + RNG states, tensors and plain data only,
                            read back with ``torch.load(weights_only=True)`` (no code runs)
        meta.json           iteration, config, sha256 of the two files above
    checkpoints/last        name of the newest complete checkpoint directory

The sha256 sums catch truncated or overwritten files with a clear message instead of a
confusing deserialisation error.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roca_core.atomic_io import atomic_write_dir, atomic_write_text, remove_stale_temps

FORMAT = "roca-train-state"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"
LAST_POINTER = "last"
_DIR_RE = re.compile(r"^iter_(\d{7,})$")


class TrainStateError(RuntimeError):
    """A training checkpoint is missing, incomplete, corrupted or does not fit the model."""


@dataclass
class ResumeInfo:
    """What a loaded checkpoint says beyond the restored objects."""

    iteration: int
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1


# ---------------------------------------------------------------------------- RNG states
def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU + CUDA) generator states as tensors / plain data."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ---------------------------------------------------------------------------- helpers
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    return getattr(model, "module", model)


def _cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached contiguous CPU copies (safetensors refuses shared or strided storage)."""
    return {k: v.detach().to("cpu").contiguous().clone()
            for k, v in unwrap_model(model).state_dict().items()}


def checkpoint_dir_name(iteration: int) -> str:
    return f"iter_{int(iteration):07d}"


def list_checkpoints(root: "str | Path") -> list[Path]:
    """Complete-looking checkpoint directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if p.is_dir() and (m := _DIR_RE.match(p.name)) and (p / META_FILE).is_file()]
    return [p for _, p in sorted(found)]


def find_last_checkpoint(root: "str | Path") -> Path | None:
    """The checkpoint named by ``root/last``, else the newest directory; None if there is none."""
    root = Path(root)
    pointer = root / LAST_POINTER
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if candidate.is_dir() and (candidate / META_FILE).is_file():
            return candidate
    found = list_checkpoints(root)
    return found[-1] if found else None


# ---------------------------------------------------------------------------- save
def save_train_state(root: "str | Path", iteration: int, model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer,
                     scheduler: "torch.optim.lr_scheduler.LRScheduler | None" = None,
                     config: "dict[str, Any] | None" = None, extra: "dict[str, Any] | None" = None,
                     rng_states: "list[dict[str, Any]] | None" = None,
                     keep: int = 2) -> Path:
    """Write ``root/iter_NNNNNNN`` atomically, point ``root/last`` at it, prune old ones.

    ``rng_states``: one entry per process (rank order); default: this process's state.
    ``extra`` must be JSON-serialisable (it goes to meta.json).
    """
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)
    weights = _cpu_state_dict(model)
    state = {
        "iteration": int(iteration),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_states if rng_states is not None else [capture_rng_state()],
    }
    meta_base = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "iteration": int(iteration),
        "created_unix": time.time(), "world_size": len(state["rng"]),
        "config": config or {}, "extra": extra or {},
    }
    try:
        json.dumps(meta_base)
    except TypeError as exc:
        raise ValueError(f"checkpoint config/extra must be JSON-serialisable: {exc}") from exc

    def fill(tmp: Path) -> None:
        save_file(weights, str(tmp / MODEL_FILE),
                  metadata={"format": FORMAT, "iteration": str(int(iteration))})
        torch.save(state, tmp / STATE_FILE)
        meta = dict(meta_base, sha256={MODEL_FILE: _sha256(tmp / MODEL_FILE),
                                       STATE_FILE: _sha256(tmp / STATE_FILE)})
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))

    target = atomic_write_dir(root / checkpoint_dir_name(iteration), fill)
    atomic_write_text(root / LAST_POINTER, target.name + "\n")
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------- load
def read_meta(path: Path) -> dict[str, Any]:
    """meta.json of a checkpoint directory, checked for format and the files' integrity."""
    if not path.is_dir():
        raise TrainStateError(f"training checkpoint {path} does not exist (or is not a directory)")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise TrainStateError(f"{path} is not a complete training checkpoint: {META_FILE} missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainStateError(f"{meta_path} is corrupted (not valid JSON: {exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TrainStateError(f"{meta_path} is not a roca training checkpoint "
                              f"(format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise TrainStateError(f"{path} has format version {meta['format_version']}, newer than "
                              f"this roca ({FORMAT_VERSION})")
    for name in (MODEL_FILE, STATE_FILE):
        file = path / name
        if not file.is_file():
            raise TrainStateError(f"{path} is incomplete: {name} missing")
        expected = meta.get("sha256", {}).get(name)
        if expected is None or _sha256(file) != expected:
            raise TrainStateError(f"{file} is corrupted or truncated (sha256 does not match "
                                  f"{META_FILE}); resume from an older checkpoint")
    return meta


def resolve_checkpoint(path: "str | Path") -> Path:
    """Accept a checkpoint dir, a checkpoints root (uses ``last``) or a run's out dir."""
    path = Path(path)
    if (path / META_FILE).exists():
        return path
    for root in (path, path / "checkpoints"):
        found = find_last_checkpoint(root)
        if found is not None:
            return found
    raise TrainStateError(f"no training checkpoint found at {path}")


def load_train_state(path: "str | Path", model: torch.nn.Module,
                     optimizer: "torch.optim.Optimizer | None" = None,
                     scheduler: "torch.optim.lr_scheduler.LRScheduler | None" = None,
                     rank: int = 0, restore_rng: bool = True) -> ResumeInfo:
    """Restore everything :func:`save_train_state` wrote into the given objects.

    The model's parameters keep their device; optimiser state is moved next to them.
    Raises :class:`TrainStateError` with the reason when anything does not fit.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt = resolve_checkpoint(path)
    meta = read_meta(ckpt)
    try:
        weights = load_file(str(ckpt / MODEL_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TrainStateError(f"{ckpt / MODEL_FILE} cannot be read as safetensors: {exc}") from exc
    try:
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types; all mean "refuse"
        raise TrainStateError(f"{ckpt / STATE_FILE} cannot be loaded safely: {exc}") from exc

    target = unwrap_model(model)
    own = target.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise TrainStateError(f"{ckpt} does not fit this model: missing {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                              f"{'...' if len(unexpected) > 5 else ''} (different config?)")
    bad = [k for k in own if tuple(own[k].shape) != tuple(weights[k].shape)]
    if bad:
        raise TrainStateError(f"{ckpt} does not fit this model: shape mismatch for {bad[:5]} "
                              f"(e.g. {bad[0]}: checkpoint {tuple(weights[bad[0]].shape)} vs "
                              f"model {tuple(own[bad[0]].shape)})")
    target.load_state_dict(weights)

    if optimizer is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise TrainStateError(f"{ckpt}: optimiser state does not fit: {exc}") from exc
    if scheduler is not None and state.get("scheduler") is not None:
        saved = state["scheduler"]
        if saved.get("lr_lambdas"):
            ours = scheduler.state_dict().get("lr_lambdas")
            if ours and ours != saved["lr_lambdas"]:
                # The schedule settings changed between runs: keep the new ones, resume the count.
                saved = dict(saved, lr_lambdas=ours)
        scheduler.load_state_dict(saved)
    if restore_rng:
        rng = state.get("rng") or []
        if rng:
            restore_rng_state(rng[rank] if rank < len(rng) else rng[0])
    return ResumeInfo(iteration=int(state["iteration"]), path=ckpt, config=meta.get("config", {}),
                      extra=meta.get("extra", {}), world_size=int(meta.get("world_size", 1)))
