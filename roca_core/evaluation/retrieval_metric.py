"""Does retrieval learn? Top-k same-CAD accuracy of held-out objects, by query source.

For a ground-truth object with a prediction (its own ground-truth box, or the detection
that overlaps it), the query embedding is made twice: from the NOCs the model predicted
(what inference uses) and from the ground-truth NOCs of the same pixels (with the model's
own shape code). Each query ranks the CAD database's models of the object's class by L2
distance; a hit is the object's CAD among the first k. Comparing the two sources separates
"the NOCs are wrong" from "the joint embedding has not learned"; the chance level (k over
the number of same-class CADs) says what a random embedding would score.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

TOP_K = (1, 5)
QUERY_SOURCES = ("pred_noc", "gt_noc")


class SameClassRanker:
    """Nearest-neighbour ranking of CAD ids within one class (plain numpy L2)."""

    def __init__(self, embeddings: np.ndarray, model_classes: Sequence[str], ids: Sequence[str]):
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(ids) or len(ids) != len(model_classes):
            raise ValueError(f"embeddings {emb.shape}, {len(model_classes)} classes and "
                             f"{len(ids)} ids do not describe the same CADs")
        self.embeddings = emb  # (M, D)
        self.ids = [str(i) for i in ids]
        self.id_set = set(self.ids)
        self._rows: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(0, np.int64))
        for cls in set(model_classes):
            self._rows[cls] = np.array([i for i, c in enumerate(model_classes) if c == cls], np.int64)

    @classmethod
    def from_database(cls, db: Any, embeddings: "np.ndarray | None" = None) -> "SameClassRanker":
        """A CadDatabase(-like: ids, model_classes, embeddings); ``embeddings`` overrides its own."""
        emb = db.embeddings if embeddings is None else embeddings
        if emb is None:
            raise ValueError("the CAD database has no embeddings to rank")
        return cls(emb, list(db.model_classes), list(db.ids))

    def num_candidates(self, class_name: str) -> int:
        return int(len(self._rows[class_name]))

    def rank(self, class_name: str, query: np.ndarray, k: int = max(TOP_K)) -> list[str]:
        """The ``k`` nearest CAD ids of ``class_name`` to ``query`` (D,), nearest first."""
        rows = self._rows[class_name]
        if len(rows) == 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)
        d2 = ((self.embeddings[rows] - q) ** 2).sum(axis=1)
        order = np.argsort(d2, kind="stable")[:k]
        return [self.ids[rows[j]] for j in order]


@dataclass
class RetrievedObject:
    """Rankings for one ground-truth object; None where a query source was unavailable."""

    class_name: str
    gt_cad_id: "str | None"
    num_candidates: int  # CADs of the class in the database
    pred_noc: "list[str] | None" = None
    gt_noc: "list[str] | None" = None
    in_database: bool = True  # False: the object's CAD cannot be retrieved at all


def _pct(hits: int, n: int) -> "float | None":
    return 100.0 * hits / n if n else None


class RetrievalAccumulator:
    """Collects :class:`RetrievedObject` s; ``result()`` gives top-k accuracy in percent.

    Objects whose CAD is not in the database (or has no id) cannot be hit and are only
    counted (``num_cad_not_in_database``), so a mismatched database shows instead of
    silently lowering the accuracy.
    """

    def __init__(self, ks: Sequence[int] = TOP_K) -> None:
        self.ks = tuple(int(k) for k in ks)
        self.num_gt = 0  # every ground-truth object offered (with or without a prediction)
        self.num_not_in_db = 0
        self._n: dict[str, dict[str, int]] = {s: defaultdict(int) for s in QUERY_SOURCES}
        self._hits: dict[str, dict[tuple[str, int], int]] = {s: defaultdict(int) for s in QUERY_SOURCES}
        self._chance: dict[str, dict[int, float]] = {s: defaultdict(float) for s in QUERY_SOURCES}

    def add_missing(self, count: int = 1) -> None:
        """Ground-truth objects without a matched prediction (no query at all)."""
        self.num_gt += int(count)

    def add(self, obj: RetrievedObject) -> None:
        self.num_gt += 1
        if obj.gt_cad_id is None or not obj.in_database:
            self.num_not_in_db += 1
            return
        for source in QUERY_SOURCES:
            ranked = getattr(obj, source)
            if ranked is None:
                continue
            self._n[source][obj.class_name] += 1
            for k in self.ks:
                self._hits[source][(obj.class_name, k)] += int(obj.gt_cad_id in ranked[:k])
                if obj.num_candidates:
                    self._chance[source][k] += min(k, obj.num_candidates) / obj.num_candidates

    def result(self) -> dict[str, Any]:
        """``{"num_gt", "num_cad_not_in_database", "pred_noc": {...}, "gt_noc": {...}}``; per
        source: ``num`` queried objects, ``top1``/``top5`` (instance mean), ``chance_top1``/
        ``chance_top5`` and ``per_class_top1``; accuracies None without queries."""
        out: dict[str, Any] = {"num_gt": self.num_gt, "num_cad_not_in_database": self.num_not_in_db}
        for source in QUERY_SOURCES:
            counts = self._n[source]
            n = sum(counts.values())
            block: dict[str, Any] = {"num": n}
            for k in self.ks:
                hits = sum(v for (c, kk), v in self._hits[source].items() if kk == k)
                block[f"top{k}"] = _pct(hits, n)
                block[f"chance_top{k}"] = 100.0 * self._chance[source][k] / n if n else None
            first = self.ks[0]
            block[f"per_class_top{first}"] = {
                c: _pct(self._hits[source][(c, first)], m) for c, m in sorted(counts.items())}
            out[source] = block
        return out


def format_retrieval_line(result: Mapping[str, Any]) -> "str | None":
    """One Markdown sentence for the report, None when nothing was queried."""
    parts = []
    names = {"pred_noc": "the network's query (predicted NOCs, or the crop with a shape head)",
             "gt_noc": "ground-truth NOCs"}
    for source in QUERY_SOURCES:
        block = result.get(source) or {}
        if not block.get("num"):
            continue
        tops = ", ".join(f"top-{k} {_fmt(block.get(f'top{k}'))} % (chance {_fmt(block.get(f'chance_top{k}'))} %)"
                         for k in TOP_K if f"top{k}" in block)
        parts.append(f"from {names[source]} ({block['num']} objects): {tops}")
    if not parts:
        return None
    missing = result.get("num_cad_not_in_database") or 0
    note = f"; {missing} objects' CADs are not in the database" if missing else ""
    boxes = {"ground_truth": ", queried on the ground-truth boxes",
             "detections": ", queried on the matched detections"}.get(result.get("boxes"), "")
    return (f"Retrieval of the ground-truth CAD among its class ({result.get('num_gt', 0)} GT "
            f"objects{note}{boxes}): " + "; ".join(parts))


def _fmt(x: Any) -> str:
    return "—" if x is None else f"{x:.1f}"
