"""Symmetry tags measured on the CAD surface: the builders' declarations must match them."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from roca_core.classes import Symmetry
from roca_core.data.cad_library import build_library
from roca_core.data.cad_symmetry import measure_up_symmetry, point_mesh_distance, turn_deviation
from roca_core.data.primitives import box, concat, cylinder


def test_point_mesh_distance_is_exact_on_a_box():
    cube = trimesh.creation.box((1.0, 1.0, 1.0))
    pts = np.array([[0.0, 0.0, 2.0],      # above a face: plane distance
                    [1.0, 1.0, 1.0],      # beyond a corner
                    [1.0, 1.0, 0.0],      # beyond an edge
                    [0.5, 0.2, -0.1],     # on a face
                    [0.0, 0.0, 0.0]])     # the centre, inside
    d = point_mesh_distance(pts, cube)
    np.testing.assert_allclose(d, [1.5, np.sqrt(3) * 0.5, np.sqrt(2) * 0.5, 0.0, 0.5], atol=1e-9)


def test_simple_shapes_get_their_symmetry():
    assert measure_up_symmetry(box((0, 0.5, 0), (1.0, 1.0, 2.0))) == Symmetry.ROTATE_UP_2
    assert measure_up_symmetry(box((0, 0.5, 0), (1.0, 1.0, 1.0))) == Symmetry.ROTATE_UP_4
    assert measure_up_symmetry(cylinder((0, 0.5, 0), 0.4, 1.0, sections=48)) == Symmetry.ROTATE_UP_INF
    # the axis goes through the bounding box's centre, wherever the mesh sits
    shifted = box((3.0, 0.5, -2.0), (1.0, 1.0, 2.0))
    assert measure_up_symmetry(shifted) == Symmetry.ROTATE_UP_2


def test_a_feature_proud_of_one_side_breaks_the_symmetry_a_hidden_one_does_not():
    body = box((0, 0.5, 0), (1.0, 1.0, 2.0))
    handle = concat([body, box((0, 0.5, 1.015), (0.1, 0.1, 0.03))])  # 3 cm proud of the front
    assert turn_deviation(handle, 180.0) == pytest.approx(0.03, abs=1e-6)
    assert measure_up_symmetry(handle) == Symmetry.NONE
    flush = concat([body, box((0, 0.5, 0.995), (0.1, 0.1, 0.01))])  # 5 mm proud: below 1.5 cm
    assert measure_up_symmetry(flush) == Symmetry.ROTATE_UP_2
    assert measure_up_symmetry(flush, tol_m=0.002) == Symmetry.NONE
    with pytest.raises(ValueError, match="tol_m"):
        measure_up_symmetry(body, tol_m=0.0)


@pytest.mark.parametrize("seed", [0, 11])
def test_every_builder_declares_the_symmetry_its_geometry_has(seed):
    """A symmetric model tagged NONE counts right poses as 180 degrees wrong (bathtubs, an open
    bookcase and a TV were); one tagged symmetric forgives real errors."""
    wrong = []
    for m in build_library(seed=seed):
        metric = m.mesh.copy()
        metric.apply_scale(m.default_scale[0])  # back to metres: the tolerance is metric
        measured = measure_up_symmetry(metric, samples=600)
        if measured != m.symmetry:
            wrong.append(f"{m.id} ({m.variant}): declared {m.symmetry.name}, measured {measured.name}")
    assert not wrong, "\n".join(wrong)
