"""An inspection is a record: what the server was shown and what its models said, under an id.

``/inspect`` keeps every inspection it answers in an :class:`InspectionLog` (in memory, bounded,
each record living ``ttl`` seconds) under an unguessable id, and ``/feedback`` judges *that*
record: the image, the answers and the findings stored with a judgement are the server's own,
never what a client sends back. An unknown, forged or expired id is refused with a message that
says what to do. Cases the server made itself (gallery samples, generated samples, composed
pairs) are remembered by pixel digest in a :class:`CaseIndex`, so an inspection knows where its
image came from without taking the client's word for it.

Example:
    >>> log = InspectionLog(capacity=256, ttl=3600)
    >>> record = log.add(InspectionRecord.new(image, truth=None, source="upload", ...))
    >>> log.get(record.id).base.text
    'Passed. No defects found.'
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from PIL import Image

from qeu_space.ui.cases import Case
from qeu_space.ui.reading import canonical_findings
from qeu_space.vocabulary import Finding, format_answer

AnswerStatus = Literal["ok", "unreadable", "empty", "error", "unavailable"]


class UnknownInspection(ValueError):
    """An inspection id the server does not hold (never issued, forged, or expired)."""


def pixel_digest(image: Image.Image) -> str:
    """SHA-256 of an image's size, mode and pixels (the same picture gives the same digest,
    whatever file it came in)."""
    h = hashlib.sha256(f"{image.size}{image.mode}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ModelAnswer:
    """What one model said in an inspection, and whether it is an answer at all.

    Attributes:
        status: ``ok`` (canonical answer), ``unreadable`` (text that is not the canonical form),
            ``empty`` (no text), ``error`` (the model raised) or ``unavailable`` (no model).
        text: the model's raw output (``""`` unless the model ran).
        findings: what an ``ok`` answer says (boxes on the composite's test panel).
        note: why the answer is not ``ok``, one line for its panel.
    """

    status: AnswerStatus
    text: str = ""
    findings: tuple[Finding, ...] = ()
    note: str = ""

    @classmethod
    def from_text(cls, text: str, findings: tuple[Finding, ...], who: str) -> ModelAnswer:
        """Classify a model's output: canonical, unreadable or empty."""
        if not text.strip():
            return cls(
                "empty",
                text,
                note=f"the {who} model gave an empty answer (it generated no text; broken "
                "weights do this)",
            )
        if canonical_findings(text) is None:
            return cls(
                "unreadable",
                text,
                note=f"unreadable answer: the {who} model's output is not the canonical "
                "'Passed. No defects found.' / 'Defective. N defects: ...' form",
            )
        return cls("ok", text, findings)

    @property
    def answered(self) -> bool:
        """The model ran and produced text (a judgement of it can be stored)."""
        return self.status in ("ok", "unreadable")

    @property
    def canonical(self) -> str | None:
        return format_answer(self.findings) if self.status == "ok" else None

    def report(self) -> dict:
        """The API's view of the answer (JSON)."""
        return {
            "status": self.status,
            "text": self.text,
            "answer": self.canonical,
            "findings": [f.to_dict() for f in self.findings],
            "note": self.note,
        }


@dataclass(frozen=True)
class InspectionRecord:
    """One inspection as the server answered it.

    Attributes:
        id: unguessable (128 random bits, URL-safe).
        image: the composite the models read (RGB, the app's composite size).
        truth: the ground truth the answers were compared with, ``None`` when unknown.
        source: where the image came from, as the server knows it (``sample qa-test-...``,
            ``generated seed 7``, ``pair upload``, or ``upload`` for anything else).
        base / tuned: the base and the fine-tuned model's answers.
        created: ``time.monotonic()`` when answered.
        adapter: the name of the adapter that gave ``tuned`` (``QEU_ADAPTERS``), ``None`` when
            no adapter is configured.
    """

    id: str
    image: Image.Image = field(repr=False)
    truth: tuple[Finding, ...] | None
    source: str
    base: ModelAnswer
    tuned: ModelAnswer
    created: float
    adapter: str | None = None

    @classmethod
    def new(
        cls,
        image: Image.Image,
        *,
        truth: tuple[Finding, ...] | None,
        source: str,
        base: ModelAnswer,
        tuned: ModelAnswer,
        adapter: str | None = None,
    ) -> InspectionRecord:
        return cls(
            secrets.token_urlsafe(16), image, truth, source, base, tuned, time.monotonic(), adapter
        )

    @property
    def truth_text(self) -> str | None:
        return None if self.truth is None else format_answer(self.truth)


class InspectionLog:
    """The inspections a feedback may refer to: at most ``capacity``, each for ``ttl`` seconds.

    Thread-safe. The oldest record goes first when full; images of the same pixels are kept
    once (a gallery sample inspected many times costs one copy).
    """

    def __init__(
        self, capacity: int = 256, ttl: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError(f"capacity must be >= 1 and ttl > 0, got {capacity}, {ttl}")
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._records: OrderedDict[str, tuple[InspectionRecord, str]] = OrderedDict()
        self._images: dict[str, tuple[Image.Image, int]] = {}  # digest -> (image, references)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._records)

    def add(self, record: InspectionRecord) -> InspectionRecord:
        """Keep ``record`` (sharing its image with a kept record of the same pixels)."""
        digest = pixel_digest(record.image)
        with self._lock:
            image, refs = self._images.get(digest, (record.image, 0))
            self._images[digest] = (image, refs + 1)
            kept = replace(record, image=image, created=self._clock())
            self._records[kept.id] = (kept, digest)
            while len(self._records) > self.capacity:
                self._drop_oldest()
            self._expire()
            return kept

    def get(self, inspection_id: str) -> InspectionRecord:
        """The record of ``inspection_id``.

        Raises:
            UnknownInspection: no such id (never issued, forged, expired or pushed out).
        """
        key = (inspection_id or "").strip() if isinstance(inspection_id, str) else ""
        if not key:
            raise UnknownInspection(
                "no inspection to judge: press Inspect (or call /inspect) first, then send "
                "feedback with the inspection id it returns"
            )
        with self._lock:
            self._expire()
            found = self._records.get(key)
        if found is None:
            raise UnknownInspection(
                f"unknown or expired inspection id {key[:40]!r}: this server keeps the last "
                f"{self.capacity} inspections for {self.ttl / 60:g} minutes; inspect the image "
                "again and judge that answer"
            )
        return found[0]

    def _drop_oldest(self) -> None:
        _, (_, digest) = self._records.popitem(last=False)
        image, refs = self._images[digest]
        if refs <= 1:
            del self._images[digest]
        else:
            self._images[digest] = (image, refs - 1)

    def _expire(self) -> None:
        now = self._clock()
        while self._records:
            oldest, _ = next(iter(self._records.values()))
            if now - oldest.created <= self.ttl:
                break
            self._drop_oldest()


class CaseIndex:
    """Cases the server made, found again by pixel digest: the gallery for good, plus the last
    ``capacity`` generated or composed ones."""

    def __init__(self, gallery: list[Case] | tuple[Case, ...] = (), capacity: int = 256) -> None:
        self.capacity = capacity
        self._gallery = {pixel_digest(case.composite): case for case in gallery}
        self._recent: OrderedDict[str, Case] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, case: Case) -> Case:
        digest = pixel_digest(case.composite)
        with self._lock:
            self._recent[digest] = case
            self._recent.move_to_end(digest)
            while len(self._recent) > self.capacity:
                self._recent.popitem(last=False)
        return case

    def find(self, image: Image.Image) -> Case | None:
        digest = pixel_digest(image)
        with self._lock:
            return self._gallery.get(digest) or self._recent.get(digest)
