"""Where things are in pixels: pins on a connector image, and panels on a composite.

The renderer draws with these numbers, the dataset builders write boxes with them, SOARTC maps its
heatmap back to grid positions with them, and the Space marks answers on the grid with them. Keeping
them in one place (in ``qeu_space``, which ``dataset_tools`` may import but not the reverse) means a
box in a dataset row and a position named by the app can never drift apart.

Example:
    >>> layout = CompositeLayout(448)
    >>> x, y = layout.connector.pin_center(Position("C", 5))
    >>> layout.position_at(x + layout.origin("test")[0], y + layout.origin("test")[1]).name
    'C5'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from qeu_space.vocabulary import ALL_POSITIONS, COLUMNS, ROWS, Box, DefectKind, Direction, Position

Panel = Literal["reference", "test"]
PANELS: tuple[Panel, ...] = ("reference", "test")

# Fractions of the connector image (chosen so the 3 x 9 grid fills a housing with a rim).
_GRID_X = (0.08, 0.92)  # centres of columns 1 and 9
_GRID_Y = (0.25, 0.75)  # centres of rows U and D
_HOUSING = (0.025, 0.06, 0.975, 0.94)  # x1, y1, x2, y2
_PIN = 0.32  # pin side / smaller pitch
_SOCKET = 1.45  # socket side / pin side
_BEND = 0.34  # tip displacement of a bent pin / pitch along its direction


@dataclass(frozen=True)
class ConnectorGeometry:
    """Pin layout of one connector image of ``width`` x ``height`` pixels."""

    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 40 or self.height < 16:
            raise ValueError(
                f"connector image too small: {self.width} x {self.height} (min 40 x 16)"
            )

    @property
    def pitch(self) -> tuple[float, float]:
        return (
            self.width * (_GRID_X[1] - _GRID_X[0]) / (len(COLUMNS) - 1),
            self.height * (_GRID_Y[1] - _GRID_Y[0]) / (len(ROWS) - 1),
        )

    @property
    def pin_size(self) -> float:
        return _PIN * min(self.pitch)

    @property
    def socket_size(self) -> float:
        return self.pin_size * _SOCKET

    @property
    def housing_box(self) -> Box:
        x1, y1, x2, y2 = _HOUSING
        return (x1 * self.width, y1 * self.height, x2 * self.width, y2 * self.height)

    def pin_center(self, position: Position) -> tuple[float, float]:
        px, py = self.pitch
        return (
            self.width * _GRID_X[0] + (position.column - 1) * px,
            self.height * _GRID_Y[0] + position.row_index * py,
        )

    def bend_offset(self, direction: Direction) -> tuple[float, float]:
        """How far a bent pin's tip moves, in pixels, toward ``direction``."""
        dx, dy = direction.vector
        px, py = self.pitch
        return (dx * _BEND * px, dy * _BEND * py)

    def pin_box(self, position: Position) -> Box:
        cx, cy = self.pin_center(position)
        h = self.socket_size / 2
        return (cx - h, cy - h, cx + h, cy + h)

    def defect_box(
        self, position: Position, kind: DefectKind, direction: Direction | None, pad: float = 2.0
    ) -> Box:
        """The region a defect changes: the socket, plus the displaced tip for a bent pin.

        A missing pin (empty socket) and a short pin (a smaller face sunk in its socket) change
        the socket only.
        """
        x1, y1, x2, y2 = self.pin_box(position)
        if kind is DefectKind.BENT and direction is not None:
            dx, dy = self.bend_offset(direction)
            x1, x2 = min(x1, x1 + dx), max(x2, x2 + dx)
            y1, y2 = min(y1, y1 + dy), max(y2, y2 + dy)
        return (
            max(x1 - pad, 0.0),
            max(y1 - pad, 0.0),
            min(x2 + pad, float(self.width)),
            min(y2 + pad, float(self.height)),
        )

    def grid_box(self) -> Box:
        """The 3 x 9 pin cells (one pitch around each pin centre): the pin grid and nothing else.

        Cropped to this box and resized to 3 x 9 patches, every pin sits in the middle of its own
        patch (the ViT classifier's framing), whatever its position.
        """
        px, py = self.pitch
        x1, y1 = self.pin_center(ALL_POSITIONS[0])
        x2, y2 = self.pin_center(ALL_POSITIONS[-1])
        return (x1 - px / 2, y1 - py / 2, x2 + px / 2, y2 + py / 2)

    def position_at(self, x: float, y: float) -> Position | None:
        """The pin site whose cell (one pitch around its centre) holds ``(x, y)``, if any."""
        px, py = self.pitch
        for position in ALL_POSITIONS:
            cx, cy = self.pin_center(position)
            if abs(x - cx) <= px / 2 and abs(y - cy) <= py / 2:
                return position
        return None

    def position_scores(self, heatmap: np.ndarray) -> dict[Position, float]:
        """The maximum of ``heatmap`` (this image's size) inside each pin cell."""
        if heatmap.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"heatmap is {heatmap.shape[1]} x {heatmap.shape[0]}, "
                f"geometry expects {self.width} x {self.height}"
            )
        px, py = self.pitch
        scores = {}
        for position in ALL_POSITIONS:
            cx, cy = self.pin_center(position)
            x1, x2 = int(max(cx - px / 2, 0)), int(min(cx + px / 2, self.width))
            y1, y2 = int(max(cy - py / 2, 0)), int(min(cy + py / 2, self.height))
            scores[position] = float(heatmap[y1:y2, x1:x2].max())
        return scores


@dataclass(frozen=True)
class CompositeLayout:
    """A square composite: the reference product on top, the product under inspection below.

    Each panel keeps a left margin for the row letters and a top margin for the column numbers
    (blank when labels are left out, so pixels of the connector never move).
    """

    size: int = 448

    def __post_init__(self) -> None:
        if self.size < 96 or self.size % 2:
            raise ValueError(f"composite size must be even and at least 96, got {self.size}")

    @property
    def margins(self) -> tuple[int, int]:
        """``(left, top)`` label margins of each panel, in pixels."""
        return (max(12, round(self.size * 0.055)), max(10, round(self.size * 0.045)))

    @property
    def panel_height(self) -> int:
        return self.size // 2

    @property
    def connector(self) -> ConnectorGeometry:
        left, top = self.margins
        return ConnectorGeometry(self.size - left, self.panel_height - top)

    def origin(self, panel: Panel) -> tuple[int, int]:
        """Top-left corner of ``panel``'s connector image in the composite."""
        left, top = self.margins
        return (left, top + (self.panel_height if panel == "test" else 0))

    def to_composite(self, box: Box, panel: Panel = "test") -> Box:
        ox, oy = self.origin(panel)
        return (box[0] + ox, box[1] + oy, box[2] + ox, box[3] + oy)

    def crop_box(self, panel: Panel) -> tuple[int, int, int, int]:
        """``(x1, y1, x2, y2)`` of ``panel``'s connector image, for ``PIL.Image.crop``."""
        ox, oy = self.origin(panel)
        conn = self.connector
        return (ox, oy, ox + conn.width, oy + conn.height)

    def position_at(self, x: float, y: float) -> Position | None:
        """The test product's pin site under composite pixel ``(x, y)`` (reference panel: None)."""
        ox, oy = self.origin("test")
        return self.connector.position_at(x - ox, y - oy)

    def label_anchors(self, panel: Panel) -> list[tuple[str, float, float]]:
        """``(text, x, y)`` centres of the coordinate labels of ``panel``."""
        left, top = self.margins
        ox, oy = self.origin(panel)
        conn = self.connector
        anchors = []
        for column in COLUMNS:
            cx, _ = conn.pin_center(Position(ROWS[0], column))
            anchors.append((str(column), ox + cx, oy - top / 2))
        for row in ROWS:
            _, cy = conn.pin_center(Position(row, 1))
            anchors.append((row, left / 2, oy + cy))
        return anchors
