"""Training logs: one CSV row of losses per iteration, one CSV row of held-out metrics per
evaluation, and a PNG of both.

CSV rather than TensorBoard keeps the dependency list short and the log greppable; the plot
is regenerated from the CSVs, so a resumed run's figure covers the whole history.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from roca_core.atomic_io import atomic_write_with

FIXED_COLUMNS = ("iteration", "lr", "time_s", "grad_norm", "total_loss")
GRAD_PREFIX = "grad_"  # per-head gradient norm columns: grad_<top-level module>
EVAL_CSV = "eval_metrics.csv"  # held-out metrics, next to the loss CSV


def _truncate_csv_after(path: Path, iteration: int) -> "list[str] | None":
    """Drop rows logged after ``iteration`` (a resumed run redoes them); -> the header."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return None
    header, body = rows[0], rows[1:]
    kept = [r for r in body if r and r[0].isdigit() and int(r[0]) <= iteration]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(kept)
    return header


def _widen_csv(path: Path, header: list[str], new_columns: list[str]) -> list[str]:
    """Append columns to an existing CSV's header; earlier rows get empty cells there."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    wider = header + new_columns
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(wider)
        for r in rows[1:]:
            if len(r) == len(header):  # a torn last line stays dropped
                writer.writerow(r + [""] * len(new_columns))
    return wider


class CsvLossLogger:
    """Appends ``iteration, lr, time_s, grad_norm, total_loss, <loss names...>,
    grad_<head>...`` rows.

    The loss columns are fixed by the first row written (or by the existing header when a
    run resumes); losses missing from a later row are left empty, unknown ones are an error.
    Per-head gradient norms (``head_grad_norms``) may appear later than the first row, e.g.
    when a run that logged none resumes: the file's header then gains their columns and the
    earlier rows stay readable with empty cells.
    """

    def __init__(self, path: "str | Path", resume_from: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns: list[str] | None = None
        if self.path.is_file() and resume_from is not None:
            self._truncate_after(resume_from)
        elif self.path.exists():
            self.path.unlink()
        self._fh = None

    def _truncate_after(self, iteration: int) -> None:
        """Drop rows logged after the checkpoint a run resumes from (they will be redone)."""
        self.columns = _truncate_csv_after(self.path, iteration)

    def log(self, iteration: int, lr: float, time_s: float, losses: Mapping[str, float],
            grad_norm: float = math.nan,
            head_grad_norms: "Mapping[str, float] | None" = None) -> None:
        """One row; ``head_grad_norms``: gradient L2 norm per top-level module (before
        clipping), written as ``grad_<module>`` columns."""
        names = sorted(losses)
        grads = {f"{GRAD_PREFIX}{k}": float(v) for k, v in (head_grad_norms or {}).items()}
        if self.columns is None:
            self.columns = list(FIXED_COLUMNS) + names + sorted(grads)
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)
        unknown = set(names) - set(self.columns)
        if unknown:
            raise ValueError(f"loss(es) {sorted(unknown)} not in the CSV header {self.columns}")
        new_grads = sorted(set(grads) - set(self.columns))
        if new_grads:
            self.close()
            self.columns = _widen_csv(self.path, self.columns, new_grads)
        total = float(sum(float(v) for v in losses.values()))
        values = {"iteration": iteration, "lr": f"{lr:.6g}", "time_s": f"{time_s:.4f}",
                  "grad_norm": f"{grad_norm:.6g}", "total_loss": f"{total:.6g}"}
        values.update({k: f"{float(v):.6g}" for k, v in losses.items()})
        values.update({k: f"{v:.6g}" for k, v in grads.items()})
        if self._fh is None:
            self._fh = open(self.path, "a", newline="")
        csv.writer(self._fh).writerow([values.get(c, "") for c in self.columns])
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class CsvMetricsLogger:
    """Appends ``iteration, <metric names...>`` rows (held-out metrics of periodic evaluations).

    Columns are fixed by the first row (or the existing header when a run resumes; rows after
    the resumed checkpoint are dropped); a metric first seen later widens the header, missing
    or undefined (None) metrics are left empty.
    """

    def __init__(self, path: "str | Path", resume_from: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns: list[str] | None = None
        if self.path.is_file() and resume_from is not None:
            self.columns = _truncate_csv_after(self.path, resume_from)
        elif self.path.exists():
            self.path.unlink()

    def log(self, iteration: int, metrics: Mapping[str, "float | None"]) -> None:
        names = list(metrics)
        if self.columns is None:
            self.columns = ["iteration"] + names
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)
        new = [n for n in names if n not in self.columns]
        if new:
            self.columns = _widen_csv(self.path, self.columns, new)

        def cell(v: "float | None") -> str:
            return "" if v is None or not math.isfinite(float(v)) else f"{float(v):.6g}"
        values = {"iteration": str(int(iteration)), **{k: cell(v) for k, v in metrics.items()}}
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([values.get(c, "") for c in self.columns])


def read_loss_csv(path: "str | Path") -> dict[str, np.ndarray]:
    """Columns of a loss CSV as float arrays (empty cells become nan)."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return {}
    header = rows[0]
    data = {name: [] for name in header}
    for row in rows[1:]:
        if len(row) != len(header):
            continue  # a torn last line of a killed run
        for name, cell in zip(header, row):
            try:
                data[name].append(float(cell) if cell != "" else math.nan)
            except ValueError:
                data[name].append(math.nan)
    return {k: np.asarray(v, dtype=np.float64) for k, v in data.items()}


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average that ignores nans."""
    if window <= 1 or values.size == 0:
        return values
    finite = np.isfinite(values)
    vals = np.where(finite, values, 0.0)
    csum = np.cumsum(np.insert(vals, 0, 0.0))
    ccount = np.cumsum(np.insert(finite.astype(np.float64), 0, 0.0))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - window, 0)
    count = ccount[idx] - ccount[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[idx] - csum[lo]) / count, np.nan)


# Held-out metrics drawn in the evaluation panel: (CSV column, label, style); percentages on
# the left axis, median errors (converted to deg / cm / %) on the right one.
_EVAL_ACCURACIES = (
    ("alignment_class_mean", "alignment (class mean)", "-"),
    ("retrieval_aware_class_mean", "retrieval-aware (class mean)", "-"),
    ("box_ap50", "box AP50", "-"),
    ("gt_with_prediction", "GT with a same-class prediction", "-"),
    ("retrieval_top1_pred_noc", "retrieval top-1 (predicted NOCs)", "-"),
    ("retrieval_top1_gt_noc", "retrieval top-1 (GT NOCs)", "-"),
    ("retrieval_top1_chance", "retrieval top-1 by chance", ":"),
)
_EVAL_ERRORS = (
    ("median_rotation_deg", "median rotation error (deg)", 1.0),
    ("median_translation_m", "median translation error (cm)", 100.0),
    ("median_scale_error", "median scale error (%)", 100.0),
)


def _plot_eval_panel(ax, data: Mapping[str, np.ndarray]) -> None:
    import matplotlib.pyplot as plt

    it = data["iteration"]
    colours = iter(plt.get_cmap("tab10").colors)
    for name, label, style in _EVAL_ACCURACIES:
        if name in data and np.isfinite(data[name]).any():
            ax.plot(it, data[name], style, marker="o", markersize=3, label=label, color=next(colours))
    ax.set_ylabel("held-out accuracy (%)")
    ax.grid(True, alpha=0.3)
    errors = [(n, lab, f) for n, lab, f in _EVAL_ERRORS if n in data and np.isfinite(data[n]).any()]
    handles, labels = ax.get_legend_handles_labels()
    if errors:
        ax_err = ax.twinx()
        for name, label, factor in errors:
            ax_err.plot(it, data[name] * factor, "--", marker="s", markersize=3, label=label,
                        color=next(colours))
        ax_err.set_ylabel("median error (deg / cm / %)")
        h2, l2 = ax_err.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, fontsize=7, ncol=2)
    ax.set_title("held-out metrics (periodic evaluation)", fontsize=9)


def plot_loss_curves(csv_path: "str | Path", png_path: "str | Path",
                     smooth_window: int | None = None, title: str = "ROCA training losses",
                     skip: Sequence[str] = ("lr", "time_s", "grad_norm"),
                     eval_csv_path: "str | Path | None" = "auto") -> Path | None:
    """Plot every loss column (smoothed, log scale), then the held-out metrics of
    ``eval_csv_path`` (``"auto"``: :data:`EVAL_CSV` next to ``csv_path``, when present), the
    per-head gradient norms (``grad_<head>`` columns, when logged) and the lr; None if there
    is no data yet."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    data = read_loss_csv(csv_path)
    if not data or data["iteration"].size == 0:
        return None
    if eval_csv_path == "auto":
        eval_csv_path = Path(csv_path).parent / EVAL_CSV
    eval_data = read_loss_csv(eval_csv_path) if eval_csv_path and Path(eval_csv_path).is_file() else {}
    has_eval = bool(eval_data) and eval_data["iteration"].size > 0
    it = data["iteration"]
    window = smooth_window or max(1, min(50, it.size // 20))
    grads = [n for n in data if n.startswith(GRAD_PREFIX) and n != "grad_norm"
             and np.isfinite(data[n]).any()]
    names = [n for n in data if n not in ("iteration", *skip) and not n.startswith(GRAD_PREFIX)]
    panels = ["loss"] + (["eval"] if has_eval else []) + (["grad"] if grads else []) + ["lr"]
    heights = {"loss": 4, "eval": 3, "grad": 2, "lr": 1}
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 4 + 2 * len(panels)), sharex=True,
                             gridspec_kw={"height_ratios": [heights[p] for p in panels]})
    ax = dict(zip(panels, axes))
    colours = plt.get_cmap("tab20").colors  # 20 distinct colours: ROCA has ~15 losses
    for k, name in enumerate(names):
        curve = _smooth(data[name], window)
        if not np.any(np.isfinite(curve) & (curve > 0)):
            continue
        total = name == "total_loss"
        ax["loss"].plot(it, curve, label=name, color="black" if total else colours[k % len(colours)],
                        linewidth=2.0 if total else 1.0, linestyle="-" if k < len(colours) else "--")
    ax["loss"].set_yscale("log")
    ax["loss"].set_ylabel(f"loss (moving average over {window})")
    ax["loss"].set_title(title)
    ax["loss"].grid(True, which="both", alpha=0.3)
    ax["loss"].legend(fontsize=7, ncol=2)
    if has_eval:
        _plot_eval_panel(ax["eval"], eval_data)
    if grads:
        for k, name in enumerate(["grad_norm"] + grads):
            curve = _smooth(data.get(name, np.full(it.shape, np.nan)), window)
            if np.any(np.isfinite(curve) & (curve > 0)):
                total = name == "grad_norm"
                ax["grad"].plot(it, curve, label="total" if total else name[len(GRAD_PREFIX):],
                                color="black" if total else colours[(2 * k) % len(colours)],
                                linewidth=2.0 if total else 1.0)
        ax["grad"].set_yscale("log")
        ax["grad"].set_ylabel("gradient norm\n(before clipping)")
        ax["grad"].grid(True, which="both", alpha=0.3)
        ax["grad"].legend(fontsize=7, ncol=3)
    if "lr" in data:
        ax["lr"].plot(it, data["lr"], color="black")
    ax["lr"].set_ylabel("lr")
    ax["lr"].set_xlabel("iteration")
    ax["lr"].grid(True, alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    atomic_write_with(png_path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return png_path
