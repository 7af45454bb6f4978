"""Learning guard: the reduced network overfits four rendered images (3D heads on GT boxes).

It fails when a learning path breaks end to end, e.g. a NOC axis flipped between targets and
the pose solve (alignment drops to 0 %), or the NOC loss disconnected (rotations stay wrong).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from learning_guard import measure, train_reduced_model

ITERATIONS = 200


@pytest.fixture(scope="module")
def four_images(tmp_path_factory):
    """Four rooms, one image each (so chairs, tables and bins come in several CADs), rendered in a child process (EGL and torch's lazy
    imports do not mix in one process)."""
    root = tmp_path_factory.mktemp("guard") / "data"
    subprocess.run([sys.executable, "-m", "roca_core.cli.make_dataset", "--out", str(root),
                    "--images", "4", "--images-per-scene", "1", "--seed", "3", "--split-val", "0",
                    "--no-progress"], check=True, capture_output=True, timeout=300)
    return root


def test_reduced_model_overfits_four_images(four_images, tmp_path):
    model, dataset = train_reduced_model(four_images, tmp_path / "out", ITERATIONS)
    result = measure(model, dataset, four_images / "cad_db")
    n = len(result.rotation_deg)
    assert n >= 8 and (result.candidates >= 2).sum() >= 5, "the fixture should hold several objects"
    detail = (f"rotation {result.rotation_deg.round(1)}, translation {result.translation_m.round(3)}, "
              f"scale {result.scale_err.round(3)}, retrieved {result.retrieved}, "
              f"candidates {result.candidates}")
    assert result.aligned(cm=10, deg=10, scale=0.10).mean() >= 0.75, detail
    assert result.retrieval_accuracy() >= 0.75, detail
