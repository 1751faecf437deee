"""An inspection is a record: what the server was shown and what its models said, under an id.

``/inspect`` keeps every inspection it answers in an :class:`InspectionLog` (bounded, each record
living ``ttl`` seconds; with a ``path``, also in SQLite beside the feedback store, so that a restart
of the Space forgets none) under an unguessable id, and ``/feedback`` judges *that* record: the
image, the answers and the findings stored with a judgement are the server's own, never what a
client sends back. An id is refused with a message that tells the cases apart: never issued
(unknown, forged), expired (older than the TTL, with its age), or pushed out by newer ones.
Cases the server made itself (gallery samples, generated samples, composed pairs) are
remembered by pixel digest in a :class:`CaseIndex`, so an inspection knows where its image came
from, and whether its truth is the server's, without taking the client's word for it.

Example:
    >>> log = InspectionLog(capacity=256, ttl=3600)
    >>> record = log.add(InspectionRecord.new(image, truth=None, source="upload", ...))
    >>> log.get(record.id).base.text
    'Passed. No defects found.'
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from PIL import Image

from qeu_space.ui.cases import Case
from qeu_space.ui.reading import canonical_findings
from qeu_space.vocabulary import Finding, format_answer

logger = logging.getLogger(__name__)

AnswerStatus = Literal["ok", "unreadable", "empty", "error", "unavailable"]
#: Ids of ended inspections remembered (to say "expired" rather than "unknown").
TOMBSTONES = 100_000


class UnknownInspection(ValueError):
    """An inspection id the server does not hold (never issued, forged, expired or dropped)."""


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
        created: when answered (the log's clock: wall-clock seconds, so it survives a restart).
        adapter: the name of the adapter that gave ``tuned`` (``QEU_ADAPTERS``), ``None`` when
            no adapter is configured.
        truth_source: ``server`` (the server made or recognised the sample: its truth is
            certain), ``user`` (a typed claim about an upload), ``""`` when there is no truth.
        notes: what looked odd about this inspection (panels swapped, models disagreeing with
            SOARTC, ...), one line each.
    """

    id: str
    image: Image.Image = field(repr=False)
    truth: tuple[Finding, ...] | None
    source: str
    base: ModelAnswer
    tuned: ModelAnswer
    created: float
    adapter: str | None = None
    truth_source: str = ""
    notes: tuple[str, ...] = ()

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
        truth_source: str | None = None,
        notes: tuple[str, ...] = (),
    ) -> InspectionRecord:
        """A record with a fresh id (``truth_source`` defaults to ``server`` when a truth is
        given, as the server's own cases are the common case)."""
        if truth_source is None:
            truth_source = "" if truth is None else "server"
        return cls(
            secrets.token_urlsafe(16),
            image,
            truth,
            source,
            base,
            tuned,
            time.time(),
            adapter,
            truth_source,
            tuple(notes),
        )

    def to_json(self) -> str:
        """Everything but the image (stored by digest beside it)."""
        answers = {
            who: {"status": a.status, "text": a.text, "note": a.note,
                  "findings": [f.to_dict() for f in a.findings]}
            for who, a in (("base", self.base), ("tuned", self.tuned))
        }  # fmt: skip
        return json.dumps(
            {
                "truth": None if self.truth is None else [f.to_dict() for f in self.truth],
                "source": self.source,
                "adapter": self.adapter,
                "truth_source": self.truth_source,
                "notes": list(self.notes),
                **answers,
            }
        )

    @classmethod
    def from_json(cls, inspection_id: str, image: Image.Image, created: float, text: str):
        data = json.loads(text)

        def answer(d: dict) -> ModelAnswer:
            found = tuple(Finding.from_dict(f) for f in d["findings"])
            return ModelAnswer(d["status"], d["text"], found, d["note"])

        truth = data["truth"]
        return cls(
            inspection_id,
            image,
            None if truth is None else tuple(Finding.from_dict(f) for f in truth),
            data["source"],
            answer(data["base"]),
            answer(data["tuned"]),
            created,
            data["adapter"],
            data["truth_source"],
            tuple(data["notes"]),
        )

    @property
    def truth_text(self) -> str | None:
        return None if self.truth is None else format_answer(self.truth)


_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS inspections (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    image_sha256 TEXT NOT NULL,
    record TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open',
    ended REAL
);
CREATE INDEX IF NOT EXISTS inspections_state ON inspections (state, created);
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT PRIMARY KEY,
    png BLOB NOT NULL
);
"""


def inspections_path(feedback_db: str | os.PathLike[str]) -> Path:
    """Where the inspections of a Space whose feedback store is ``feedback_db`` are kept:
    ``inspections.sqlite3`` in the same folder (the same persistent storage)."""
    return Path(feedback_db).with_name("inspections.sqlite3")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class InspectionLog:
    """The inspections a feedback may refer to: at most ``capacity``, each for ``ttl`` seconds.

    Thread-safe. The oldest record goes first when full; images of the same pixels are kept
    once (a gallery sample inspected many times costs one copy). With ``path``, every record is
    also committed to that SQLite file (WAL) before ``add`` returns, and a log opened on the same
    file after a restart finds it; ended inspections leave their id behind (the last
    :data:`TOMBSTONES`), so a late id is told "expired", never "unknown".

    Args:
        capacity: inspections kept at most.
        ttl: seconds an inspection can be judged.
        clock: wall-clock seconds (``time.time``; a restart must not reset it).
        path: the SQLite file, or ``None`` to keep records in memory only.
    """

    def __init__(
        self,
        capacity: int = 256,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError(f"capacity must be >= 1 and ttl > 0, got {capacity}, {ttl}")
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._records: OrderedDict[str, tuple[InspectionRecord, str]] = OrderedDict()
        self._images: dict[str, tuple[Image.Image, int]] = {}  # digest -> (image, references)
        self._ended: OrderedDict[str, tuple[str, float, float]] = OrderedDict()  # memory only
        self._lock = threading.Lock()
        self.path = Path(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        self._swept = float("-inf")
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(
                    self.path, timeout=30, isolation_level=None, check_same_thread=False
                )
                self._db.execute("PRAGMA busy_timeout = 30000")
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
                self._db.executescript(_LOG_SCHEMA)
            except (OSError, sqlite3.Error) as err:
                raise OSError(
                    f"cannot open the inspection log {self.path}: {err}; set QEU_FEEDBACK_DB "
                    "to a file in a writable folder"
                ) from None

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            if self._db is not None:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM inspections WHERE state = 'open'"
                ).fetchone()
                return int(row[0])
            return len(self._records)

    def close(self) -> None:
        if self._db is not None:
            with self._lock:
                self._db.close()

    def add(self, record: InspectionRecord) -> InspectionRecord:
        """Keep ``record`` (sharing its image with a kept record of the same pixels)."""
        digest = pixel_digest(record.image)
        png = _png(record.image) if self._db is not None else b""
        with self._lock:
            image, refs = self._images.get(digest, (record.image, 0))
            self._images[digest] = (image, refs + 1)
            kept = replace(record, image=image, created=self._clock())
            self._records[kept.id] = (kept, digest)
            if self._db is not None:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(
                        "INSERT OR IGNORE INTO images (sha256, png) VALUES (?, ?)", (digest, png)
                    )
                    self._db.execute(
                        "INSERT INTO inspections (id, created, image_sha256, record) "
                        "VALUES (?, ?, ?, ?)",
                        (kept.id, kept.created, digest, kept.to_json()),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            while len(self._records) > self.capacity:
                self._drop_oldest("dropped")
            self._expire()
            return kept

    def get(self, inspection_id: str) -> InspectionRecord:
        """The record of ``inspection_id``.

        Raises:
            UnknownInspection: no id, an id never issued (or forged), an expired one, or one
                pushed out by newer inspections; the message says which.
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
            if found is not None:
                return found[0]
            ended = self._ended.get(key)
            if self._db is not None:
                loaded = self._load(key)
                if isinstance(loaded, InspectionRecord):
                    return loaded
                ended = loaded
        if ended is None:
            raise UnknownInspection(
                f"unknown inspection id {key[:40]!r}: this server never issued it (check that "
                "the whole id was copied); inspect the image and judge the answer it returns"
            )
        state, created, _ = ended
        age = max(0.0, self._clock() - created) / 60
        if state == "expired":
            raise UnknownInspection(
                f"inspection id {key[:40]!r} has expired: it was answered {age:.0f} minutes ago "
                f"and inspections can be judged for {self.ttl / 60:g} minutes; inspect the image "
                "again and judge that answer"
            )
        raise UnknownInspection(
            f"inspection id {key[:40]!r} is no longer kept: {self.capacity} newer inspections "
            f"pushed it out ({age:.0f} minutes after it was answered; this server keeps the last "
            f"{self.capacity}); inspect the image again and judge that answer"
        )

    def _load(self, key: str) -> InspectionRecord | tuple[str, float, float] | None:
        """A record another process (or this one before a restart) committed, or its end."""
        row = self._db.execute(
            "SELECT i.created, i.record, i.state, i.ended, im.png FROM inspections i "
            "LEFT JOIN images im ON im.sha256 = i.image_sha256 WHERE i.id = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        created, text, state, ended, png = row
        if state == "open" and self._clock() - created > self.ttl:  # not swept yet
            self._end([key], "expired", {key: created})
            state, ended = "expired", self._clock()
        if state != "open" or png is None:
            return (state if state != "open" else "expired", created, ended or created)
        image = Image.open(io.BytesIO(png))
        image.load()
        record = InspectionRecord.from_json(key, image.convert("RGB"), created, text)
        digest = pixel_digest(record.image)
        shared, refs = self._images.get(digest, (record.image, 0))
        self._images[digest] = (shared, refs + 1)
        record = replace(record, image=shared)
        self._records[key] = (record, digest)
        self._records = OrderedDict(sorted(self._records.items(), key=lambda kv: kv[1][0].created))
        while len(self._records) > self.capacity:
            self._forget_oldest()
        return record

    def _forget_oldest(self) -> None:
        """Drop the oldest record from memory only (it stays open in the database)."""
        _, (_, digest) = self._records.popitem(last=False)
        image, refs = self._images[digest]
        if refs <= 1:
            del self._images[digest]
        else:
            self._images[digest] = (image, refs - 1)

    def _drop_oldest(self, state: str) -> None:
        oldest, (record, _) = next(iter(self._records.items()))
        self._forget_oldest()
        self._end([oldest], state, {oldest: record.created})

    def _end(self, ids: list[str], state: str, created: dict[str, float]) -> None:
        now = self._clock()
        for key in ids:
            self._ended[key] = (state, created[key], now)
        while len(self._ended) > TOMBSTONES:
            self._ended.popitem(last=False)
        if self._db is None or not ids:
            return
        self._db.executemany(
            "UPDATE inspections SET state = ?, ended = ? WHERE id = ? AND state = 'open'",
            [(state, now, key) for key in ids],
        )

    def _expire(self) -> None:
        now = self._clock()
        while self._records:
            oldest, _ = next(iter(self._records.values()))
            if now - oldest.created <= self.ttl:
                break
            self._drop_oldest("expired")
        if self._db is None or now - self._swept < 1.0:  # the database: at most once a second
            return
        self._swept = now
        self._db.execute(
            "UPDATE inspections SET state = 'expired', ended = ? "
            "WHERE state = 'open' AND created < ?",
            (now, now - self.ttl),
        )
        extra = (
            self._db.execute("SELECT COUNT(*) FROM inspections WHERE state = 'open'").fetchone()[0]
            - self.capacity
        )
        if extra > 0:
            self._db.execute(
                "UPDATE inspections SET state = 'dropped', ended = ? WHERE id IN (SELECT id "
                "FROM inspections WHERE state = 'open' ORDER BY created LIMIT ?)",
                (now, extra),
            )
        self._db.execute(
            "DELETE FROM images WHERE sha256 NOT IN "
            "(SELECT image_sha256 FROM inspections WHERE state = 'open')"
        )
        self._db.execute(
            "DELETE FROM inspections WHERE state != 'open' AND id NOT IN (SELECT id FROM "
            "inspections WHERE state != 'open' ORDER BY ended DESC LIMIT ?)",
            (TOMBSTONES,),
        )


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

    def cases(self) -> list[Case]:
        """Every case the server knows now: the gallery, then the recent ones."""
        with self._lock:
            return [*self._gallery.values(), *self._recent.values()]

    def find(self, image: Image.Image) -> Case | None:
        digest = pixel_digest(image)
        with self._lock:
            return self._gallery.get(digest) or self._recent.get(digest)
