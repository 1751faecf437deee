"""What the Inspect tab works on: a composite image and, when known, its truth.

A case comes from the gallery of generated samples, from a new sample with chosen defects, from an
uploaded composite, or from an uploaded reference and test image composed here. Generating and
composing are the dataset tools' job; the UI receives them as a :class:`CaseSource` (``app.py``
passes one built on ``dataset_tools``), so that ``qeu_space`` never imports ``dataset_tools``.

Example:
    >>> composite = normalise_composite(uploaded)        # square, resized to 448
    >>> reference, test = split_composite(composite)     # the two connector images
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from qeu_space.geometry import CompositeLayout
from qeu_space.ui.reading import read_findings
from qeu_space.views.image_io import UploadError
from qeu_space.vocabulary import DefectKind, Finding, format_answer

#: Side of the composite the models see (the datasets' default).
COMPOSITE_SIZE = 448
#: Smallest upload accepted as a composite / as one connector image.
MIN_COMPOSITE = (96, 96)
MIN_CONNECTOR = (40, 16)
#: How far from square an uploaded composite may be (as a share of its width).
SQUARE_TOLERANCE = 0.02


@dataclass(frozen=True)
class Case:
    """A composite to inspect.

    Attributes:
        composite: RGB, :data:`COMPOSITE_SIZE` square, reference on top and test below.
        truth: the true findings of a generated sample, ``None`` when unknown.
        source: where it came from (``sample qa-...``, ``upload``, ``pair upload``).
        look: the look family it was drawn in, when it shows one (the gallery's look samples).
    """

    composite: Image.Image
    truth: tuple[Finding, ...] | None
    source: str
    look: str = ""

    @property
    def truth_text(self) -> str:
        return "" if self.truth is None else format_answer(self.truth)

    @property
    def caption(self) -> str:
        """The gallery caption: the truth in a few characters (:func:`short_truth`), after the
        look family when the case shows one."""
        truth = "unknown" if self.truth is None else short_truth(self.truth)
        return f"{self.look}: {truth}" if self.look else truth


_ARROWS = {"up": "↑", "down": "↓", "left": "←", "right": "→"}
#: The mark of each kind without a direction in a caption.
_MARKS = {DefectKind.MISSING: "✕", DefectKind.SHORT: "▾"}
CAPTION_LEGEND = (
    "caption: OK, or each defect's pin with ✕ missing, ▾ short or an arrow for a bent pin"
)


def short_truth(findings: tuple[Finding, ...]) -> str:
    """``OK``, or ``U3← C7✕ C4▾`` (bent pin and its direction, missing pin, short pin): short
    enough for a thumbnail's caption; the full truth fills the truth box when the sample is
    picked."""
    if not findings:
        return "OK"
    marks = []
    for f in findings:
        if f.kind in _MARKS:
            marks.append(f"{f.position}{_MARKS[f.kind]}")
        else:
            marks.append(f"{f.position}{_ARROWS[f.direction.value] if f.direction else '?'}")
    return " ".join(marks)


@dataclass(frozen=True)
class SampleRequest:
    """A new sample with chosen defects, as the Generate form asks for it."""

    findings: tuple[Finding, ...]
    housing: str
    pins: str
    labels_drawn: bool = True
    nuisances: bool = True
    seed: int = 0


class CaseSource(Protocol):
    """Makes cases: the gallery, new samples, composites of uploaded pairs."""

    housings: tuple[str, ...]
    pin_styles: tuple[str, ...]

    def gallery(
        self, count: int, seed: int, kinds: tuple[DefectKind, ...] = tuple(DefectKind)
    ) -> list[Case]:
        """``count`` generated samples with their truth (a varied, reproducible set) showing
        defects of ``kinds``; a longer list starts with the samples of a shorter one."""
        ...

    def generate(self, request: SampleRequest) -> Case:
        """One sample showing exactly the requested defects."""
        ...

    def look_gallery(self, seed: int) -> list[Case]:
        """One sample of each look family (:data:`dataset_tools.looks.LOOK_FAMILIES`), so a
        visitor sees what the Space can inspect; a source without looks returns ``[]``."""
        ...

    def compose_pair(self, reference: Image.Image, test: Image.Image) -> Image.Image:
        """A labelled :data:`COMPOSITE_SIZE` composite of two connector images (same size)."""
        ...


def parse_defects(text: str) -> tuple[Finding, ...]:
    """Defects typed for a new sample (``U3 bent pin (left); C7 missing pin``); empty = passed.

    Raises:
        ReadError: a part that is not a defect (the message names it), an unknown position or
            kind, or a bent pin without its direction.
    """
    if not (text or "").strip():
        return ()
    return read_findings(text, what="defects list", require_direction=True)


def parse_truth(text: str | None) -> tuple[Finding, ...] | None:
    """The truth box of the Inspect tab: empty means unknown; anything else is read strictly.

    Raises:
        ReadError: naming the part of the text that is not a finding.
    """
    if text is None or not text.strip():
        return None
    return read_findings(text, what="ground truth")


def normalise_composite(image: Image.Image) -> Image.Image:
    """An uploaded composite as the models see it: square, :data:`COMPOSITE_SIZE` pixels.

    Raises:
        UploadError: an image that is not (nearly) square cannot be a composite.
    """
    width, height = image.size
    if abs(width - height) > SQUARE_TOLERANCE * width:
        raise UploadError(
            f"a composite is square (reference on top, test below), this image is {width} x "
            f"{height}; upload the reference and test images separately instead"
        )
    if image.size == (COMPOSITE_SIZE, COMPOSITE_SIZE):
        return image
    return image.resize((COMPOSITE_SIZE, COMPOSITE_SIZE), Image.LANCZOS)


def split_composite(composite: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The reference and test connector images of a composite (its layout's panels)."""
    layout = CompositeLayout(composite.width)
    return composite.crop(layout.crop_box("reference")), composite.crop(layout.crop_box("test"))


def connector_size(size: int = COMPOSITE_SIZE) -> tuple[int, int]:
    """``(width, height)`` of one connector image in a composite of ``size``."""
    conn = CompositeLayout(size).connector
    return conn.width, conn.height
