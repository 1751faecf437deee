"""The pin-error split (benchmarks/bench_pin_error.py): its symmetry estimate and its rows."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_pin_error import _after_similarity, family_rows, symmetry_centre


@pytest.mark.parametrize("gradient", [False, True])
@pytest.mark.parametrize("offset", [(0.0, 0.0), (1.5, -0.5), (-2.0, 1.0)])
def test_symmetry_centre_finds_where_a_symmetric_site_sits(offset, gradient):
    """A square socket with a round pin, both centred at ``offset`` from the patch centre."""
    yy, xx = np.mgrid[0:41, 0:41].astype(np.float64)
    x, y = xx - 20 - offset[0], yy - 20 - offset[1]
    socket = (np.maximum(np.abs(x), np.abs(y)) < 9).astype(float)
    pin = np.exp(-(x**2 + y**2) / 18.0)
    patch = 120 - 60 * socket + 100 * pin
    found = symmetry_centre(patch, gradient)
    assert np.allclose(found, offset, atol=0.35), found


def test_family_rows_split_a_looks_error_into_its_parts():
    rows = family_rows("steep-tilt", 1, 9500, symmetry=True)
    assert not any(rows["refused"])
    (sq_housing, pins), (sq_tops, _) = rows["housing"][0], rows["tops"][0]
    assert pins == 27 and sq_housing > 0 and sq_tops > 0
    assert sq_tops != sq_housing  # a tilted camera: the tops' plane is another truth
    assert rows["shift"][0] > 0 and len(rows["after"]) == 2 and len(rows["similar"]) == 2
    assert rows["scale"][0] < 0 < rows["scale_tops"][0]  # the sites lie between the planes
    assert len(rows["sym"]) == len(rows["symg"]) == 2
    assert len(rows["pair"]) == 1


def test_after_similarity_removes_shift_rotation_and_scale_and_reports_the_scale():
    from qeu_space.geometry import ConnectorGeometry
    from qeu_space.vocabulary import ALL_POSITIONS

    image = np.zeros((204, 448, 3), np.uint8)
    geo = ConnectorGeometry(448, 204)
    centres = np.array([geo.pin_center(p) for p in ALL_POSITIONS], np.float64)
    c, a = centres.mean(0), np.radians(0.3)
    rot = 1.004 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    offsets = (centres - c) @ rot.T + c + (0.7, -0.4) - centres
    left, scale = _after_similarity(image, offsets)
    assert np.abs(offsets).max() > 0.5  # a real error before ...
    assert left.max() < 1e-3 and scale == pytest.approx(0.004, abs=1e-5)  # ... none after
    noisy = offsets.copy()
    noisy[5] += (0.0, 1.0)  # one pin off: it stays (a similarity cannot take it)
    left, _ = _after_similarity(image, noisy)
    assert left[5] > 0.5
