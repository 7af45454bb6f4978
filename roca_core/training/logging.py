"""Training logs: one CSV row of losses per iteration and a PNG of the loss curves.

CSV rather than TensorBoard keeps the dependency list short and the log greppable; the plot
is regenerated from the CSV, so a resumed run's figure covers the whole history.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from roca_core.atomic_io import atomic_write_with

FIXED_COLUMNS = ("iteration", "lr", "time_s", "grad_norm", "total_loss")


class CsvLossLogger:
    """Appends ``iteration, lr, time_s, grad_norm, total_loss, <loss names...>`` rows.

    The loss columns are fixed by the first row written (or by the existing header when a
    run resumes); losses missing from a later row are left empty, unknown ones are an error.
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
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        header, body = rows[0], rows[1:]
        kept = [r for r in body if r and r[0].isdigit() and int(r[0]) <= iteration]
        with open(self.path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(kept)
        self.columns = header

    def log(self, iteration: int, lr: float, time_s: float, losses: Mapping[str, float],
            grad_norm: float = math.nan) -> None:
        names = sorted(losses)
        if self.columns is None:
            self.columns = list(FIXED_COLUMNS) + names
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)
        unknown = set(names) - set(self.columns)
        if unknown:
            raise ValueError(f"loss(es) {sorted(unknown)} not in the CSV header {self.columns}")
        total = float(sum(float(v) for v in losses.values()))
        values = {"iteration": iteration, "lr": f"{lr:.6g}", "time_s": f"{time_s:.4f}",
                  "grad_norm": f"{grad_norm:.6g}", "total_loss": f"{total:.6g}"}
        values.update({k: f"{float(v):.6g}" for k, v in losses.items()})
        if self._fh is None:
            self._fh = open(self.path, "a", newline="")
        csv.writer(self._fh).writerow([values.get(c, "") for c in self.columns])
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


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


def plot_loss_curves(csv_path: "str | Path", png_path: "str | Path",
                     smooth_window: int | None = None, title: str = "ROCA training losses",
                     skip: Sequence[str] = ("lr", "time_s", "grad_norm")) -> Path | None:
    """Plot every loss column (smoothed, log scale) plus the lr; None if there is no data yet."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    data = read_loss_csv(csv_path)
    if not data or data["iteration"].size == 0:
        return None
    it = data["iteration"]
    window = smooth_window or max(1, min(50, it.size // 20))
    names = [n for n in data if n not in ("iteration", *skip)]
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(10, 8), sharex=True,
                                    gridspec_kw={"height_ratios": [4, 1]})
    colours = plt.get_cmap("tab20").colors  # 20 distinct colours: ROCA has ~15 losses
    for k, name in enumerate(names):
        curve = _smooth(data[name], window)
        if not np.any(np.isfinite(curve) & (curve > 0)):
            continue
        total = name == "total_loss"
        ax.plot(it, curve, label=name, color="black" if total else colours[k % len(colours)],
                linewidth=2.0 if total else 1.0, linestyle="-" if k < len(colours) else "--")
    ax.set_yscale("log")
    ax.set_ylabel(f"loss (moving average over {window})")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if "lr" in data:
        ax_lr.plot(it, data["lr"], color="black")
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("iteration")
    ax_lr.grid(True, alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    atomic_write_with(png_path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return png_path
