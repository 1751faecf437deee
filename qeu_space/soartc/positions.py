"""From a SOARTC heatmap to grid positions (``C5``, ...), through the shared pixel geometry."""

from __future__ import annotations

import numpy as np

from qeu_space.geometry import CompositeLayout, ConnectorGeometry
from qeu_space.soartc.core import SoartcResult
from qeu_space.vocabulary import ALL_POSITIONS, Position


def top_positions(
    result: SoartcResult | np.ndarray,
    geometry: ConnectorGeometry | CompositeLayout,
    k: int = 3,
) -> list[tuple[Position, float]]:
    """The ``k`` most anomalous pin positions, most anomalous first, with their scores.

    A position's score is the heatmap's maximum inside its pin cell
    (:meth:`ConnectorGeometry.position_scores`); ties go to the earlier position (U1 .. D9). A
    result of a registered comparison is read in the canonical frame, where the cells are.

    Args:
        result: a :class:`SoartcResult` or a heatmap array.
        geometry: the connector image's geometry (heatmap of one connector image), or a
            :class:`CompositeLayout`; then the heatmap is either the whole composite's (its test
            panel is read) or the test panel's own.
        k: how many positions, 1 to 27.

    Example:
        >>> geo = ConnectorGeometry(423, 204)
        >>> heat = np.zeros((204, 423), np.float32)
        >>> x, y = geo.pin_center(Position("C", 5))
        >>> heat[int(y), int(x)] = 9.0
        >>> top_positions(heat, geo, k=1)
        [(Position(row='C', column=5), 9.0)]
    """
    if not 1 <= k <= len(ALL_POSITIONS):
        raise ValueError(f"k must be between 1 and {len(ALL_POSITIONS)}, got {k}")
    heat = result.canonical_heatmap if isinstance(result, SoartcResult) else np.asarray(result)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {heat.shape}")
    if isinstance(geometry, CompositeLayout):
        conn = geometry.connector
        if heat.shape == (geometry.size, geometry.size):
            x1, y1, x2, y2 = geometry.crop_box("test")
            heat = heat[y1:y2, x1:x2]
        elif heat.shape != (conn.height, conn.width):
            raise ValueError(
                f"heatmap is {heat.shape[1]} x {heat.shape[0]}: a {geometry.size}-pixel composite "
                f"needs the whole composite or its {conn.width} x {conn.height} test panel"
            )
        geometry = conn
    scores = geometry.position_scores(heat)
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [(position, float(score)) for position, score in ranked[:k]]
