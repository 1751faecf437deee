"""Registration step 4, the projective fit: canonical pin centres onto the sites found.

``cv2.findHomography`` with RANSAC picks the sites that agree on one plane (a bent pin's site,
pulled toward its tip, or a stray edge does not), then a least-squares fit on those inliers gives
the homography; a perspective camera's keystone (tilt about any axis) is absorbed exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["HomographyFit", "fit_homography", "project"]

INLIER = 0.06
"""RANSAC inlier distance, in pitches (a bent pin's site moves by more)."""


@dataclass(frozen=True)
class HomographyFit:
    """A canonical-to-image homography and how well the sites agree with it.

    Attributes:
        matrix: 3 x 3, canonical pixels to image pixels (``matrix[2, 2] == 1``).
        inliers: boolean mask over the pairs fitted.
        residual: RMS distance (px) of the inliers from their fitted places.
    """

    matrix: np.ndarray
    inliers: np.ndarray
    residual: float


def project(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(n, 2)`` x, y points through a 3 x 3 homography (an affine one included)."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    q = p @ matrix[:2, :2].T + matrix[:2, 2]
    w = p @ matrix[2, :2] + matrix[2, 2]
    return q / w[:, None]


def fit_homography(src: np.ndarray, dst: np.ndarray, pitch: float) -> HomographyFit | None:
    """Robust homography taking canonical ``src`` onto image ``dst`` (``None``: no fit)."""
    if len(src) < 6:
        return None
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    thr = max(INLIER * pitch, 1.0)
    found, mask = cv2.findHomography(src, dst, cv2.RANSAC, thr, maxIters=500, confidence=0.999)
    if found is None or mask is None:
        return None
    inl = mask.ravel().astype(bool)
    if inl.sum() < 6:
        return None
    refit, _ = cv2.findHomography(src[inl], dst[inl], 0)
    if refit is None:
        return None
    # the refit may admit sites RANSAC's sample left out: read the inliers once more
    inl = np.linalg.norm(project(refit, src) - dst, axis=1) <= thr
    if inl.sum() >= 6:
        again, _ = cv2.findHomography(src[inl], dst[inl], 0)
        refit = again if again is not None else refit
    refit = refit / refit[2, 2]
    err = np.linalg.norm(project(refit, src[inl]) - dst[inl], axis=1)
    return HomographyFit(refit, inl, float(np.sqrt(np.mean(err**2))))
