"""Each registration step alone, held against the truth: sites, lattice, window, projective fit."""

from __future__ import annotations

import numpy as np
import pytest

from dataset_tools.render import ConnectorSpec, Nuisances, Pose, render_connector
from qeu_space.geometry import CompositeLayout
from qeu_space.views.homography import fit_homography, project
from qeu_space.views.lattice import fit_lattice
from qeu_space.views.registration import SCALE_RANGE, _gray
from qeu_space.views.sites import find_sites, refine_sites
from qeu_space.views.window import choose_window
from qeu_space.vocabulary import ALL_POSITIONS, Finding

GEO = CompositeLayout(448).connector
SITES = np.array([GEO.pin_center(p) for p in ALL_POSITIONS])
PITCH = min(GEO.pitch)


def _render(seed: int = 3):
    spec = ConnectorSpec("ribbed", "round", (Finding("C4", "missing pin"),))
    rendered = render_connector(spec, GEO, Nuisances.off(), np.random.default_rng(seed),
                                pose=Pose(7.0, -5.0, 3.0, 0.95))  # fmt: skip
    return _gray(rendered.image), project(rendered.pose, SITES)


@pytest.mark.parametrize("polarity", ["as drawn", "inverted"])
def test_sites_are_found_at_every_pin_whatever_the_polarity(polarity):
    gray, truth = _render()
    if polarity == "inverted":  # light sockets in dark plastic: the same sites
        gray = 255.0 - gray
    sites = find_sites(gray, PITCH)
    near = np.linalg.norm(sites.points[None] - truth[:, None], axis=2).min(1)
    assert (near < 0.15 * PITCH).all()
    nearest = sites.points[np.linalg.norm(sites.points[None] - truth[:, None], axis=2).argmin(1)]
    refined, ok = refine_sites(gray, nearest, PITCH)
    assert ok.all()
    assert np.sqrt(np.mean(np.sum((refined - truth) ** 2, axis=1))) < 0.3


def test_the_lattice_numbers_every_site_consistently():
    gray, truth = _render()
    sites = find_sites(gray, PITCH)
    lattice = fit_lattice(sites.points, sites.strength, GEO.pitch, SCALE_RANGE)
    assert lattice is not None and len(lattice.nodes) == 27
    # each node's site is the true pin at (column, row) = node - the node of U1
    near = np.linalg.norm(lattice.points[:, None] - truth[None], axis=2).argmin(1)
    cols, rows = near % 9, near // 9
    offset = lattice.nodes - np.stack([cols, rows], 1)
    assert (offset == offset[0]).all()


def test_the_window_of_a_whole_connector_is_the_one_its_sites_fix():
    gray, truth = _render()
    sites = find_sites(gray, PITCH)
    lattice = fit_lattice(sites.points, sites.strength, GEO.pitch, SCALE_RANGE)
    window = choose_window(lattice, sites, GEO, (GEO.width, GEO.height))
    assert window.found == (3, 9) and window.candidates == 1
    u1 = lattice.to_image(np.array([[window.column, window.row]], float))[0]
    assert np.linalg.norm(u1 - truth[0]) < 0.15 * PITCH


def test_the_projective_fit_recovers_a_tilted_homography_despite_bent_pins():
    rng = np.random.default_rng(0)
    truth = np.array([[0.98, 0.06, 9.0], [-0.05, 1.03, -4.0], [1.2e-4, -2.5e-4, 1.0]])
    found = project(truth, SITES) + rng.normal(0, 0.1, SITES.shape)
    found[[3, 11, 20]] += (8.0, -6.0)  # three bent pins' sites, pulled toward their tips
    fit = fit_homography(SITES, found, PITCH)
    assert fit is not None
    assert not fit.inliers[[3, 11, 20]].any() and fit.inliers.sum() == 24
    err = np.linalg.norm(project(fit.matrix, SITES) - project(truth, SITES), axis=1)
    assert err.max() < 0.2
