"""The pin-error split (benchmarks/bench_pin_error.py): its symmetry estimate and its rows."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_pin_error import family_rows, symmetry_centre


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
    assert rows["shift"][0] > 0 and len(rows["after"]) == 2
    assert len(rows["sym"]) == len(rows["symg"]) == 2
    assert len(rows["pair"]) == 1
