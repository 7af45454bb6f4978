"""Sizes and time limits of the GPU job, one profile per machine kind (``config/gpu_job.yaml``).

The job trains whatever recipe the preset YAML it is given holds (``train.preset``, default
the small preset's file), so recipe changes need no change here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roca_core.config_io import ConfigError, from_dict, load_yaml
from roca_core.paths import REPO_ROOT

JOB_CONFIG = REPO_ROOT / "config" / "gpu_job.yaml"
PROFILES = ("gpu", "dry_run")


@dataclass
class RenderJob:
    """The synthetic data: one render whose last rooms are the held-out set."""

    images: int = 12000
    # Images of the held-out rooms (rounded to whole rooms); the demo model never saw them
    # either, so both models are scored on the same unseen rooms.
    heldout_images: int = 400
    # Seed of the rooms; -1 derives one from the initial weights (:func:`fresh_render_seed`), so
    # each GPU session that continues a new model trains on rooms no earlier stage rendered.
    seed: int = 0
    # Renderer processes; they run on the cores the benchmark does not use.
    workers: int = 14
    # Rendered image size; 0 keeps the renderer's default (360x480, focal scaled with width).
    height: int = 0
    width: int = 0


@dataclass
class BenchJob:
    """The CUDA benchmark, per stage like ``bench/bench_model.py``."""

    # CPU cores reserved for the benchmark process while the render uses the others.
    cores: int = 2
    presets: tuple[str, ...] = ("paper", "small")
    # "none" (float32), "bf16" or "fp16" autocast.
    amps: tuple[str, ...] = ("none", "bf16")
    batches: tuple[int, ...] = (1, 8)
    iters: int = 20
    warmup: int = 5
    # Extra passes with per-stage synchronisation, for the stage breakdown (batch 1 only).
    stage_iters: int = 5
    # Detections kept per image (random weights detect noise; ScanNet frames have a handful).
    max_dets: int = 10
    # Training-step timing; "train" is the preset the job trains (its schedule is fitted
    # to the measured step time of the first amp listed).
    train_presets: tuple[str, ...] = ("train", "paper")
    train_amps: tuple[str, ...] = ("bf16", "none")
    train_iters: int = 10
    train_warmup: int = 3
    # The node path: Predictor.predict on a frame of this size (height, width), retrieval
    # included, per autocast dtype (the node's half_precision is fp16).
    predictor_checkpoint: str = "models/roca_demo.safetensors"
    predictor_frame: tuple[int, int] = (480, 640)
    predictor_amps: tuple[str, ...] = ("none", "fp16", "bf16")
    predictor_iters: int = 20


@dataclass
class TrainJob:
    """The training run: the preset's recipe, its schedule stretched or shrunk to the time."""

    preset: str = "config/small.yaml"
    amp: str = "bf16"
    # Images per step; 0 keeps the preset's.
    ims_per_batch: int = 0
    # Learning rate for that batch; 0 keeps the preset's.
    base_lr: float = 0.0
    # Batches the benchmark also times the training step at: the job trains with the one of
    # most images per second (``schedule_fit.pick_batch``), at base_lr x sqrt(batch /
    # ims_per_batch). A small model leaves a large GPU launch-bound at a few images per step.
    # Empty: ims_per_batch alone.
    batch_candidates: list[int] = field(default_factory=list)
    num_workers: int = 12
    # Planned seconds per step = benchmarked step x margin (real data, logging, loader).
    step_time_margin: float = 1.3
    min_iterations: int = 50
    # Cap on the fitted iterations; 0: none.
    max_iterations: int = 0
    # Checkpoints written during the run (a stop at the deadline also writes one).
    checkpoints: int = 4
    # Heads put back from the initial weights after training (``roca-graft-heads``): the heads
    # trained alone on CPU (roca-train-yaw, -centre, ...) lose accuracy when the whole network
    # trains on, so the job ships the trained network with them. Empty: none.
    graft_heads: list[str] = field(default_factory=list)


@dataclass
class EvalJob:
    """Evaluation on the held-out rooms, like ``roca-eval``."""

    # Held-out images evaluated; 0: all.
    max_images: int = 0
    # Intra-op threads of each evaluation (the demo model's runs beside training).
    threads: int = 2
    # Seconds kept free after training for evaluation and writing the outputs.
    reserve_seconds: float = 100.0
    # Also evaluated on the same rooms, to compare against (skipped when missing).
    compare_checkpoint: str = "models/roca_demo.safetensors"


@dataclass
class GpuJobConfig:
    """One profile of ``config/gpu_job.yaml``."""

    # "cuda" (refused without CUDA) or "cpu" (the dry run).
    device: str = "cuda"
    # Wall-clock limit of the whole job from its start (the shell script's start when set).
    budget_minutes: float = 9.0
    # Training time unless --minutes says otherwise; shortened when the budget needs it.
    train_minutes: float = 4.0
    # ModelConfig fields overridden in every benchmarked and trained preset (dry run: tiny input).
    model_overrides: dict[str, Any] = field(default_factory=dict)
    render: RenderJob = field(default_factory=RenderJob)
    bench: BenchJob = field(default_factory=BenchJob)
    train: TrainJob = field(default_factory=TrainJob)
    eval: EvalJob = field(default_factory=EvalJob)
    # Largest file written to the output folder (MB); the model is split above it.
    part_mb: float = 15.0

    def validate(self) -> "GpuJobConfig":
        if self.device not in ("cuda", "cpu"):
            raise ConfigError(f"device must be cuda or cpu, got {self.device!r}")
        if self.budget_minutes <= 0 or self.train_minutes < 0:
            raise ConfigError("budget_minutes must be > 0 and train_minutes >= 0")
        r = self.render
        if r.images < 2 or not 0 < r.heldout_images < r.images:
            raise ConfigError(f"render: need 0 < heldout_images < images, got {r.heldout_images} "
                              f"of {r.images}")
        if r.seed < -1:
            raise ConfigError(f"render.seed must be >= 0, or -1 (derived from the initial weights), got {r.seed}")
        if r.workers < 1 or self.bench.cores < 1:
            raise ConfigError("render.workers and bench.cores must be >= 1")
        bad = sorted(set(self.bench.amps + self.bench.train_amps + self.bench.predictor_amps)
                     - {"none", "bf16", "fp16"})
        if bad:
            raise ConfigError(f"bench: unknown amp {bad}; known: none, bf16, fp16")
        if self.train.amp not in ("none", "bf16"):
            raise ConfigError(f"train.amp must be none or bf16, got {self.train.amp!r}")
        if self.train.base_lr < 0 or self.train.ims_per_batch < 0:
            raise ConfigError(f"train: base_lr and ims_per_batch must be >= 0 (0: the preset's), got "
                              f"{self.train.base_lr}, {self.train.ims_per_batch}")
        if any(int(b) < 1 for b in self.train.batch_candidates):
            raise ConfigError(f"train.batch_candidates must be >= 1, got {self.train.batch_candidates}")
        from roca_core.cli.graft_heads import HEAD_FIELDS

        unknown = sorted(set(self.train.graft_heads) - set(HEAD_FIELDS))
        if unknown:
            raise ConfigError(f"train.graft_heads: not a graftable head: {unknown}; known: {', '.join(HEAD_FIELDS)}")
        if self.train.step_time_margin < 1.0 or self.train.min_iterations < 1:
            raise ConfigError("train.step_time_margin must be >= 1 and train.min_iterations >= 1")
        if self.part_mb <= 0 or self.part_mb > 16:
            raise ConfigError(f"part_mb must be in (0, 16] (files over 16 MB do not come back), "
                              f"got {self.part_mb}")
        return self


def load_job_config(profile: str, path: "str | Path" = JOB_CONFIG) -> GpuJobConfig:
    """The ``profile`` section (``gpu`` or ``dry_run``) of the job config file."""
    data = load_yaml(path)
    if profile not in data:
        raise ConfigError(f"{path}: no profile {profile!r}; it has {sorted(data)}")
    return from_dict(GpuJobConfig, data[profile], f"{path}:{profile}").validate()


FRESH_SEED_BASE = 1000  # derived seeds stay clear of the small ones the local data sets use


def fresh_render_seed(init_weights: "str | Path | None") -> int:
    """A render seed that changes whenever the initial weights do (``render.seed: -1``): from the
    checkpoint file's SHA-256, in [1000, 1001000); 1000 when training starts from random weights.
    Reproducible: the same checkpoint gives the same rooms, and the job's log and reproduction
    line name the seed."""
    if not init_weights:
        return FRESH_SEED_BASE
    import hashlib

    digest = hashlib.sha256()
    with open(resolve_repo_path(str(init_weights)), "rb") as fh:
        for chunk in iter(lambda: fh.read(2 ** 20), b""):
            digest.update(chunk)
    return FRESH_SEED_BASE + int(digest.hexdigest()[:12], 16) % 1_000_000


def resolve_repo_path(path: str) -> Path:
    """Relative paths in the job config are relative to the repository root."""
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p
