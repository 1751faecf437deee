"""What looks odd about an inspection: said beside the answers instead of answering it plainly.

An answer is only as good as the composite it reads. Three things make a plain answer misleading,
and each becomes a one-line note in the ``/inspect`` report (``warnings``) and in the Space:

- **verdicts disagree**: SOARTC (training-free) calls the product defective and a model calls it
  passed, or the other way round; one of them is wrong, and the note names who said what.
- **panels swapped**: the *lower* panel is a reference the server made (a gallery or generated
  sample's upper, good product) while the upper panel is not: the test product is on top.
- **upside down**: the composite turned by 180 degrees is one the server made.

The last two are recognised for references the server knows (its own renders, compared on small
grey thumbnails, so a re-encoded or slightly resized copy still matches); a foreign composite with
its panels swapped shows up through the first note only (a defect in the upper panel makes SOARTC
see a difference the models, reading the lower panel, do not report).

Example:
    >>> odd = Oddities(lambda: gallery)
    >>> odd.notes(composite, soartc_view, vit_view, (base, tuned), od_findings)
    ('SOARTC says defective (score 50.3 > 12.0) but base, fine-tuned say passed: ...',)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from qeu_space.ui.cases import Case, split_composite

#: Thumbnail size (width, height) panels are compared at.
THUMB = (64, 32)
#: Mean absolute grey difference (0-255) under which two thumbnails are the same render.
SAME = 4.0


def thumbnail(panel: Image.Image) -> np.ndarray:
    """A small grey float copy of a connector panel (what matching compares)."""
    return np.asarray(panel.convert("L").resize(THUMB, Image.BILINEAR), dtype=np.float32)


def _verdict_of_answer(answer: Any) -> str | None:
    if getattr(answer, "status", None) != "ok":
        return None
    return "defective" if answer.findings else "passed"


class Oddities:
    """Notes on what looks odd, against the references of the server's own cases.

    Args:
        cases: the server's cases (a list, or a callable returning the current ones: the
            gallery plus generated samples); their upper panels are the known references.
    """

    def __init__(self, cases: Sequence[Case] | Callable[[], Sequence[Case]]) -> None:
        self._cases = cases if callable(cases) else (lambda: cases)
        self._thumbs: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def _references(self) -> list[np.ndarray]:
        cases = list(self._cases())
        with self._lock:
            for case in cases:
                key = id(case.composite)
                if key not in self._thumbs:
                    self._thumbs[key] = thumbnail(split_composite(case.composite)[0])
            live = {id(case.composite) for case in cases}
            for key in [k for k in self._thumbs if k not in live]:
                del self._thumbs[key]
            return [self._thumbs[id(case.composite)] for case in cases]

    def _known_reference(self, panel: Image.Image, references: list[np.ndarray]) -> bool:
        if not references:
            return False
        thumb = thumbnail(panel)
        return min(float(np.abs(thumb - ref).mean()) for ref in references) < SAME

    def layout_notes(self, image: Image.Image) -> list[str]:
        """Swapped panels or an upside-down composite, recognised against known references."""
        references = self._references()
        upper, lower = split_composite(image)
        if self._known_reference(lower, references) and not self._known_reference(
            upper, references
        ):
            return [
                "the panels look swapped: the lower panel is a good reference this server "
                "rendered, so the product under test is probably on top; put the reference on "
                "top and the test product below, then inspect again"
            ]
        turned_upper, _ = split_composite(image.rotate(180))
        if self._known_reference(turned_upper, references):
            return [
                "the composite looks upside down: turned by 180 degrees it is one this server "
                "rendered; turn it the right way up (reference on top, U row first), then "
                "inspect again"
            ]
        return []

    @staticmethod
    def verdict_notes(soartc: Any, vit: Any, answers: Sequence[Any], od: Any) -> list[str]:
        """SOARTC's verdict against every model that gave one."""
        if soartc is None:
            return []
        said: dict[str, list[str]] = {"passed": [], "defective": []}
        for who, answer in zip(("base", "fine-tuned"), answers, strict=False):
            verdict = _verdict_of_answer(answer)
            if verdict is not None:
                said[verdict].append(who)
        label = getattr(vit, "label", None)
        if label is not None:
            said["passed" if label == "OK" else "defective"].append("the ViT")
        if od is not None:
            said["defective" if od else "passed"].append("Florence-2 OD")
        against = said["passed" if soartc.verdict == "defective" else "defective"]
        if not against:
            return []
        other = "passed" if soartc.verdict == "defective" else "defective"
        side = ">" if soartc.verdict == "defective" else "<="
        says = "says" if len(against) == 1 else "say"
        return [
            f"SOARTC says {soartc.verdict} (score {soartc.score:.1f} {side} threshold "
            f"{soartc.threshold:.1f}) but {', '.join(against)} {says} {other}: "
            "one of them is wrong; look at the heatmap and the panels (is the "
            "reference on top?) before trusting either"
        ]

    def notes(
        self,
        image: Image.Image,
        soartc: Any,
        vit: Any,
        answers: Sequence[Any],
        od_findings: Sequence[Any] | None,
    ) -> tuple[str, ...]:
        """Every note for one inspection (empty when nothing looks odd)."""
        verdicts = self.verdict_notes(soartc, vit, answers, od_findings)
        return tuple(self.layout_notes(image) + verdicts)
