"""Alignment (registration step 4a): every site located against the product's typical site, so
sites agree to a small fraction of a pixel whatever shadows or shafts the look adds."""

from __future__ import annotations

import cv2
import numpy as np

from qeu_space.views.align import align_sites
from qeu_space.views.lattice import Lattice

PITCH = 40.0


def _pins_with_shadows(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, Lattice]:
    """A 3 x 9 grid of bright round pins, each with a dark shadow tail to its upper right, drawn
    at sub-pixel places (8x supersampled) ``offsets`` away from a regular lattice."""
    nodes = np.array([(u, v) for v in range(3) for u in range(9)], float)
    truth = nodes * PITCH + 40.0 + offsets
    big = np.full((200 * 8, 440 * 8), 120, np.uint8)
    for x, y in truth * 8:
        tip = (int(round(x + 8 * 9)), int(round(y - 8 * 7)))
        cv2.line(big, (int(round(x)), int(round(y))), tip, 60, 8 * 7)  # the shadow
        cv2.circle(big, (int(round(x)), int(round(y))), 8 * 6, 230, -1)  # the pin face
    gray = cv2.resize(big, (440, 200), interpolation=cv2.INTER_AREA).astype(np.float32)
    h = np.array([[PITCH, 0, 40.0], [0, PITCH, 40.0], [0, 0, 1.0]])
    lattice = Lattice(h, nodes.astype(int), truth.copy(), np.full(len(nodes), 10.0))
    return gray, truth, lattice


def test_aligned_sites_agree_to_a_tenth_of_a_pixel_rms():
    rng = np.random.default_rng(0)
    offsets = rng.uniform(-1.5, 1.5, (27, 2))
    gray, truth, lattice = _pins_with_shadows(offsets)
    anchors = truth + (0.7, -0.4)  # the absolute place comes from the centroids' median
    points, ok = align_sites(gray, lattice, lattice.nodes.astype(float), anchors, np.ones(27, bool))
    assert ok.all()
    err = points - truth
    spread = np.linalg.norm(err - err.mean(0), axis=1)  # every site in the same place on its pin
    assert np.sqrt(np.mean(spread**2)) < 0.1 and spread.max() < 0.2
    assert np.allclose(err.mean(0), (0.7, -0.4), atol=0.1)


def test_a_site_that_is_not_a_pin_is_not_matched():
    gray, truth, lattice = _pins_with_shadows(np.zeros((27, 2)))
    x, y = truth[13].astype(int)
    gray[y - 15 : y + 15, x - 15 : x + 15] = 120.0 + np.random.default_rng(1).normal(
        0, 20, (30, 30)
    )
    _, ok = align_sites(gray, lattice, lattice.nodes.astype(float), truth, np.ones(27, bool))
    assert not ok[13] and ok.sum() == 26


def test_a_steeply_tilted_connector_under_a_low_lamp_registers_tightly():
    """A held-out steep-tilt shot whose shadows scattered the centroids past the fit's limit."""
    from benchmarks.bench_look_zoo import Case, make_sample_for
    from qeu_space.views.registration import register

    sample = make_sample_for(Case("steep-tilt", 20, ()), 0, 9301)
    reg = register(sample.reference)
    assert reg.residual < 0.2 and len(reg.inliers) >= 25
