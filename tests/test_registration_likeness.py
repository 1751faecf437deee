"""Likeness (registration step 2b): grain or clutter lined up with the pin grid past the connector
is not a fourth row or a tenth column, and a defective pin inside the block is never dropped."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from qeu_space.views.lattice import Lattice
from qeu_space.views.likeness import LIKE, node_likeness
from qeu_space.views.window import lattice_extent

PITCH = 40.0
ORIGIN = np.array([60.0, 60.0])


def _lattice(rows: range, cols: range, likeness=None) -> Lattice:
    nodes = np.array([(u, v) for v in rows for u in cols], int)
    h = np.array([[PITCH, 0, ORIGIN[0]], [0, PITCH, ORIGIN[1]], [0, 0, 1.0]])
    points = nodes * PITCH + ORIGIN
    like = None if likeness is None else np.array([likeness(u, v) for u, v in nodes], float)
    return Lattice(h, nodes, points.astype(float), np.full(len(nodes), 10.0), like)


def _plate_with_grain() -> np.ndarray:
    """Dark sockets with a bright pin face on grey plastic (rows 0-2), and wood-like stripes
    lined up with the grid one row above them (row -1)."""
    img = np.full((260, 460), 150, np.uint8)
    for v in range(3):
        for u in range(9):
            x, y = (np.array([u, v]) * PITCH + ORIGIN + 40).astype(int)
            cv2.circle(img, (x, y), 9, 40, -1, cv2.LINE_AA)
            cv2.circle(img, (x, y), 4, 230, -1, cv2.LINE_AA)
    y0 = int(ORIGIN[1] + 40 - PITCH)
    for x in range(0, 460, 8):  # grain: thin diagonal strokes
        cv2.line(img, (x, y0 - 12), (x + 10, y0 + 12), 90, 2, cv2.LINE_AA)
    return img.astype(np.float32)


def test_the_pins_look_alike_and_grain_does_not():
    lattice = _lattice(range(-1, 3), range(9))
    lattice = Lattice(lattice.homography @ np.array([[1, 0, 1], [0, 1, 1], [0, 0, 1.0]]),
                      lattice.nodes, lattice.points + PITCH, lattice.strength)  # fmt: skip
    like = node_likeness(_plate_with_grain(), lattice)
    rows = lattice.nodes[:, 1]
    assert (like[rows >= 0] > 0.9).all()
    assert (like[rows == -1] < LIKE).all()


@pytest.mark.parametrize(
    ("rows", "cols", "unlike", "extent"),
    [
        # a fourth row of grain past the end: left out
        (range(-1, 3), range(9), lambda u, v: v == -1, (range(0, 3), range(0, 9))),
        # a tenth column of clutter: left out
        (range(3), range(10), lambda u, v: u == 9, (range(0, 3), range(0, 9))),
        # a fourth row of real pins (another plate): kept, so the window step refuses it
        (range(-1, 3), range(9), lambda u, v: False, (range(-1, 3), range(0, 9))),
        # a row of defective pins inside a 3 x 9 block is never dropped
        (range(3), range(9), lambda u, v: v == 1, (range(0, 3), range(0, 9))),
        # nor an end row when the block is no longer than 3 x 9
        (range(3), range(9), lambda u, v: v == 0, (range(0, 3), range(0, 9))),
    ],
)
def test_extent_drops_only_unlike_end_lines_beyond_3_x_9(rows, cols, unlike, extent):
    lattice = _lattice(rows, cols, lambda u, v: 0.1 if unlike(u, v) else 0.95)
    assert lattice_extent(lattice) == extent


def test_without_likeness_every_line_counts():
    assert lattice_extent(_lattice(range(-1, 3), range(9))) == (range(-1, 3), range(0, 9))


def test_a_held_out_look_with_grain_along_its_side_registers():
    """A black-on-wood composite whose grain made a fourth row before likeness."""
    from benchmarks.bench_look_zoo import Case, make_sample_for
    from qeu_space.views.registration import register

    sample = make_sample_for(Case("black-on-wood", 3, ()), 0, 9301)
    reg = register(sample.test)
    assert reg.found == (3, 9)


def test_an_end_line_clearly_less_alike_than_every_kept_one_is_dropped():
    """Lit from one side, the far column of pins scores 0.5 against the median pin; the housing's
    shaded edge past it scores 0: the edge goes, the pins stay. Were the edge 0.3 (not clearly
    less alike than the pins), nothing would be cut."""
    lattice = _lattice(range(3), range(10), lambda u, v: 0.0 if u == 9 else 0.5 if u == 8 else 0.9)
    assert lattice_extent(lattice) == (range(0, 3), range(0, 9))
    close = _lattice(range(3), range(10), lambda u, v: 0.3 if u == 9 else 0.5 if u == 8 else 0.9)
    assert lattice_extent(close) == (range(0, 3), range(0, 10))


def test_a_block_whose_lines_all_differ_is_not_cut_down_to_3_x_9():
    """A checkerboard's nodes alternate: no line looks like the product's, nothing is trimmed."""
    lattice = _lattice(range(-2, 4), range(-1, 11), lambda u, v: 0.95 if v in (0, 1) else 0.2)
    assert lattice_extent(lattice) == (range(-2, 4), range(-1, 11))


def test_a_pin_the_sites_step_missed_beside_the_housing_end_joins_by_likeness():
    """A steep-tilt shot whose column-1 pins sit by the housing's end (their maxima merged with
    the edge's) and whose D1 is missing: without them the block was 3 x 8 and the window
    locked one column off (every pin 47 px away)."""
    from benchmarks.bench_look_zoo import Case, draw_findings, make_sample_for, pin_errors
    from dataset_tools.looks import LOOK_FAMILIES

    family = list(LOOK_FAMILIES).index("steep-tilt")
    sample = make_sample_for(Case("steep-tilt", 13, draw_findings(family, 13, 9401)), family, 9401)
    errors, _, refused = pin_errors(sample.test, sample.test_pose)
    assert not refused and errors.max() < 2.0


def test_a_flat_stretch_where_a_housing_end_would_be_reads_as_no_end():
    """Zero gradient along the outline (a flat, saturated image region) once raised
    ``math domain error`` from the log of the contrast instead of reading as "no end"."""
    from qeu_space.views.sites import find_sites
    from qeu_space.views.window import _end

    sites = find_sites(np.full((260, 460), 255.0, np.float32), PITCH)
    lattice = _lattice(range(3), range(9))
    assert _end(lattice, sites, (460, 260), 1.0, 0, 0, -1, (-0.4, 2.4)) == 0.0
