"""SOARTC as the Space shows it: heatmap with a colour bar, image score, verdict, top positions.

The verdict is SOARTC's own: *defective* when the image score (the anomaly map's maximum, in robust
standard deviations) is above a threshold calibrated on good pairs and shipped with its provenance
in ``soartc_threshold.json`` beside this module (``python -m benchmarks.calibrate_soartc_threshold``
recomputes it).

Example:
    >>> view = run_soartc(reference, test)
    >>> view.verdict, view.top[0]
    ('defective', ('C7', 118.6))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from qeu_space.geometry import ConnectorGeometry
from qeu_space.soartc import soartc
from qeu_space.soartc.overlay import DEFAULT_VMAX, blend_heatmap, colorize
from qeu_space.soartc.positions import top_positions
from qeu_space.views.registration import Registration

TOP_K = 5
THRESHOLD_FILE = Path(__file__).with_name("soartc_threshold.json")
UNITS = "robust SD"
BAR_HEIGHT = 30


@dataclass(frozen=True)
class Threshold:
    """The pass/fail threshold of the SOARTC image score and where it comes from.

    Attributes:
        value: image scores above it are *defective*.
        provenance: the calibration record (seed set, count, statistic, date, command).
    """

    value: float
    provenance: dict

    def describe(self) -> str:
        p = self.provenance
        return (
            f"{p.get('statistic', 'calibrated')} ({p.get('good_pairs', '?')} pairs, "
            f"{p.get('date', 'undated')}; `{p.get('command', '')}`)"
        )


@lru_cache(maxsize=1)
def load_threshold(path: Path = THRESHOLD_FILE) -> Threshold:
    """The shipped threshold (read once)."""
    record = json.loads(Path(path).read_text())
    return Threshold(float(record["threshold"]), record)


@dataclass(frozen=True)
class SoartcView:
    """What the SOARTC panel shows.

    Attributes:
        overlay: the heatmap blended over the test image on SOARTC's fixed colour scale (0 to
            ``DEFAULT_VMAX`` robust standard deviations, higher values drawn at the top colour: a
            passed product stays dark, a defect glows the same in every image), with a colour
            bar under it marking the pass/fail threshold. A blend, not a matplotlib figure: it
            costs milliseconds where the figure costs a third of a second.
        score: the image score (the anomaly map's maximum; it is not clipped like the colours).
        threshold: the pass/fail threshold of ``score``.
        top: ``(position, score)`` of the :data:`TOP_K` highest pin cells, highest first.
    """

    overlay: Image.Image
    score: float
    threshold: float
    top: list[tuple[str, float]]

    @property
    def verdict(self) -> str:
        return "defective" if self.score > self.threshold else "passed"

    def top_rows(self) -> list[list]:
        return [[name, round(score, 3)] for name, score in self.top]

    def report(self) -> dict:
        """The API's SOARTC result (JSON)."""
        return {
            "score": round(self.score, 3),
            "threshold": round(self.threshold, 3),
            "verdict": self.verdict,
            "units": UNITS,
            "top": self.top_rows(),
        }

    def markdown(self) -> str:
        """The panel's text: verdict, score against the threshold, top positions."""
        sign = ">" if self.verdict == "defective" else "<="
        lines = [
            f"SOARTC verdict: **{self.verdict}** — image score **{self.score:.1f}** {sign} "
            f"threshold {self.threshold:.1f} ({UNITS})",
            "",
            "| position | score |",
            "|---|---:|",
        ]
        lines += [f"| {name} | {score:.1f} |" for name, score in self.top]
        return "\n".join(lines)


def run_soartc(
    reference: Image.Image,
    test: Image.Image,
    k: int = TOP_K,
    *,
    threshold: float | None = None,
    registrations: Sequence[Registration] | None = None,
) -> SoartcView:
    """SOARTC of a reference / test pair of one size (connector images, RGB).

    ``registrations``: the panels' registrations when the caller already found them (an
    inspection registers each panel once and hands the frames to SOARTC and the models).

    Raises:
        NoConnectorError: no connector is found in one of the images (registration).
    """
    ref = np.asarray(reference.convert("RGB"))
    tst = np.asarray(test.convert("RGB"))
    # raises NoConnectorError for a non-connector
    result = soartc(ref, tst, register=True, registrations=registrations)
    geometry = ConnectorGeometry(test.width, test.height)
    top = [(str(p), float(s)) for p, s in top_positions(result, geometry, k)]
    limit = load_threshold().value if threshold is None else threshold
    overlay = with_colour_bar(blend_heatmap(tst, result, alpha=0.55), limit)
    return SoartcView(overlay, float(result.image_score), limit, top)


@lru_cache(maxsize=8)
def _bar(width: int, threshold: float, vmax: float = DEFAULT_VMAX) -> Image.Image:
    """The colour bar strip: the scale 0..vmax, its units, and the threshold's mark."""
    strip = Image.new("RGB", (width, BAR_HEIGHT), (16, 16, 20))
    ramp = colorize(np.tile(np.linspace(0.0, vmax, width), (10, 1)), vmax=vmax)
    strip.paste(Image.fromarray(ramp), (0, 0))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default(size=11)
    if threshold <= vmax:
        x = round(threshold / vmax * (width - 1))
        draw.line([(x, 0), (x, 12)], fill=(80, 220, 255), width=2)
        mark = f"pass/fail {threshold:.1f}"
    else:
        mark = f"pass/fail {threshold:.1f} (beyond the bar)"
    text = f"0 - {vmax:g}+ {UNITS}; {mark}"
    draw.text((3, 13), text, fill=(235, 235, 230), font=font)
    return strip


def with_colour_bar(overlay: Image.Image, threshold: float) -> Image.Image:
    """``overlay`` with the colour bar (units, threshold) drawn under it."""
    out = Image.new("RGB", (overlay.width, overlay.height + BAR_HEIGHT))
    out.paste(overlay, (0, 0))
    out.paste(_bar(overlay.width, round(float(threshold), 3)), (0, overlay.height))
    return out
