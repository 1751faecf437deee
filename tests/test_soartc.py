"""SOART3 and SOARTC: the seeds' formula, numba == numpy, flat maps, the bent pin, bad inputs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from PIL import Image
from scipy import stats
from scipy.spatial.distance import chebyshev

from dataset_tools.render import ConnectorSpec, Nuisances, Placement, Pose, render_connector
from qeu_space.geometry import CompositeLayout, ConnectorGeometry
from qeu_space.soartc import (
    _kernels,
    _reference,
    soart3,
    soart3_batch,
    soartc,
    soartc_many,
    to_gray,
    top_positions,
)
from qeu_space.soartc.core import LOG_BETA_FLOOR, MAX_SHIFT
from qeu_space.vocabulary import Finding, Position

# The benchmark nuisances: gain 0.8-1.2, sensor noise, shift up to 1 px.
SPEC_NUISANCES = Nuisances(
    gain=0.2, gradient=0.0, noise=3.0, blur=0.0, shift=1.0, rotation=0.0, jpeg=None,
    placement=Placement.off(),
)  # fmt: skip
GEO = ConnectorGeometry(423, 204)


def seed_soart3(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """The seeds' calc_soaRT3, as written there (numpy dot products, scipy Chebyshev)."""
    xx = np.dot(x, x) + 0.0001
    xy = np.dot(x, y) + 0.0001
    beta = xy / xx
    m_distance = np.linalg.norm(y - beta * x, ord=1)
    v_distance = chebyshev(y, beta * x)
    log_yita = math.log(m_distance + 1.0)
    return math.log(beta), log_yita, math.log(v_distance + 1.0) - log_yita


def render(
    findings=(), nuisances=SPEC_NUISANCES, seed=0, geo=GEO, housing="standard", pins="square"
):
    rng = np.random.default_rng(seed)
    out = render_connector(ConnectorSpec(housing, pins, tuple(findings)), geo, nuisances, rng)
    return out.image, out.findings


# --------------------------------------------------------------------------- SOART3


@pytest.mark.parametrize("seed,d", [(0, 1), (1, 2), (2, 64), (3, 257), (4, 1000)])
def test_soart3_equals_seed_formula(seed, d):
    rng = np.random.default_rng(seed)
    xs = rng.random((20, d)) + 0.01
    ys = xs * rng.uniform(0.3, 3.0, (20, 1)) + rng.uniform(0.0, 0.3, (20, d))  # beta > 0
    want = np.array([seed_soart3(x, y) for x, y in zip(xs, ys, strict=True)])
    got = np.array([soart3(x, y) for x, y in zip(xs, ys, strict=True)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    for backend in ("numba", "numpy"):
        np.testing.assert_allclose(soart3_batch(xs, ys, backend=backend), want, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "x,y",
    [
        ([1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]),  # anti-correlated: beta < 0
        ([1.0], [-1e-4]),  # x.y + 1e-4 == 0: beta == 0
        ([0.0, 0.0], [-5.0, 1.0]),  # x = 0, x.y + 1e-4 > 0: beta = 1
        ([2.0, -1.0], [-2.0, 1.0]),
    ],
)
def test_soart3_defined_for_nonpositive_beta(x, y):
    x, y = np.array(x), np.array(y)
    beta = (x @ y + 1e-4) / (x @ x + 1e-4)
    out = soart3(x, y)
    resid = np.abs(y - beta * x)
    assert out.log_beta == pytest.approx(math.log(beta) if beta > 1e-6 else LOG_BETA_FLOOR)
    assert out.log_eta == pytest.approx(math.log(resid.sum() + 1.0))
    assert out.log_gamma == pytest.approx(math.log(resid.max() + 1.0) - out.log_eta)
    assert all(math.isfinite(v) for v in out)


def test_log_beta_floor_value():
    assert LOG_BETA_FLOOR == pytest.approx(math.log(1e-6))
    assert soart3([1.0, 1.0], [-3.0, -3.0]).log_beta == LOG_BETA_FLOOR


@pytest.mark.parametrize(
    "x,y,match",
    [
        ([1.0, 2.0], [1.0], "same length"),
        ([], [], "non-empty"),
        ([[1.0]], [[1.0]], "1-D"),
        ([1.0, float("nan")], [1.0, 2.0], "NaN or inf"),
        ([1.0, 2.0], [1.0, float("inf")], "NaN or inf"),
    ],
)
def test_soart3_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        soart3(x, y)


@pytest.mark.parametrize(
    "x,y,match",
    [
        (np.ones(3), np.ones(3), r"\(n, d\)"),
        (np.ones((2, 3)), np.ones((3, 3)), "same shape"),
        (np.full((2, 2), np.nan), np.ones((2, 2)), "NaN or inf"),
    ],
)
def test_soart3_batch_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        soart3_batch(x, y)


def test_unit_space_constants_match_scipy():
    q = stats.chi2.ppf(0.975, 3)
    assert _kernels.CHI2_975_3 == pytest.approx(q, rel=1e-12)
    assert _kernels.TRIM_CONSISTENCY == pytest.approx(0.975 / stats.chi2.cdf(q, 5), rel=1e-12)
    assert _kernels.MAD_TO_SD == pytest.approx(1 / stats.norm.ppf(0.75), rel=1e-12)


# --------------------------------------------------------------------------- numba == numpy


def _rand_pair(seed=0, shape=(37, 53)):
    rng = np.random.default_rng(seed)
    ref = rng.random(shape)
    return ref, ref * 1.2 + rng.normal(0.0, 0.05, shape)


@pytest.mark.parametrize("w,s", [(8, 1), (5, 2), (8, 3), (3, 9), (2, 1)])
def test_window_kernels_match_numpy(w, s):
    ref, test = _rand_pair()
    for name, args in [
        ("pixel_metrics", (ref, test, w, s)),
        ("selfsim_descriptors", (ref, w, s)),
    ]:
        got = getattr(_kernels, name)(*args)
        want = getattr(_reference, name)(*args)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)
    x = _reference.selfsim_descriptors(ref, w, s)
    y = _reference.selfsim_descriptors(test, w, s)
    np.testing.assert_allclose(
        _kernels.descriptor_metrics(x, y), _reference.descriptor_metrics(x, y), atol=1e-12
    )
    grid = np.random.default_rng(1).random(((37 - w) // s + 1, (53 - w) // s + 1))
    np.testing.assert_allclose(
        _kernels.cover_mean(grid, 37, 53, w, s), _reference.cover_mean(grid, 37, 53, w, s),
        rtol=1e-12,
    )  # fmt: skip


def test_cover_mean_is_the_mean_of_covering_windows():
    w, s, h, wd = 3, 2, 9, 11
    grid = np.random.default_rng(2).random(((h - w) // s + 1, (wd - w) // s + 1))
    y, x = 4, 5  # covered by window rows 1..2 and window columns 2 (x=4..6) and 1 (x=2..4)
    rows = [i for i in range(grid.shape[0]) if i * s <= y < i * s + w]
    cols = [j for j in range(grid.shape[1]) if j * s <= x < j * s + w]
    want = grid[np.ix_(rows, cols)].mean()
    assert _kernels.cover_mean(grid, h, wd, w, s)[y, x] == pytest.approx(want)


@pytest.mark.parametrize(
    "dy,dx,theta", [(0.3, -0.7, 0.0), (-2.6, 3.2, 0.0), (0.0, 0.0, 0.0), (0.5, 0.5, 0.03)]
)
def test_warp_matches_scipy(dy, dx, theta):
    img = np.random.default_rng(3).random((41, 57))
    np.testing.assert_allclose(
        _kernels.warp_image(img, dy, dx, theta), _reference.warp_image(img, dy, dx, theta),
        atol=1e-12,
    )  # fmt: skip


def test_statistics_kernels_match_numpy():
    rng = np.random.default_rng(4)
    samples = rng.normal(size=(3, 9000)) * np.array([[1.0], [0.2], [3.0]])
    samples[:, ::50] += 40.0  # outliers the robust estimate must ignore
    (l1, c1), (l2, c2) = _kernels.robust_unit_space(samples), _reference.robust_unit_space(samples)
    np.testing.assert_allclose(l1, l2, atol=1e-12)
    np.testing.assert_allclose(c1, c2, rtol=1e-10)
    np.testing.assert_allclose(np.sqrt(np.diag(c1)), [1.0, 0.2, 3.0], rtol=0.1)
    metrics = rng.normal(size=(3, 20, 30))
    prec = np.linalg.inv(c1)
    np.testing.assert_allclose(
        _kernels.mahalanobis_grid(metrics, l1, prec),
        _reference.mahalanobis_grid(metrics, l1, prec),
        rtol=1e-12,
    )
    a = rng.random((120, 200))
    b = _reference.warp_image(a, 0.6, -1.1, 0.0)
    np.testing.assert_allclose(
        _kernels.block_shifts(a, b, 2, 3, 6), _reference.block_shifts(a, b, 2, 3, 6), atol=1e-9
    )


@pytest.mark.parametrize("descriptor", ["pixels", "selfsim"])
@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("n_goods", [0, 1, 3])
def test_soartc_numba_equals_numpy(descriptor, align, n_goods):
    geo = ConnectorGeometry(120, 60)
    ref, _ = render(geo=geo, seed=1)
    test, _ = render([Finding("C5", "missing pin")], geo=geo, seed=2)
    goods = [render(geo=geo, seed=10 + k)[0] for k in range(n_goods)]
    kw = dict(descriptor=descriptor, align=align, references=goods or None, window=6, stride=1)
    a = soartc(ref, test, backend="numba", **kw)
    b = soartc(ref, test, backend="numpy", **kw)
    np.testing.assert_allclose(a.shift, b.shift, atol=1e-9)
    np.testing.assert_allclose(a.metrics, b.metrics, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.anomaly, b.anomaly, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=1e-5, atol=1e-5)
    assert a.image_score == pytest.approx(b.image_score, rel=1e-5)
    assert a.unit_space.n_references == n_goods


# --------------------------------------------------------------------------- behaviour


def test_gain_change_gives_a_flat_map():
    """Test = reference x 1.3: beta absorbs the gain, nothing is anomalous anywhere."""
    ref = to_gray(render(nuisances=Nuisances.off())[0])
    bent = to_gray(render([Finding("C5", "bent pin", "left")], nuisances=Nuisances.off())[0])
    flat = soartc(ref, ref * 1.3)
    defect = soartc(ref, bent * 1.3)
    assert flat.image_score < 1.0  # within one robust standard deviation everywhere
    assert flat.image_score < 1e-3 * defect.image_score
    assert soartc(ref, ref).image_score == 0.0


@pytest.mark.parametrize(
    "finding,housing,pins",
    [
        (Finding("C5", "bent pin", "left"), "standard", "square"),
        (Finding("U1", "bent pin", "down"), "ribbed", "round"),
        (Finding("D9", "missing pin"), "stepped", "mixed"),
        (Finding("U7", "bent pin", "up"), "latched", "square"),
        (Finding("C2", "bent pin", "right"), "standard", "round"),
    ],
)
def test_one_bent_pin_puts_the_maximum_in_its_box(finding, housing, pins):
    ref, _ = render(seed=1, housing=housing, pins=pins)
    test, truth = render([finding], seed=2, housing=housing, pins=pins)
    passed, _ = render(seed=3, housing=housing, pins=pins)
    result = soartc(ref, test)
    x, y = result.argmax
    x1, y1, x2, y2 = truth[0].box
    assert x1 <= x + 0.5 <= x2 and y1 <= y + 0.5 <= y2
    assert top_positions(result, GEO, k=1)[0][0] == finding.position
    assert result.image_score > 3 * soartc(ref, passed).image_score


def test_selfsim_descriptor_finds_the_bent_pin_too():
    ref, _ = render(seed=1)
    test, truth = render([Finding("D4", "bent pin", "right")], seed=2)
    result = soartc(ref, test, descriptor="selfsim")
    assert result.descriptor == "selfsim"
    assert top_positions(result, GEO, k=1)[0][0] == Position("D", 4)


def test_references_give_the_unit_space():
    ref, _ = render(seed=1)
    test, truth = render([Finding("U3", "missing pin")], seed=2)
    goods = [render(seed=20 + k)[0] for k in range(3)]
    result = soartc(ref, test, references=goods)
    assert result.unit_space.n_references == 3
    assert top_positions(result, GEO, k=1)[0][0] == Position("U", 3)
    assert soartc(ref, test, references=goods[:1]).unit_space.n_references == 1


@pytest.mark.parametrize(
    "pose", [Pose(16, -8, 0, 1.0), Pose(0, 0, 5, 1.0), Pose(-10, 6, -4, 1.1), Pose(0, 0, 0, 0.9)]
)
def test_registered_soartc_finds_the_pin_of_a_moved_product(pose):
    """Shift, rotation and scale a rig gives: registration puts both products in one frame."""
    ref, _ = render(seed=1)
    rng = np.random.default_rng(2)
    spec = ConnectorSpec("standard", "square", (Finding("C7", "bent pin", "up"),))
    moved = render_connector(spec, GEO, SPEC_NUISANCES, rng, pose=pose)
    result = soartc(ref, moved.image, register=True)
    assert top_positions(result, GEO, k=1)[0][0] == Position("C", 7)
    x, y = result.argmax  # the heatmap is back in the moved test image's frame
    x1, y1, x2, y2 = moved.findings[0].box
    assert x1 - 3 <= x <= x2 + 3 and y1 - 3 <= y <= y2 + 3
    assert result.registration is not None and result.canonical_heatmap.shape == (204, 423)
    good = render_connector(
        ConnectorSpec(), GEO, SPEC_NUISANCES, np.random.default_rng(3), pose=pose
    )
    assert result.image_score > 3 * soartc(ref, good.image, register=True).image_score
    unregistered = soartc(ref, good.image)  # without it a moved good product lights up
    assert unregistered.image_score > soartc(ref, good.image, register=True).image_score


@pytest.mark.parametrize(
    "position, housing, pins, size, seed",
    [
        ("C4", "standard", "square", 448, 0),
        ("U9", "ribbed", "round", 448, 1),
        ("D1", "latched", "mixed", 224, 2),
        ("C6", "stepped", "round", 224, 3),
    ],
)
def test_registered_soartc_finds_a_short_pin(position, housing, pins, size, seed):
    """A pin pushed into the housing (nothing displaced, nothing missing) tops the heatmap of a
    product placed, lit and compressed as dataset rows are (every nuisance on)."""
    geo = CompositeLayout(size).connector
    ref = render_connector(
        ConnectorSpec(housing, pins), geo, Nuisances(), np.random.default_rng(100 + seed)
    ).image
    spec = ConnectorSpec(housing, pins, (Finding(position, "short pin"),))
    test = render_connector(spec, geo, Nuisances(), np.random.default_rng(seed)).image
    result = soartc(ref, test, register=True)
    assert top_positions(result, geo, k=1)[0][0] == Position.parse(position)


def test_registered_soartc_refuses_what_is_not_a_connector():
    from qeu_space.views.registration import NoConnectorError

    ref, _ = render(seed=1)
    with pytest.raises(NoConnectorError, match="no connector found"):
        soartc(ref, np.zeros_like(ref), register=True)


def test_alignment_recovers_shift_and_rotation():
    ref = to_gray(render(nuisances=Nuisances.off())[0])
    moved = _kernels.warp_image(ref, 0.8, -1.3, math.radians(1.5))
    result = soartc(ref, moved)
    assert result.shift == pytest.approx((0.8, -1.3), abs=0.2)
    assert result.rotation == pytest.approx(1.5, abs=0.2)
    unaligned = soartc(ref, moved, align=False)
    assert unaligned.shift == (0.0, 0.0) and unaligned.rotation == 0.0
    assert result.image_score < 0.5 * unaligned.image_score


@pytest.mark.parametrize("w,s", [(8, 1), (8, 4), (5, 3)])
def test_result_shapes_and_immutability(w, s):
    ref, test = _rand_pair(shape=(40, 70))
    result = soartc(ref, test, window=w, stride=s)
    gh, gw = (40 - w) // s + 1, (70 - w) // s + 1
    assert result.heatmap.shape == (40, 70) and result.heatmap.dtype == np.float32
    assert result.metrics.shape == (3, gh, gw) and result.anomaly.shape == (gh, gw)
    assert (result.window, result.stride, result.descriptor) == (w, s, "pixels")
    assert result.image_score == pytest.approx(float(result.heatmap.max()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.image_score = 0.0
    with pytest.raises(ValueError):
        result.heatmap[0, 0] = 1.0


# --------------------------------------------------------------------------- inputs


def _gray_u8(seed=0) -> np.ndarray:
    return np.asarray(
        Image.fromarray(render(seed=seed, geo=ConnectorGeometry(80, 40))[0]).convert("L")
    )


@pytest.mark.parametrize(
    "convert",
    [
        lambda g: g,
        lambda g: g.astype(np.uint16) * 257,
        lambda g: g.astype(np.float32) / 255.0,
        lambda g: Image.fromarray(g),
        lambda g: Image.fromarray(np.stack([g] * 3, -1)),
        lambda g: np.dstack([g, g, g, np.full_like(g, 7)]),
        lambda g: Image.fromarray(np.dstack([g, g, g, np.full_like(g, 7)]), "RGBA"),
        lambda g: Image.fromarray(g.astype(np.uint16) * 257, "I;16"),
        lambda g: Image.fromarray(g.astype(np.float32) / 255.0, "F"),
        lambda g: g[..., None],
    ],
)
def test_input_kinds_give_the_same_map(convert):
    ref, test = _gray_u8(0), _gray_u8(1)
    want = soartc(ref, test)
    got = soartc(convert(ref), convert(test))
    np.testing.assert_allclose(got.heatmap, want.heatmap, rtol=1e-4, atol=1e-4)


def test_to_gray_uses_luma_and_ignores_alpha():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 0
    np.testing.assert_allclose(to_gray(rgba), 0.299)


_OK = np.random.default_rng(0).random((20, 30))


@pytest.mark.parametrize(
    "reference,test,kwargs,error,match",
    [
        (_OK, _OK[:, :29], {}, ValueError, "same size"),
        (np.where(_OK > 0.5, np.nan, _OK), _OK, {}, ValueError, "NaN or inf"),
        (_OK, np.where(_OK > 0.5, np.inf, _OK), {}, ValueError, "NaN or inf"),
        (_OK[:5, :5], _OK[:5, :5], {}, ValueError, "smaller than the 8 x 8 window"),
        (_OK, _OK, {"window": 31}, ValueError, "smaller than the 31 x 31 window"),
        (_OK[0], _OK[0], {}, ValueError, "expected H x W"),
        (_OK[None, :, :, None], _OK[None, :, :, None], {}, ValueError, "expected H x W"),
        (np.dstack([_OK] * 5), np.dstack([_OK] * 5), {}, ValueError, "expected H x W"),
        (_OK[:0], _OK[:0], {}, ValueError, "empty"),
        (_OK.astype(np.int64), _OK, {}, TypeError, "dtype int64"),
        (_OK > 0.5, _OK, {}, TypeError, "dtype bool"),
        (_OK.tolist(), _OK, {}, TypeError, "PIL image or a numpy array"),
        (_OK, _OK, {"window": 1}, ValueError, "window must be an integer >= 2"),
        (_OK, _OK, {"window": 8.0}, ValueError, "window must be an integer"),
        (_OK, _OK, {"window": True}, ValueError, "window must be an integer"),
        (_OK, _OK, {"stride": 0}, ValueError, "stride must be an integer >= 1"),
        (_OK, _OK, {"descriptor": "hog"}, ValueError, "descriptor must be one of"),
        (_OK, _OK, {"backend": "cuda"}, ValueError, "backend must be one of"),
        (_OK, _OK, {"references": [_OK[:, :29]]}, ValueError, r"references\[0\]"),
        (_OK, _OK, {"references": [_OK, np.full_like(_OK, np.nan)]}, ValueError, "references"),
    ],
)
def test_bad_inputs_raise_clear_errors(reference, test, kwargs, error, match):
    with pytest.raises(error, match=match):
        soartc(reference, test, **kwargs)


@pytest.mark.parametrize("d", [MAX_SHIFT - 0.5, -(MAX_SHIFT - 0.5)])
def test_shifts_up_to_max_shift_are_recovered(d):
    ref = to_gray(render(nuisances=Nuisances.off())[0])
    moved = _kernels.warp_image(ref, d, -d, 0.0)
    assert soartc(ref, moved).shift == pytest.approx((d, -d), abs=0.2)


@pytest.mark.parametrize("workers", [None, 1, 2, 3])
def test_soartc_many_equals_one_by_one(workers):
    pairs = [_rand_pair(seed, shape=(30, 44)) for seed in range(5)]
    many = soartc_many(pairs, workers=workers, window=6)
    assert len(many) == len(pairs)
    for (ref, test), got in zip(pairs, many, strict=True):
        want = soartc(ref, test, window=6)
        np.testing.assert_array_equal(got.heatmap, want.heatmap)
        assert got.window == 6


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_soartc_many_rejects_bad_workers(workers):
    with pytest.raises(ValueError, match="workers"):
        soartc_many([_rand_pair()], workers=workers)


def test_soartc_many_passes_errors_on():
    good, bad = _rand_pair(), (np.ones((20, 20)), np.ones((20, 21)))
    with pytest.raises(ValueError, match="same size"):
        soartc_many([good, bad], workers=2)
