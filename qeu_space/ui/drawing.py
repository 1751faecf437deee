"""Findings drawn on the composite's grid, and an answer compared with the truth.

Each finding is a box around its pin on the lower (test) product: green when the truth has it, red
when it does not (a false alarm), amber for a truth finding the answer missed, blue when no truth
is known. Images are drawn at :data:`DISPLAY_SCALE` times the composite so labels stay legible;
a click on them maps back with the same factor.

Example:
    >>> cmp = compare([Finding("C7", "missing pin")], [Finding("C7", "missing pin")])
    >>> cmp.exact
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from qeu_space.geometry import CompositeLayout
from qeu_space.vocabulary import Box, DefectKind, Finding, sort_findings

DISPLAY_SCALE = 2
COLOURS = {
    "hit": (34, 197, 94),
    "false alarm": (239, 68, 68),
    "missed": (245, 158, 11),
    "found": (56, 189, 248),
}


@dataclass(frozen=True)
class Comparison:
    """An answer's findings against the truth, matched on (position, kind).

    Attributes:
        hits: findings in both (the answer's copy).
        false_alarms: findings only in the answer.
        missed: truth findings the answer lacks.
        wrong_direction: hits on a bent pin whose stated direction differs from the truth.
    """

    hits: tuple[Finding, ...]
    false_alarms: tuple[Finding, ...]
    missed: tuple[Finding, ...]
    wrong_direction: tuple[Finding, ...]

    @property
    def exact(self) -> bool:
        return not (self.false_alarms or self.missed or self.wrong_direction)


def _key(f: Finding) -> tuple:
    return (f.position, f.kind)


def compare(truth: Sequence[Finding], predicted: Sequence[Finding]) -> Comparison:
    truth_by_key = {_key(f): f for f in truth}
    predicted_keys = {_key(f) for f in predicted}
    hits = [f for f in predicted if _key(f) in truth_by_key]
    wrong = [
        f
        for f in hits
        if f.kind is DefectKind.BENT
        and f.direction is not None
        and truth_by_key[_key(f)].direction not in (None, f.direction)
    ]
    return Comparison(
        hits=tuple(sort_findings(hits)),
        false_alarms=tuple(sort_findings(f for f in predicted if _key(f) not in truth_by_key)),
        missed=tuple(sort_findings(f for f in truth if _key(f) not in predicted_keys)),
        wrong_direction=tuple(sort_findings(wrong)),
    )


def describe_comparison(cmp: Comparison) -> str:
    """A short line: ``2 right, 1 false alarm (U3 bent pin), missed: C7 missing pin``."""
    if cmp.exact:
        return f"matches the truth ({len(cmp.hits)} finding{'s' if len(cmp.hits) != 1 else ''})"
    parts = [f"{len(cmp.hits)} right"]
    if cmp.false_alarms:
        parts.append("false alarm: " + ", ".join(f.describe() for f in cmp.false_alarms))
    if cmp.missed:
        parts.append("missed: " + ", ".join(f.describe() for f in cmp.missed))
    if cmp.wrong_direction:
        parts.append("wrong direction: " + ", ".join(f.describe() for f in cmp.wrong_direction))
    return "; ".join(parts)


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
    kind = "bent" if f.kind is DefectKind.BENT else "missing"
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
