"""Findings drawn on the composite's grid, coloured by how they compare with the truth.

Each finding is a box around its pin on the lower (test) product: green when the truth has it, red
when it does not (a false alarm), amber for a truth finding the answer missed, blue when no truth
is known. Images are drawn at :data:`DISPLAY_SCALE` times the composite so labels stay legible;
a click on them maps back with the same factor.

Example:
    >>> marked = mark_findings(composite, [Finding("C7", "missing pin")], truth=[])
    >>> marked.size
    (896, 896)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from qeu_space.geometry import CompositeLayout
from qeu_space.ui.comparison import compare
from qeu_space.vocabulary import Box, Finding

DISPLAY_SCALE = 2
COLOURS = {
    "hit": (34, 197, 94),
    "false alarm": (239, 68, 68),
    "missed": (245, 158, 11),
    "found": (56, 189, 248),
}


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def finding_box(layout: CompositeLayout, finding: Finding) -> Box:
    """The finding's own box (OD output), else the region its defect changes on the test panel."""
    if finding.box is not None:
        return finding.box
    box = layout.connector.defect_box(finding.position, finding.kind, finding.direction)
    return layout.to_composite(box, "test")


def enlarge(image: Image.Image, scale: int = DISPLAY_SCALE) -> Image.Image:
    return image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)


def _draw(
    draw: ImageDraw.ImageDraw, box: Box, colour: tuple, text: str, scale: int, dashed: bool
) -> None:
    x1, y1, x2, y2 = (v * scale for v in box)
    width = 3 * scale  # the image is shown at about half its size
    if dashed:
        step = 6 * scale
        for x in np.arange(x1, x2, step):
            draw.line([(x, y1), (min(x + step / 2, x2), y1)], fill=colour, width=width)
            draw.line([(x, y2), (min(x + step / 2, x2), y2)], fill=colour, width=width)
        for y in np.arange(y1, y2, step):
            draw.line([(x1, y), (x1, min(y + step / 2, y2))], fill=colour, width=width)
            draw.line([(x2, y), (x2, min(y + step / 2, y2))], fill=colour, width=width)
    else:
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
    font = _font(11 * scale)
    tx, ty = x1, max(0.0, y1 - 13 * scale)
    bbox = draw.textbbox((tx, ty), text, font=font)
    draw.rectangle(bbox, fill=(0, 0, 0))
    draw.text((tx, ty), text, fill=colour, font=font)


def _short(f: Finding) -> str:
    kind = f.kind.keyword  # bent, missing, short
    direction = f" {f.direction.value}" if f.direction else ""
    return f"{f.position} {kind}{direction}"


def mark_findings(
    composite: Image.Image,
    findings: Sequence[Finding],
    truth: Sequence[Finding] | None = None,
    *,
    scale: int = DISPLAY_SCALE,
) -> Image.Image:
    """The composite enlarged ``scale`` times with ``findings`` boxed (and truth misses)."""
    layout = CompositeLayout(composite.width)
    out = enlarge(composite, scale)
    draw = ImageDraw.Draw(out)
    if truth is None:
        for f in findings:
            _draw(draw, finding_box(layout, f), COLOURS["found"], _short(f), scale, False)
        return out
    cmp = compare(truth, findings)
    for status, group, dashed in (
        ("hit", cmp.hits, False),
        ("false alarm", cmp.false_alarms, False),
        ("missed", cmp.missed, True),
    ):
        for f in group:
            _draw(draw, finding_box(layout, f), COLOURS[status], _short(f), scale, dashed)
    return out


def draw_labelled_boxes(
    composite: Image.Image, boxes: Sequence[tuple[str, Box]], *, scale: int = DISPLAY_SCALE
) -> Image.Image:
    """OD output as it came: each labelled box in composite pixels."""
    out = enlarge(composite, scale)
    draw = ImageDraw.Draw(out)
    for label, box in boxes:
        _draw(draw, box, COLOURS["found"], label, scale, False)
    return out
