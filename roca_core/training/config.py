"""Configuration of an offline training run: what data, how long, which optimiser settings.

A preset YAML (``config/small.yaml``, ``config/paper.yaml``) has three top-level sections:
``model:`` (:class:`roca_core.model.config.ModelConfig`, owned by the model), ``data:``
(:class:`DataConfig`) and ``train:`` (:class:`TrainConfig`). Defaults of :class:`TrainConfig`
are the paper's schedule (SGD 0.9, lr 1e-3 with 1k warm-up from 1e-4, x0.1 at 60k, 80k
iterations, batch 4, weight decay 1e-4, gradient clip 10).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roca_core.config_io import ConfigError, from_dict, load_yaml, to_dict

if TYPE_CHECKING:  # the model package is imported lazily: training config must load alone
    from roca_core.model.config import ModelConfig


@dataclass
class DataConfig:
    """Where the training data lives (a folder written by ``roca-make-dataset``)."""

    # Dataset root; relative paths are resolved against the current directory.
    root: str = "data/synthetic"
    # More dataset roots whose training splits join root's (e.g. sets rendered with other
    # seeds); the validation split and the CAD database stay root's.
    extra_train_roots: list[str] = field(default_factory=list)
    train_split: str = "train"
    val_split: str = "val"
    # Colour jitter (brightness / contrast / saturation in [0.8, 1.25]) on training images.
    augment: bool = True
    # Let the loader resize images to the model's input size (cheaper than in the forward).
    resize_to_model_input: bool = True


@dataclass
class TrainConfig:
    """Optimiser, schedule and bookkeeping of the training loop."""

    seed: int = 0
    max_iter: int = 80000
    # Images per iteration *per process* (torchrun multiplies it by the world size).
    ims_per_batch: int = 4
    # "sgd" (the paper: SGD with momentum) or "adamw" (betas (momentum, 0.999), decoupled
    # weight decay). On the small preset a 500-iteration AdamW pilot (lr 1e-3) matched SGD's
    # losses, so the shipped presets keep SGD.
    optimizer: str = "sgd"
    base_lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Learning-rate multipliers of top-level modules, e.g. {retrieval_head: 5.0}: the
    # retrieval encoders' gradients are ~1e-1 against ~1e1 elsewhere, and at the shared
    # rate their embedding hardly moved in a short schedule.
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    # Linear warm-up from warmup_factor * base_lr to base_lr over warmup_iters iterations.
    warmup_iters: int = 1000
    warmup_factor: float = 0.1
    # The learning rate is multiplied by gamma at each of these iterations.
    lr_steps: tuple[int, ...] = (60000,)
    gamma: float = 0.1
    # Max gradient L2 norm; <= 0 disables clipping.
    clip_grad_norm: float = 10.0
    # Clip each top-level module (backbone, rpn, roi_heads, depth_head, alignment_head,
    # retrieval_head) to clip_grad_norm on its own instead of all parameters together: at
    # initialisation the retrieval encoders' gradient is ~10x the rest, and one global clip
    # then shrinks every other head's step to a few percent.
    clip_per_head: bool = False
    # An inference checkpoint (.safetensors) whose weights start this run, e.g. the second
    # stage of a curriculum. Tensors with a matching name and shape are copied, the others
    # keep their initialisation (the log lists them). Ignored when --resume finds a checkpoint.
    init_weights: str = ""
    # Per-class loss weights 1/log(frequency) from the training split (paper); retrieval
    # losses are never weighted (the model decides which losses use them).
    class_weighting: bool = True
    num_workers: int = 2
    # torch intra-op threads of the training process (0 = torch's default, all cores).
    num_threads: int = 0
    # "auto" (GPU when there is one), "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    # Mixed precision of the forward pass and losses: "none" (float32) or "bf16" (bfloat16
    # autocast; needs no loss scaling). Weights, gradients and optimiser state stay float32.
    amp: str = "none"
    # Iterations between checkpoints / validation runs; 0 disables (a final checkpoint is
    # always written).
    checkpoint_period: int = 5000
    eval_period: int = 5000
    # Validation images used by the periodic evaluation (0 = the whole split).
    eval_max_images: int = 0
    # Detection score threshold of the validation metric (the paper's 0.5).
    eval_score_threshold: float = 0.5
    # How many periodic training-state checkpoints to keep on disk.
    keep_checkpoints: int = 2
    # Bitwise-reproducible kernels (torch.use_deterministic_algorithms); slower.
    deterministic: bool = False
    # DDP: let parameters go unused in an iteration (per-class heads of absent classes).
    find_unused_parameters: bool = True
    # Where logs, checkpoints and the final model go.
    out_dir: str = "out/train"

    def validate(self) -> None:
        """Reject settings the loop cannot run with, naming the bad field."""
        if any(not (v > 0) for v in self.lr_multipliers.values()):
            raise ConfigError(f"train.lr_multipliers must be > 0, got {self.lr_multipliers}")
        if self.max_iter < 1:
            raise ConfigError(f"train.max_iter must be >= 1, got {self.max_iter}")
        if self.ims_per_batch < 1:
            raise ConfigError(f"train.ims_per_batch must be >= 1, got {self.ims_per_batch}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"train.optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.base_lr <= 0:
            raise ConfigError(f"train.base_lr must be > 0, got {self.base_lr}")
        if not 0.0 < self.warmup_factor <= 1.0:
            raise ConfigError(f"train.warmup_factor must be in (0, 1], got {self.warmup_factor}")
        if self.warmup_iters < 0:
            raise ConfigError(f"train.warmup_iters must be >= 0, got {self.warmup_iters}")
        if list(self.lr_steps) != sorted(self.lr_steps):
            raise ConfigError(f"train.lr_steps must be increasing, got {list(self.lr_steps)}")
        if self.num_threads < 0:
            raise ConfigError(f"train.num_threads must be >= 0, got {self.num_threads}")
        if self.num_workers < 0:
            raise ConfigError(f"train.num_workers must be >= 0, got {self.num_workers}")
        if self.checkpoint_period < 0 or self.eval_period < 0:
            raise ConfigError("train.checkpoint_period and train.eval_period must be >= 0")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.amp not in ("none", "bf16"):
            raise ConfigError(f"train.amp must be none or bf16, got {self.amp!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class ExperimentConfig:
    """A whole preset: model architecture, data location and training schedule."""

    model: "ModelConfig"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def _model_config_class() -> type:
    from roca_core.model.config import ModelConfig
    return ModelConfig


def experiment_config_from_dict(data: "dict[str, Any] | None", where: str = "") -> ExperimentConfig:
    """Strict dict -> ExperimentConfig; unknown sections or keys raise ConfigError."""
    data = dict(data or {})
    unknown = sorted(set(data) - {"model", "data", "train"})
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown top-level section(s) {unknown}; "
                          "known: ['data', 'model', 'train']")
    prefix = f"{where}: " if where else ""
    model = from_dict(_model_config_class(), data.get("model"), f"{prefix}model")
    data_cfg = from_dict(DataConfig, data.get("data"), f"{prefix}data")
    train = from_dict(TrainConfig, data.get("train"), f"{prefix}train")
    train.validate()
    return ExperimentConfig(model=model, data=data_cfg, train=train)


def load_experiment_config(path: "str | Path") -> ExperimentConfig:
    """Read a preset YAML (``model:``, ``data:``, ``train:`` sections)."""
    return experiment_config_from_dict(load_yaml(path), where=str(path))
