"""Training logs of the numbers to decide on: per-head gradient norm columns, the held-out
metrics CSV, their plot panels, and the trainer writing them every eval_period."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from roca_core.classes import CLASS_NAMES
from roca_core.evaluation.report import summary_metrics
from roca_core.training.logging import (EVAL_CSV, CsvLossLogger, CsvMetricsLogger,
                                        plot_loss_curves, read_loss_csv)

from training_fixtures import model_synthetic_samples, tiny_model_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _png_height(path) -> int:
    return cv2.imread(str(path)).shape[0]


def test_grad_columns_join_an_old_csv_on_resume(tmp_path):
    path = tmp_path / "losses.csv"
    log = CsvLossLogger(path)
    for it in (1, 2, 3):  # a run from before per-head norms were logged
        log.log(it, 0.1, 0.01, {"loss_a": 1.0, "loss_b": 2.0}, grad_norm=5.0)
    log.close()
    log = CsvLossLogger(path, resume_from=2)
    log.log(3, 0.1, 0.01, {"loss_a": 0.5, "loss_b": 2.0}, 4.0,
            head_grad_norms={"backbone": 3.0, "retrieval_head": 40.0})
    log.log(4, 0.1, 0.01, {"loss_a": 0.4, "loss_b": 2.0}, 4.0,
            head_grad_norms={"backbone": 2.0, "retrieval_head": 30.0})
    log.close()
    data = read_loss_csv(path)
    assert data["iteration"].tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(data["grad_backbone"], [np.nan, np.nan, 3.0, 2.0])
    np.testing.assert_array_equal(data["grad_retrieval_head"], [np.nan, np.nan, 40.0, 30.0])
    assert data["loss_a"].tolist() == [1.0, 1.0, 0.5, 0.4] and data["total_loss"][-1] == 2.4
    # losses stay fixed by the header: a new one is still an error
    with pytest.raises(ValueError, match="loss_c"):
        CsvLossLogger(path, resume_from=4).log(5, 0.1, 0.0, {"loss_c": 1.0})


def test_metrics_csv_resume_widening_and_undefined_values(tmp_path):
    path = tmp_path / EVAL_CSV
    log = CsvMetricsLogger(path)
    log.log(100, {"alignment_class_mean": 1.5, "box_ap50": None})
    log.log(200, {"alignment_class_mean": 3.0, "box_ap50": 20.0})
    log.log(300, {"alignment_class_mean": 4.0, "box_ap50": float("nan")})
    log = CsvMetricsLogger(path, resume_from=250)
    log.log(300, {"alignment_class_mean": 5.0, "box_ap50": 25.0, "retrieval_top1_pred_noc": 30.0})
    data = read_loss_csv(path)
    assert data["iteration"].tolist() == [100, 200, 300]
    assert data["alignment_class_mean"].tolist() == [1.5, 3.0, 5.0]
    np.testing.assert_array_equal(data["box_ap50"], [np.nan, 20.0, 25.0])
    np.testing.assert_array_equal(data["retrieval_top1_pred_noc"], [np.nan, np.nan, 30.0])
    CsvMetricsLogger(path)  # a fresh run starts over
    assert not path.exists()


def test_plot_adds_a_held_out_panel_and_a_gradient_panel(tmp_path):
    loss_csv = tmp_path / "losses.csv"
    log = CsvLossLogger(loss_csv)
    for it in range(1, 41):
        log.log(it, 0.01, 0.5, {"loss_a": 1.0 / it}, 3.0,
                head_grad_norms={"backbone": 1.0 + it, "rpn": 2.0})
    log.close()
    png = tmp_path / "curves.png"
    # losses + grad + lr panels: figure height 4 + 2 * 3 inches at 100 dpi
    assert _png_height(plot_loss_curves(loss_csv, png)) == 1000
    metrics = CsvMetricsLogger(tmp_path / EVAL_CSV)
    for it in (20, 40):
        metrics.log(it, {"alignment_class_mean": it / 4, "box_ap50": it / 2,
                         "median_rotation_deg": 60.0 - it, "median_translation_m": 0.5})
    assert _png_height(plot_loss_curves(loss_csv, png)) == 1200  # + held-out panel
    assert _png_height(plot_loss_curves(loss_csv, png, eval_csv_path=None)) == 1000


def test_summary_metrics_reads_the_report():
    report = {"alignment": {"class_mean": 12.5, "instance_mean": 20.0},
              "retrieval_aware": {"class_mean": 5.0}, "detection": {"box_ap50": None},
              "retrieval": {"pred_noc": {"top1": 40.0, "top5": 90.0, "chance_top1": 16.7},
                            "gt_noc": {"top1": 55.0}},
              "pose_errors": {"num_gt": 8, "num_with_prediction": 2, "median_rotation_deg": 31.0,
                              "median_translation_m": 0.25, "median_scale_error": 0.1}}
    m = summary_metrics(report)
    assert m["alignment_class_mean"] == 12.5 and m["retrieval_aware_class_mean"] == 5.0
    assert m["box_ap50"] is None and m["depth_abs_rel"] is None
    assert (m["retrieval_top1_pred_noc"], m["retrieval_top5_pred_noc"], m["retrieval_top1_gt_noc"],
            m["retrieval_top1_chance"]) == (40.0, 90.0, 55.0, 16.7)
    assert m["gt_with_prediction"] == 25.0 and m["median_rotation_deg"] == 31.0


class _ValData(torch.utils.data.Dataset):
    """Self-consistent samples plus the CAD database of their CADs (retrieval is scored)."""

    def __init__(self, n: int):
        from roca_core.data.cad_database import CadDatabase
        self.samples = model_synthetic_samples(n)
        ids, classes, voxels = [], [], []
        for _, t in self.samples:
            for j, cad in enumerate(t["cad_ids"]):
                ids.append(cad)
                classes.append(CLASS_NAMES[int(t["labels"][j]) - 1])
                voxels.append(t["cad_voxels"][j].numpy() > 0.5)
        self.cad_database = CadDatabase(ids, classes, ["__SYM_NONE"] * len(ids), [""] * len(ids),
                                        np.stack(voxels))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_trainer_writes_held_out_metrics_and_head_gradients_every_eval_period(tmp_path):
    from roca_core.training.config import DataConfig, ExperimentConfig, TrainConfig
    from roca_core.training.trainer import LOSS_CSV, LOSS_PNG, Trainer

    def run(max_iter: int, resume: bool):
        cfg = ExperimentConfig(model=tiny_model_config(), data=DataConfig(root=str(tmp_path / "none")),
                               train=TrainConfig(max_iter=max_iter, ims_per_batch=2, warmup_iters=1,
                                                 lr_steps=(), base_lr=0.01, num_workers=0,
                                                 checkpoint_period=2, eval_period=2,
                                                 eval_max_images=2, device="cpu"))
        trainer = Trainer(cfg, tmp_path / "run", resume=resume, overwrite=not resume,
                          train_dataset=_ValData(4), val_dataset=_ValData(3),
                          collate_fn=lambda b: tuple(map(list, zip(*b))), progress=False,
                          export_inference_model=False, log=lambda _m: None)
        return trainer.train()

    result = run(4, resume=False)
    assert sorted(result.evaluations) == [2, 4]
    metrics = read_loss_csv(tmp_path / "run" / EVAL_CSV)
    assert metrics["iteration"].tolist() == [2, 4]
    for name in ("alignment_class_mean", "box_ap50", "retrieval_top1_pred_noc",
                 "retrieval_top1_gt_noc", "retrieval_top1_chance", "median_rotation_deg"):
        assert name in metrics, name
    # retrieval is queried on the ground-truth boxes, so every GT object of the 2 evaluated
    # images counts even while the detector finds nothing
    ret = result.evaluations[4]["retrieval"]
    assert ret["boxes"] == "ground_truth" and ret["pred_noc"]["num"] == ret["gt_noc"]["num"] == 4
    assert np.all(np.isfinite(metrics["retrieval_top1_chance"]))
    for name in ("retrieval_top1_pred_noc", "retrieval_top1_gt_noc"):
        assert np.all((metrics[name] >= 0) & (metrics[name] <= 100)), name
    for name in ("alignment_class_mean", "box_ap50"):
        assert np.all((metrics[name] >= 0) & (metrics[name] <= 100)), name
    losses = read_loss_csv(tmp_path / "run" / LOSS_CSV)
    for head in ("backbone", "rpn", "roi_heads", "depth_head", "alignment_head", "retrieval_head"):
        assert np.all(np.isfinite(losses[f"grad_{head}"]) & (losses[f"grad_{head}"] >= 0)), head
    assert _png_height(tmp_path / "run" / LOSS_PNG) == 1200  # losses, held-out, gradients, lr
    run(6, resume=True)
    assert read_loss_csv(tmp_path / "run" / EVAL_CSV)["iteration"].tolist() == [2, 4, 6]
    assert not math.isnan(read_loss_csv(tmp_path / "run" / EVAL_CSV)["alignment_class_mean"][-1])
