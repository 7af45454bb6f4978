"""The offline training loop of ROCA (``roca-train``).

One :class:`Trainer` owns a run: it builds the model and data from an
:class:`~roca_core.training.config.ExperimentConfig` (or takes injected ones), sets the
per-class loss weights, then iterates ``max_iter`` optimiser steps (SGD, or AdamW) over an
endless, resumable stream of batches, logging every step, evaluating and checkpointing periodically, and
finally exporting the model in the inference format (:func:`roca_core.checkpoint.save_checkpoint`).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import math
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from roca_core.config_io import to_dict
from roca_core.training import distributed as dist_utils
from roca_core.atomic_io import atomic_write_text, atomic_write_with
from roca_core.training.class_weights import (apply_class_weights, class_weights_from_counts,
                                              dataset_class_counts, format_class_weights)
from roca_core.training.config import ExperimentConfig, TrainConfig
from roca_core.training.grad_clip import clip_gradients, head_parameters
from roca_core.training.logging import EVAL_CSV, CsvLossLogger, CsvMetricsLogger, plot_loss_curves
from roca_core.training.schedule import build_lr_scheduler
from roca_core.training.seeded_samples import SeededSamples
from roca_core.training.train_state import (TrainStateError, capture_rng_state, find_last_checkpoint,
                                            list_checkpoints, load_train_state, restore_rng_state,
                                            save_train_state, unwrap_model)

LOSS_CSV = "losses.csv"
LOSS_PNG = "loss_curves.png"
CHECKPOINT_DIR = "checkpoints"
FINAL_MODEL = "model_final.safetensors"
LAST_MODEL = "model_last.safetensors"


@dataclass
class TrainResult:
    """Summary of a finished :meth:`Trainer.train` call."""

    start_iteration: int
    final_iteration: int
    out_dir: Path
    checkpoint: Path | None
    final_model: Path | None
    # Mean seconds per optimisation step (forward+backward+step) and per batch fetch,
    # excluding the first two (warm-up) iterations when there are more.
    mean_step_time_s: float
    mean_data_time_s: float
    last_losses: dict[str, float] = field(default_factory=dict)
    class_weights: list[float] | None = None
    evaluations: dict[int, dict] = field(default_factory=dict)


def move_to_device(obj: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts/lists) to ``device``; other values unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], (torch.Tensor, dict)):
        return type(obj)(move_to_device(v, device) for v in obj)
    return obj


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (e.g. validation) without disturbing the training RNG streams."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


_STOP_KEY = "__stop_requested__"


class StopRequest:
    """SIGINT/SIGTERM handler that asks the loop to stop at the next iteration boundary.

    Stopping between iterations (never inside ``optimizer.step()``) keeps the checkpoint
    written on the way out consistent. A second signal stops immediately, without saving.
    Handlers are only installed from the main thread and restored afterwards.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second signal {signum}: stopping without a checkpoint")
        self.signum = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopRequest"]:
        import signal
        import threading
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def build_optimizer(params: "list[torch.nn.Parameter] | list[dict]", tcfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or AdamW, from ``train.optimizer``. ``params`` may be
    parameter groups with their own ``lr`` (see :func:`param_groups`)."""
    if tcfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=tcfg.base_lr, betas=(tcfg.momentum, 0.999),
                                 weight_decay=tcfg.weight_decay)
    return torch.optim.SGD(params, lr=tcfg.base_lr, momentum=tcfg.momentum,
                           weight_decay=tcfg.weight_decay)


def param_groups(model: torch.nn.Module, tcfg: TrainConfig) -> list[dict]:
    """One optimiser group per top-level module, at ``base_lr`` times its ``lr_multipliers``
    entry (the warm-up/step schedule scales every group alike)."""
    groups = head_parameters(model)
    unknown = sorted(set(tcfg.lr_multipliers) - set(groups))
    if unknown:
        raise ValueError(f"train.lr_multipliers names {unknown}, not modules of the model "
                         f"({sorted(groups)})")
    return [{"params": ps, "lr": tcfg.base_lr * tcfg.lr_multipliers.get(name, 1.0), "name": name}
            for name, ps in groups.items()]


def _worker_init(worker_id: int) -> None:
    # Each worker is a fresh process: keep its intra-op threads from oversubscribing cores.
    torch.set_num_threads(1)
    # A stop signal sent to the whole process group (Ctrl-C, ``kill -- -PGID``, systemd or
    # Slurm stopping the job, ``pkill -f roca-train``) must be handled by the main process,
    # which stops at the next iteration boundary, saves a checkpoint and shuts the workers
    # down; a worker killed by it made the loader raise mid-iteration and the run ended
    # without one. So a worker lets the first SIGINT/SIGTERM pass and dies on a second.
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore_once)


def _ignore_once(signum: int, _frame: Any) -> None:
    import signal
    signal.signal(signum, signal.SIG_DFL)


class Trainer:
    """Trains a ROCA model end to end.

    ``model``/``train_dataset``/``val_dataset``/``collate_fn`` may be injected (tests, custom
    data); by default they come from ``cfg`` (``RocaModel(cfg.model)`` and
    ``RocaDataset(cfg.data.root, split, augment)``). ``resume=True`` continues from
    ``out_dir/checkpoints/last``; without it an out dir that already holds checkpoints is
    refused unless ``overwrite=True``.
    """

    def __init__(self, cfg: ExperimentConfig, out_dir: "str | Path | None" = None, *,
                 resume: bool = False, overwrite: bool = False,
                 model: torch.nn.Module | None = None, train_dataset: Dataset | None = None,
                 val_dataset: Dataset | None = None, collate_fn: Callable | None = None,
                 progress: bool = True, export_inference_model: bool = True,
                 log: Callable[[str], None] | None = None):
        cfg.train.validate()
        self.cfg = cfg
        self.tcfg = cfg.train
        self.out_dir = Path(out_dir if out_dir is not None else cfg.train.out_dir)
        self.resume = resume
        self.overwrite = overwrite
        self.progress = progress
        self.export_inference_model = export_inference_model
        self._log_fn = log
        self._model_in = model
        self._train_ds_in = train_dataset
        self._val_ds_in = val_dataset
        self._collate_in = collate_fn
        self._eval_unavailable_logged = False

    # ------------------------------------------------------------------ messages
    def log(self, message: str) -> None:
        if not self.info.is_main:
            return
        if self._log_fn is not None:
            self._log_fn(message)
        else:
            tqdm.write(f"[roca-train] {message}", file=sys.stderr)

    # ------------------------------------------------------------------ building
    def _build_model(self) -> torch.nn.Module:
        if self._model_in is not None:
            return self._model_in
        from roca_core.model import RocaModel
        return RocaModel(self.cfg.model)

    def _collate(self) -> Callable:
        if self._collate_in is not None:
            return self._collate_in
        from roca_core.data.loader import collate_fn
        return collate_fn

    def _build_dataset(self, split: str, augment: bool, extra_roots: "list[str] | None" = None) -> Dataset:
        """``split`` of ``data.root``, joined by the same split of each of ``extra_roots``."""
        from roca_core.data.loader import RocaDataset
        roots = [Path(self.cfg.data.root)] + [Path(r) for r in extra_roots or []]
        for root in roots:
            if not root.exists():
                raise FileNotFoundError(
                    f"dataset root {root} does not exist; generate one with roca-make-dataset or "
                    f"pass --data DIR")
        kwargs: dict[str, Any] = {}
        if self.cfg.data.resize_to_model_input:
            # Resizing in the loader (workers, cv2) is cheaper than in the model's forward.
            kwargs["image_size"] = (self.cfg.model.image_height, self.cfg.model.image_width)
        sets = [RocaDataset(str(root), split=split, augment=augment, **kwargs) for root in roots]
        if len(sets) == 1:
            return sets[0]
        from roca_core.data.concat_dataset import ConcatRocaDataset
        return ConcatRocaDataset(sets)

    def _setup_class_weights(self, model: torch.nn.Module, dataset: Dataset) -> list[float] | None:
        if not self.tcfg.class_weighting:
            return None
        from roca_core.classes import CLASS_NAMES
        counts = None
        if self.info.is_main:
            counts = dataset_class_counts(dataset, len(CLASS_NAMES))
        counts = np.asarray(dist_utils.broadcast_object(counts))
        weights = class_weights_from_counts(counts)
        if apply_class_weights(model, weights):
            self.log("per-class loss weights (1/log frequency, max 1):\n"
                     + format_class_weights(weights, counts, CLASS_NAMES))
        else:
            self.log("WARNING: the model exposes no class_weights hook; losses stay unweighted")
        self.class_counts = counts.tolist()
        return weights.tolist()

    def _loader(self, dataset: Dataset, start_iter: int) -> Iterator:
        sampler = dist_utils.InfiniteBatchSampler(len(dataset), self.tcfg.ims_per_batch, self.info,
                                                  seed=self.tcfg.seed, start_iter=start_iter,
                                                  with_positions=True)
        # Every sample is loaded under its own seed (augmentation independent of workers and
        # of resuming); the loader's own generator (not the global one) seeds the workers,
        # so creating it does not shift the training RNG stream either.
        dataset = SeededSamples(dataset, self.tcfg.seed)
        generator = torch.Generator().manual_seed(
            (self.tcfg.seed * 1_000_003 + start_iter * 7919 + self.info.rank) % (2 ** 63))
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=self._collate(),
                            num_workers=self.tcfg.num_workers, generator=generator,
                            pin_memory=self.device.type == "cuda",
                            worker_init_fn=_worker_init if self.tcfg.num_workers > 0 else None,
                            persistent_workers=False)
        return iter(loader)

    # ------------------------------------------------------------------ checkpoints
    def _config_dict(self) -> dict[str, Any]:
        try:
            return to_dict(self.cfg)
        except TypeError:
            return {"data": to_dict(self.cfg.data), "train": to_dict(self.cfg.train)}

    def save_checkpoint(self, iteration: int, final: bool = False) -> Path | None:
        """Training state (all ranks take part: RNG states are gathered) + inference model."""
        rng_states = dist_utils.gather_objects(capture_rng_state())
        path = None
        if self.info.is_main:
            extra = {"class_weights": self.class_weights, "class_counts": self.class_counts,
                     "world_size": self.info.world_size}
            path = save_train_state(self.ckpt_root, iteration, self.model, self.optimizer,
                                    self.scheduler, config=self._config_dict(), extra=extra,
                                    rng_states=rng_states, keep=self.tcfg.keep_checkpoints)
            self.csv.close()
            plot_loss_curves(self.out_dir / LOSS_CSV, self.out_dir / LOSS_PNG)
            if self.export_inference_model:
                self._export(self.out_dir / (FINAL_MODEL if final else LAST_MODEL), iteration)
            self.log(f"checkpoint at iteration {iteration}: {path}")
        dist_utils.barrier()
        return path

    def _export(self, path: Path, iteration: int) -> Path | None:
        """The inference checkpoint (roca_core.checkpoint format), written atomically."""
        try:
            from roca_core.checkpoint import save_checkpoint
        except ImportError as exc:
            self.log(f"inference export skipped (roca_core.checkpoint unavailable: {exc})")
            return None
        model = unwrap_model(self.model)
        extra = {"iteration": iteration, "seed": self.tcfg.seed,
                 "train_config": to_dict(self.tcfg), "data_root": str(self.cfg.data.root)}
        if self.cfg.data.extra_train_roots:
            extra["extra_train_roots"] = [str(r) for r in self.cfg.data.extra_train_roots]
        was_training = model.training
        model.eval()
        try:
            atomic_write_with(path, lambda tmp: save_checkpoint(tmp, model, self.cfg.model, extra))
        finally:
            model.train(was_training)
        return path

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, iteration: int) -> dict | None:
        """Validation metrics via ``roca_core.evaluation.evaluate_model`` (rank 0 only)."""
        result = None
        if self.info.is_main:
            result = self._evaluate_main(iteration)
        dist_utils.barrier()
        return result

    def _eval_cad_database(self) -> Any:
        """CADs the validation scenes were built from: the dataset's own, else the embedded library."""
        if getattr(self, "_eval_db", None) is not None:
            return self._eval_db
        db = None
        for name in ("cad_database", "get_cad_database"):
            attr = getattr(self.val_dataset, name, None)
            db = attr() if callable(attr) else attr
            if db is not None:
                break
        root_db = Path(self.cfg.data.root) / "cad_db"
        try:
            if db is None and root_db.is_dir():
                from roca_core.data.cad_database import CadDatabase
                db = CadDatabase.load(root_db)
            if db is None:
                from roca_core.data.cad_library import embedded_cad_database
                db = embedded_cad_database()
        except Exception as exc:  # no database: alignment is still scored
            self.log(f"no CAD database for validation retrieval ({exc})")
            db = None
        self._eval_db = db
        return db

    def _evaluate_main(self, iteration: int) -> dict | None:
        try:
            from roca_core.evaluation import evaluate_model
        except ImportError as exc:
            if not self._eval_unavailable_logged:
                self.log(f"periodic evaluation skipped: roca_core.evaluation unavailable ({exc})")
                self._eval_unavailable_logged = True
            return None
        if self.val_dataset is None:
            return None
        model = unwrap_model(self.model)
        kwargs: dict[str, Any] = {}
        params = inspect.signature(evaluate_model).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        from roca_core.evaluation.alignment_metric import AlignmentThresholds
        # Detections down to 0.05 as roca-eval (box AP needs them); the alignment metric
        # keeps those above train.eval_score_threshold.
        wanted = {"max_images": self.tcfg.eval_max_images or None, "device": self.device,
                  "progress": False, "score_threshold": min(0.05, self.tcfg.eval_score_threshold),
                  "thresholds": AlignmentThresholds(score=self.tcfg.eval_score_threshold),
                  "cad_database": self._eval_cad_database(), "retrieval_on_gt_boxes": True}
        kwargs = {k: v for k, v in wanted.items() if k in params or accepts_any}
        model.eval()
        try:
            with preserved_rng(), torch.no_grad():
                result = evaluate_model(model, self.val_dataset, **kwargs)
        except Exception as exc:  # evaluation must never kill a long training run
            self.log(f"evaluation at iteration {iteration} failed: {type(exc).__name__}: {exc}")
            return None
        finally:
            model.train()
        result = result if isinstance(result, dict) else {"result": result}
        eval_dir = self.out_dir / "eval"
        eval_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(result, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        atomic_write_text(eval_dir / f"iter_{iteration:07d}.json", text)
        self._log_eval_metrics(iteration, result)
        return result

    def _log_eval_metrics(self, iteration: int, result: dict) -> None:
        """One row of held-out metrics in eval_metrics.csv, the loss plot redrawn with them,
        and a log line."""
        from roca_core.evaluation.report import summary_metrics
        metrics = summary_metrics(result)
        if getattr(self, "eval_csv", None) is not None:
            self.eval_csv.log(iteration, metrics)
            plot_loss_curves(self.out_dir / LOSS_CSV, self.out_dir / LOSS_PNG)
        fmt = lambda v, scale=1.0, d=1: "—" if v is None else f"{v * scale:.{d}f}"  # noqa: E731
        self.log(f"validation at iteration {iteration}: alignment {fmt(metrics['alignment_class_mean'])} % "
                 f"(class mean), retrieval-aware {fmt(metrics['retrieval_aware_class_mean'])} %, "
                 f"box AP50 {fmt(metrics['box_ap50'])} %, retrieval top-1 "
                 f"{fmt(metrics['retrieval_top1_pred_noc'])} % (GT NOCs {fmt(metrics['retrieval_top1_gt_noc'])} %, "
                 f"chance {fmt(metrics['retrieval_top1_chance'])} %), median errors "
                 f"{fmt(metrics['median_rotation_deg'])} deg / {fmt(metrics['median_translation_m'], 100)} cm / "
                 f"{fmt(metrics['median_scale_error'], 100)} % scale")

    # ------------------------------------------------------------------ the loop
    def setup(self) -> None:
        """Process group, seeds, model, data, optimiser, schedule; resume if asked."""
        self.info = dist_utils.env_dist_info()
        if self.tcfg.num_threads > 0:
            torch.set_num_threads(self.tcfg.num_threads)
        self.device = dist_utils.resolve_device(self.tcfg.device, self.info)
        dist_utils.init_distributed(self.device, self.info)
        if self.tcfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.ckpt_root = self.out_dir / CHECKPOINT_DIR
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        existing = list_checkpoints(self.ckpt_root)
        if existing and not self.resume and not self.overwrite:
            raise FileExistsError(f"{self.out_dir} already holds training checkpoints; pass "
                                  "--resume to continue or --overwrite to start over")
        if existing and not self.resume and self.overwrite and self.info.is_main:
            import shutil
            shutil.rmtree(self.ckpt_root, ignore_errors=True)
        dist_utils.barrier()

        # Same seed on every rank for the weights (DDP also broadcasts rank 0's); per-rank
        # streams afterwards so augmentation differs between replicas.
        self.train_dataset = self._train_ds_in if self._train_ds_in is not None else \
            self._build_dataset(self.cfg.data.train_split, self.cfg.data.augment, self.cfg.data.extra_train_roots)
        self.val_dataset = self._val_ds_in
        if self.val_dataset is None and self.tcfg.eval_period > 0 and self._train_ds_in is None:
            try:
                self.val_dataset = self._build_dataset(self.cfg.data.val_split, False)
            except (FileNotFoundError, ValueError) as exc:
                self.log(f"no validation split ({exc}); periodic evaluation disabled")
        seed_everything(self.tcfg.seed)
        model = self._build_model()
        self.class_counts: list[int] | None = None
        self.class_weights = self._setup_class_weights(model, self.train_dataset)
        if self.tcfg.init_weights and not (self.resume and find_last_checkpoint(self.ckpt_root)):
            from roca_core.training.warm_start import load_matching_weights
            missing, unused = load_matching_weights(model, self.tcfg.init_weights)
            self.log(f"initial weights from {self.tcfg.init_weights}; left at initialisation: "
                     f"{len(missing)} tensor(s) {missing[:8]}{' ...' if len(missing) > 8 else ''}; "
                     f"unused: {len(unused)}")
        model.to(self.device)

        self.optimizer = build_optimizer(param_groups(model, self.tcfg), self.tcfg)
        self.scheduler = build_lr_scheduler(self.optimizer, self.tcfg.warmup_iters,
                                            self.tcfg.warmup_factor, self.tcfg.lr_steps,
                                            self.tcfg.gamma)
        self.start_iter = 0
        seed_everything(self.tcfg.seed + self.info.rank)
        if self.resume:
            last = find_last_checkpoint(self.ckpt_root)
            if last is None:
                self.log(f"--resume: no checkpoint in {self.ckpt_root}; starting from scratch")
            else:
                info = load_train_state(last, model, self.optimizer, self.scheduler,
                                        rank=self.info.rank)
                if info.world_size != self.info.world_size:
                    self.log(f"checkpoint was written by {info.world_size} process(es), resuming "
                             f"with {self.info.world_size}: data order and RNG streams change")
                self.start_iter = info.iteration
                self.log(f"resumed from {last} at iteration {self.start_iter}")
        self.model = dist_utils.wrap_ddp(model, self.device, self.info,
                                         self.tcfg.find_unused_parameters)
        self.csv = CsvLossLogger(self.out_dir / LOSS_CSV,
                                 resume_from=self.start_iter if self.resume else None) \
            if self.info.is_main else None
        self.eval_csv = CsvMetricsLogger(self.out_dir / EVAL_CSV,
                                         resume_from=self.start_iter if self.resume else None) \
            if self.info.is_main else None

    def train(self) -> TrainResult:
        """Run (or continue) training up to ``train.max_iter`` iterations."""
        self.setup()
        t = self.tcfg
        self.log(f"training on {self.device} x {self.info.world_size} process(es), "
                 f"{len(self.train_dataset)} training images, batch {t.ims_per_batch}/process, "
                 f"iterations {self.start_iter} -> {t.max_iter}, out dir {self.out_dir}")
        heads = head_parameters(self.model)
        self.head_grad_norms: dict[str, float] = {}
        step_times: list[float] = []
        data_times: list[float] = []
        running: dict[str, deque] = {}
        last_losses: dict[str, float] = {}
        evaluations: dict[int, dict] = {}
        checkpoint: Path | None = None
        iteration = self.start_iter
        bar = tqdm(total=t.max_iter, initial=self.start_iter, desc="train", dynamic_ncols=True,
                   disable=not (self.progress and self.info.is_main))
        self.model.train()
        stop = StopRequest()
        saved_at = -1
        batches: "Iterator | None" = None
        try:
            with stop.installed():
                if self.start_iter < t.max_iter:
                    batches = self._loader(self.train_dataset, self.start_iter)
                for it in range(self.start_iter, t.max_iter):
                    t0 = time.perf_counter()
                    try:
                        images, targets = next(batches)
                    except Exception:
                        if stop.requested:  # Ctrl-C also stopped the loader's workers
                            break
                        raise
                    images = move_to_device(list(images), self.device)
                    targets = move_to_device(list(targets), self.device)
                    t1 = time.perf_counter()
                    with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                        enabled=t.amp == "bf16"):
                        loss_dict = self.model(images, targets)
                    if not isinstance(loss_dict, dict) or not loss_dict:
                        raise TypeError("the model must return a non-empty dict of losses in train mode")
                    total = sum(loss_dict.values())
                    if not torch.isfinite(total):
                        raise FloatingPointError(
                            f"loss became {float(total)} at iteration {it}: "
                            f"{ {k: float(v) for k, v in loss_dict.items()} } (lower train.base_lr?)")
                    self.optimizer.zero_grad(set_to_none=True)
                    total.backward()
                    grad_norm, self.head_grad_norms = clip_gradients(heads, t.clip_grad_norm,
                                                                     t.clip_per_head)
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.optimizer.step()
                    self.scheduler.step()
                    t2 = time.perf_counter()
                    iteration = it + 1
                    data_times.append(t1 - t0)
                    step_times.append(t2 - t1)

                    values = {k: float(v.detach()) for k, v in loss_dict.items()}
                    # The stop flag rides along the loss all-reduce: every rank stops together.
                    values[_STOP_KEY] = 1.0 if stop.requested else 0.0
                    values = dist_utils.mean_over_ranks(values, self.device)
                    stop_now = values.pop(_STOP_KEY) > 0
                    last_losses = values
                    if self.info.is_main:
                        self.csv.log(iteration, lr, t2 - t0, values, grad_norm,
                                     head_grad_norms=self.head_grad_norms)
                        for k, v in values.items():
                            running.setdefault(k, deque(maxlen=20)).append(v)
                        shown = {"loss": f"{sum(np.mean(d) for d in running.values()):.3g}",
                                 "lr": f"{lr:.2g}"}
                        shown.update({k.replace("loss_", ""): f"{np.mean(d):.3g}"
                                      for k, d in sorted(running.items())})
                        bar.set_postfix(shown, refresh=False)
                        bar.update(1)

                    final = iteration == t.max_iter
                    if final or (t.checkpoint_period and iteration % t.checkpoint_period == 0):
                        checkpoint = self.save_checkpoint(iteration, final=final)
                        saved_at = iteration
                    if stop_now:
                        break
                    if t.eval_period and (iteration % t.eval_period == 0 or final):
                        result = self.evaluate(iteration)
                        if result is not None:
                            evaluations[iteration] = result
                if iteration < t.max_iter:  # only a stop request ends the loop early
                    if iteration > self.start_iter and saved_at != iteration:
                        self.log(f"stopping on signal {stop.signum}: checkpoint at iteration "
                                 f"{iteration}")
                        self.save_checkpoint(iteration)
                    raise KeyboardInterrupt(f"stopped by signal {stop.signum} at iteration {iteration}")
        finally:
            bar.close()
            if self.csv is not None:
                self.csv.close()
            shutdown = getattr(batches, "_shutdown_workers", None)
            if callable(shutdown):  # now, not whenever a traceback holding the loader is freed
                shutdown()

        final_model = self.out_dir / FINAL_MODEL
        def mean_skip(xs: list[float]) -> float:
            xs = xs[2:] if len(xs) > 4 else xs
            return float(np.mean(xs)) if xs else math.nan
        result = TrainResult(
            start_iteration=self.start_iter, final_iteration=iteration, out_dir=self.out_dir,
            checkpoint=checkpoint or find_last_checkpoint(self.ckpt_root),
            final_model=final_model if final_model.exists() else None,
            mean_step_time_s=mean_skip(step_times), mean_data_time_s=mean_skip(data_times),
            last_losses=last_losses, class_weights=self.class_weights, evaluations=evaluations)
        if step_times:
            self.log(f"done: iteration {iteration}, {result.mean_step_time_s * 1000:.0f} ms/step "
                     f"+ {result.mean_data_time_s * 1000:.0f} ms data wait")
        return result

    def close(self) -> None:
        dist_utils.shutdown_distributed()


__all__ = ["Trainer", "TrainResult", "TrainStateError", "move_to_device", "seed_everything",
           "preserved_rng", "LOSS_CSV", "LOSS_PNG", "CHECKPOINT_DIR", "FINAL_MODEL", "LAST_MODEL"]
