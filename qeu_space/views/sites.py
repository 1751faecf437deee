"""Registration step 1, pin sites: where the image holds small, compact structures of a site's size.

A site is a socket, a pin face, or both; what it looks like depends on the look: dark sockets in a
light housing, bright pins in black plastic, dark domed pins with a highlight on white plastic.
Rather than guess a polarity, a site is found by what every look shares: edges all round a small
region. The gradient magnitude (``cv2.Sobel``), smoothed with a Gaussian of about a site's radius,
peaks at the centre of any compact structure whatever its brightness against its surround (a ring
of edges blurred into one blob), and only along a long edge (the housing outline) or over texture
elsewhere.

Two scales keep it fast: the maxima are found on a quarter-size map (``cv2.resize`` with area
averaging, ``cv2.GaussianBlur``, ``cv2.dilate`` as a maximum filter), and each centre the lattice
keeps is refined on the full-size gradient magnitude by a Gaussian mean shift, which converges to
the same maximum of the same blurred map without blurring the whole image at full size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["SiteCandidates", "find_sites", "refine_sites", "site_energy"]

SITE_SIGMA = 0.2
"""Gaussian sigma of the energy map, in pitches: about a site's radius (a socket is 0.46 pitch)."""
PRE_SIGMA = 0.03
"""Smoothing before the gradient, in pitches: noise and JPEG blocks."""
MAX_CANDIDATES = 90
"""Strongest maxima kept: 27 sites, the housing corners and what a textured bench adds."""
_COARSE = 4  # the maxima are found on a map this many times smaller


@dataclass(frozen=True)
class SiteCandidates:
    """Candidate site centres in an image.

    Attributes:
        points: ``(n, 2)`` x, y centres (continuous pixel coordinates: pixel ``i`` covers
            ``[i, i + 1)``), strongest first; about a pixel accurate until refined.
        strength: ``(n,)`` blurred energy at each centre.
        energy: full-size gradient magnitude (what :func:`refine_sites` reads).
        coarse: the blurred energy map, ``factor`` times smaller (the window step samples it).
        factor: size of one ``coarse`` pixel in image pixels (``(fx, fy)``).
    """

    points: np.ndarray
    strength: np.ndarray
    energy: np.ndarray
    coarse: np.ndarray
    factor: tuple[float, float]

    def energy_at(self, points: np.ndarray) -> np.ndarray:
        """The blurred energy at continuous image ``points`` (``(..., 2)``; 0 outside)."""
        h, w = self.coarse.shape
        x = points[..., 0] / self.factor[0] - 0.5
        y = points[..., 1] / self.factor[1] - 0.5
        inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
        xi = np.clip(np.rint(x), 0, w - 1).astype(int)
        yi = np.clip(np.rint(y), 0, h - 1).astype(int)
        return np.where(inside, self.coarse[yi, xi], 0.0)


def site_energy(gray: np.ndarray, pitch: float) -> np.ndarray:
    """Gradient magnitude of ``gray`` after a light smoothing (noise, JPEG blocks)."""
    g = np.asarray(gray, np.float32)
    g = cv2.GaussianBlur(g, (0, 0), max(PRE_SIGMA * pitch, 0.6), borderType=cv2.BORDER_REPLICATE)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    return cv2.magnitude(gx, gy)  # not its square: one strong edge must not rule a site


def _subpixel(energy: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Peak offsets (dx, dy) in [-0.5, 0.5] from a parabola through each maximum's neighbours."""
    h, w = energy.shape
    y0, y2 = np.clip(ys - 1, 0, h - 1), np.clip(ys + 1, 0, h - 1)
    x0, x2 = np.clip(xs - 1, 0, w - 1), np.clip(xs + 1, 0, w - 1)
    c = energy[ys, xs]
    left, right, up, down = energy[ys, x0], energy[ys, x2], energy[y0, xs], energy[y2, xs]
    with np.errstate(divide="ignore", invalid="ignore"):
        dx = np.where(left + right - 2 * c < 0, 0.5 * (left - right) / (left + right - 2 * c), 0)
        dy = np.where(up + down - 2 * c < 0, 0.5 * (up - down) / (up + down - 2 * c), 0)
    return np.stack([np.clip(dx, -0.5, 0.5), np.clip(dy, -0.5, 0.5)], 1)


def find_sites(
    gray: np.ndarray, pitch: float, max_candidates: int = MAX_CANDIDATES
) -> SiteCandidates:
    """Candidate site centres of ``gray`` (H x W float) for a lattice of about ``pitch`` px."""
    energy = site_energy(gray, pitch)
    h, w = energy.shape
    cw, ch = max(w // _COARSE, 8), max(h // _COARSE, 8)
    fx, fy = w / cw, h / ch
    small = cv2.resize(energy, (cw, ch), interpolation=cv2.INTER_AREA)
    sigma = SITE_SIGMA * pitch / fx
    coarse = cv2.GaussianBlur(small, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    side = max(int(round(0.45 * pitch / fx)) | 1, 3)
    peaks = coarse >= cv2.dilate(coarse, np.ones((side, side), np.uint8))
    floor = float(coarse.mean()) + 1e-3
    # a maximum at the border is a structure cut by it (or the border itself): not measurable
    edge = max(int(round(0.2 * pitch / fx)), 1)
    peaks[:edge], peaks[-edge:], peaks[:, :edge], peaks[:, -edge:] = False, False, False, False
    ys, xs = np.nonzero(peaks & (coarse > floor))
    strength = coarse[ys, xs]
    order = np.argsort(-strength, kind="stable")[:max_candidates]
    ys, xs, strength = ys[order], xs[order], strength[order]
    cells = np.stack([xs, ys], 1).astype(np.float64) + 0.5 + _subpixel(coarse, ys, xs)
    points = cells.reshape(-1, 2) * (fx, fy)
    return SiteCandidates(points, strength.astype(np.float64), energy, coarse, (fx, fy))


def refine_sites(
    gray: np.ndarray, points: np.ndarray, pitch: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``points`` moved to the centroid of its site region, whatever its polarity.

    Around each point the housing's level is the median of a ring 0.4 pitch out; the site is
    what differs from it by more than half the patch's largest difference (a dark socket, a
    bright pin, a dark domed pin alike), holes filled (a pin inside its socket, a highlight on a
    dome), with anti-aliased edges weighted by how far they differ: the centroid of that region
    is the site's centre to a small fraction of a pixel, however the pin face inside is shaded.
    A bent pin's site is pulled toward its tip, which the robust fit drops. Returns the points
    and which of them were refined: a point whose patch leaves the image (its region is cut) or
    shows no contrast is returned as it came.

    All patches are laid side by side in one strip, so the hole filling (``cv2.floodFill``) and
    the connected regions (``cv2.connectedComponents``) run once for every site.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2).copy()
    g = np.asarray(gray, np.float32)
    h, w = g.shape
    r = max(int(round(0.4 * pitch)), 4)
    side = 2 * r + 1
    cx = np.floor(pts[:, 0]).astype(int)
    cy = np.floor(pts[:, 1]).astype(int)
    ok = np.nonzero((cx - r >= 0) & (cy - r >= 0) & (cx + r < w) & (cy + r < h))[0]
    refined = np.zeros(len(pts), bool)
    if not len(ok):
        return pts, refined
    offs = np.arange(-r, r + 1)
    patches = g[(cy[ok, None] + offs)[:, :, None], (cx[ok, None] + offs)[:, None, :]]
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    dist = np.hypot(yy, xx)
    ring = np.abs(dist - r) <= 0.75
    disk = dist <= r
    level = np.median(patches[:, ring], axis=1)
    diff = np.abs(patches - level[:, None, None])
    top = np.percentile(diff[:, disk], 98, axis=1)
    soft = np.clip((diff - 0.25 * top[:, None, None]) / (0.5 * top[:, None, None] + 1e-6), 0, 1)
    soft *= disk
    n = len(ok)
    strip = np.zeros((side + 2, n * (side + 2)), np.uint8)
    view = strip[1 : side + 1].reshape(side, n, side + 2)[:, :, 1 : side + 1]
    view[...] = (soft >= 0.5).transpose(1, 0, 2)
    # fill holes: what the outside cannot reach is inside
    outside = (1 - strip).astype(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 2)
    solid = ((strip == 1) | (outside == 1)).astype(np.uint8)
    _, labels = cv2.connectedComponents(solid, connectivity=8)
    lab = labels[1 : side + 1].reshape(side, n, side + 2)[:, :, 1 : side + 1].transpose(1, 0, 2)
    centre = lab[:, r, r]
    region = (lab == centre[:, None, None]) & (centre[:, None, None] > 0)
    grown = np.zeros_like(strip)
    gview = grown[1 : side + 1].reshape(side, n, side + 2)[:, :, 1 : side + 1]
    gview[...] = region.transpose(1, 0, 2)
    grown = cv2.dilate(grown, np.ones((3, 3), np.uint8))
    rim = grown[1 : side + 1].reshape(side, n, side + 2)[:, :, 1 : side + 1].transpose(1, 0, 2)
    weight = np.where(region, 1.0, np.where(rim > 0, soft, 0.0))
    total = weight.sum((1, 2))
    good = (total > 0) & (top >= 4.0) & (centre > 0)
    mx = (weight * xx).sum((1, 2)) / np.maximum(total, 1e-9)
    my = (weight * yy).sum((1, 2)) / np.maximum(total, 1e-9)
    idx = ok[good]
    pts[idx, 0] = cx[idx] + 0.5 + mx[good]
    pts[idx, 1] = cy[idx] + 0.5 + my[good]
    refined[idx] = True
    return pts, refined
