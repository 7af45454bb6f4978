"""Retrieval accuracy on hand-made cases: ranking within a class, top-k and chance levels,
GT-to-detection matching, and the pixels the ground-truth NOC query is built from."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from roca_core.evaluation.model_tap import gt_noc_embeddings, match_gt_to_detections
from roca_core.evaluation.retrieval_metric import (RetrievalAccumulator, RetrievedObject,
                                                   SameClassRanker, format_retrieval_line)


def _ranker() -> SameClassRanker:
    # chairs at x = 0, 1, 2, 3, 4, 5 on a line; one table at the origin
    emb = np.array([[float(x), 0.0] for x in range(6)] + [[0.0, 0.0]], np.float32)
    return SameClassRanker(emb, ["chair"] * 6 + ["table"], [f"c{x}" for x in range(6)] + ["t0"])


def test_ranking_stays_within_the_class_nearest_first():
    r = _ranker()
    assert r.rank("chair", np.array([2.2, 0.0])) == ["c2", "c3", "c1", "c4", "c0"]
    assert r.rank("table", np.array([5.0, 0.0])) == ["t0"]  # the chair at 5 is not a candidate
    assert r.rank("sofa", np.array([0.0, 0.0])) == []
    assert (r.num_candidates("chair"), r.num_candidates("table"), r.num_candidates("sofa")) == (6, 1, 0)
    with pytest.raises(ValueError, match="same CADs"):
        SameClassRanker(np.zeros((2, 3)), ["chair"], ["a", "b"])


def test_top1_top5_chance_and_objects_outside_the_database():
    r = _ranker()
    acc = RetrievalAccumulator()

    def obj(cls, cad, query_pred, query_gt=None):
        return RetrievedObject(cls, cad, r.num_candidates(cls), r.rank(cls, np.array(query_pred)),
                               None if query_gt is None else r.rank(cls, np.array(query_gt)),
                               in_database=cad in r.id_set)

    acc.add(obj("chair", "c2", [2.1, 0], [2.0, 0]))   # pred: top-1; gt: top-1
    acc.add(obj("chair", "c5", [3.1, 0], [5.0, 0]))   # pred: rank 4 (top-5); gt: top-1
    acc.add(obj("chair", "c0", [5.0, 0]))             # pred: rank 6 (miss); no gt query
    acc.add(obj("table", "t0", [9.0, 9.0]))           # one candidate: always a hit
    acc.add(obj("chair", "c_unknown", [0, 0]))        # not in the database
    acc.add_missing(2)                                          # two objects never detected
    res = acc.result()
    assert res["num_gt"] == 7 and res["num_cad_not_in_database"] == 1
    p, g = res["pred_noc"], res["gt_noc"]
    assert p["num"] == 4 and p["top1"] == pytest.approx(50.0) and p["top5"] == pytest.approx(75.0)
    assert p["chance_top1"] == pytest.approx(100 * (3 / 6 + 1) / 4)
    assert p["chance_top5"] == pytest.approx(100 * (3 * 5 / 6 + 1) / 4)
    assert p["per_class_top1"] == {"chair": pytest.approx(100 / 3), "table": 100.0}
    assert g["num"] == 2 and g["top1"] == 100.0 and g["chance_top1"] == pytest.approx(100 / 6)
    line = format_retrieval_line(res)
    assert "7 GT objects; 1 objects' CADs are not in the database" in line
    assert "from the network's query (predicted NOCs, or the crop with a shape head) (4 objects): top-1 50.0 % (chance 37.5 %)" in line
    empty = RetrievalAccumulator().result()
    assert empty["pred_noc"]["top1"] is None and format_retrieval_line(empty) is None


def test_gt_to_detection_matching_by_hand():
    gt_boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], float)
    gt_cls = np.array([1, 1, 2])
    det_boxes = np.array([[1, 0, 10, 10],      # chair on GT 0 (IoU 0.9)
                          [0, 0, 10, 10],      # chair on GT 0 exactly: takes it first
                          [20, 0, 30, 10],     # chair on GT 1 but score too low
                          [40, 0, 50, 10],     # wrong class on GT 2
                          [21, 0, 30, 10]], float)  # chair on GT 1
    det_cls = np.array([1, 1, 1, 3, 1])
    scores = np.array([0.9, 0.8, 0.4, 0.9, 0.7])
    assert match_gt_to_detections(gt_boxes, gt_cls, det_boxes, det_cls, scores, 0.5) == [1, 4, None]
    assert match_gt_to_detections(gt_boxes, gt_cls, det_boxes[:0], det_cls[:0], scores[:0], 0.5) == [None] * 3


class _RecordingRetrievalHead:
    def embed_noc(self, noc, weights, shape_code):
        self.inputs = (noc, weights, shape_code)
        return torch.zeros(noc.shape[0], 2), None


def test_gt_noc_query_reads_the_objects_own_noc_pixels():
    """Two objects share a box region; each query must see only its own mask's NOCs, and
    only where the depth is valid."""
    s, h, w = 8, 16, 16
    noc = torch.zeros(3, h, w)
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, 4:12, 4:8] = 1   # left half of the box
    masks[1, 4:12, 8:12] = 1  # right half
    noc[:, 4:12, 4:8] = torch.tensor([0.1, 0.2, 0.3])[:, None, None]
    noc[:, 4:12, 8:12] = torch.tensor([-0.4, 0.0, 0.4])[:, None, None]
    depth = torch.full((h, w), 2.0)
    depth[4:6, 4:12] = 0.0  # the top two rows of the box have no depth
    head = _RecordingRetrievalHead()
    model = SimpleNamespace(cfg=SimpleNamespace(roi_size=s), retrieval_head=head)
    box = torch.tensor([[4.0, 4.0, 12.0, 12.0]])
    codes = torch.randn(2, 5)
    gt_noc_embeddings(model, {"noc": noc, "masks": masks, "depth": depth},
                      box.expand(2, 4), torch.tensor([0, 1]), codes)
    points, weights, shape_code = head.inputs
    assert points.shape == (2, s * s, 3) and weights.shape == (2, s * s)
    assert torch.equal(shape_code, codes)
    # 8x8 samples over the box: each object covers 4 columns, minus 2 rows without depth
    assert weights.sum(dim=1).tolist() == [4 * 6, 4 * 6]
    for k, value in enumerate(([0.1, 0.2, 0.3], [-0.4, 0.0, 0.4])):
        chosen = points[k][weights[k] > 0]
        assert torch.allclose(chosen, torch.tensor(value).expand_as(chosen))
