"""SOARTC as the Space shows it: the heatmap over the test image, the score, the top positions.

Example:
    >>> view = run_soartc(reference, test)
    >>> view.top[0]
    ('C7', 5.2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from qeu_space.geometry import ConnectorGeometry
from qeu_space.soartc import soartc
from qeu_space.soartc.overlay import DEFAULT_VMAX, blend_heatmap
from qeu_space.soartc.positions import top_positions

TOP_K = 5
HEAT_LEGEND = f"0-{DEFAULT_VMAX:g} SD"


@dataclass(frozen=True)
class SoartcView:
    """What the SOARTC panel shows.

    Attributes:
        overlay: the heatmap blended over the test image (test image's size), on SOARTC's fixed
            colour scale (0 to ``DEFAULT_VMAX`` robust standard deviations: a passed product stays
            dark, a defect glows the same in every image). A blend, not a matplotlib figure: it
            costs milliseconds where the figure costs a third of a second.
        score: the image score (the anomaly map's maximum).
        top: ``(position, score)`` of the :data:`TOP_K` highest pin cells, highest first.
    """

    overlay: Image.Image
    score: float
    top: list[tuple[str, float]]

    def top_rows(self) -> list[list]:
        return [[name, round(score, 3)] for name, score in self.top]


def run_soartc(reference: Image.Image, test: Image.Image, k: int = TOP_K) -> SoartcView:
    """SOARTC of a reference / test pair of one size (connector images, RGB)."""
    ref = np.asarray(reference.convert("RGB"))
    tst = np.asarray(test.convert("RGB"))
    result = soartc(ref, tst, register=True)  # raises NoConnectorError for a non-connector
    geometry = ConnectorGeometry(test.width, test.height)
    top = [(str(p), float(s)) for p, s in top_positions(result, geometry, k)]
    overlay = blend_heatmap(tst, result, alpha=0.55)
    return SoartcView(overlay, float(result.image_score), top)
