"""Feedback on predictions: a SQLite (WAL) store, optionally mirrored to a Hub dataset.

Every judgement a person gives in the Space (this answer is right or wrong, the corrected answer,
a comment) is kept with the image and both answers, because it is the next training set
(``python -m dataset_tools from-feedback``). SQLite in WAL mode is the source of truth: a row is
either committed whole or absent, readers never block the writer, and a process killed mid-write
leaves every committed row readable. With a feedback repo and a token configured, each row is also
appended to a JSONL file per replica (plus the image as PNG) in a folder that
``huggingface_hub.CommitScheduler`` pushes to a dataset repo every few minutes; the layout
(``data/<replica>/metadata.jsonl`` with ``file_name`` -> ``images/<sha256>.png``) is what the Hub's
``imagefolder`` loader reads.

Example:
    >>> store = FeedbackStore("feedback.sqlite3")
    >>> row_id = store.add(FeedbackEntry(image, "Passed.", "Defective. 1 defect: C7 missing pin.",
    ...                                  rated="fine-tuned", correct=True))
    >>> store.count()
    1
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import sqlite3
import threading
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from qeu_space.vocabulary import format_answer, parse_answer

logger = logging.getLogger(__name__)

#: Which answer a judgement is about.
RATED: tuple[str, ...] = ("fine-tuned", "base")
MAX_COMMENT = 2000
MAX_ANSWER = 2000
#: Files the Hub mirror pushes (everything else in its folder stays local).
MIRROR_PATTERNS = ["*.jsonl", "*.png"]
#: Where a row's truth came from: the server rendered or recognised the sample (certain), or a
#: person typed it (a claim); ``""``: no truth, or a row stored before provenance was recorded.
TRUTH_SOURCES: tuple[str, ...] = ("server", "user", "")
#: What :meth:`FeedbackStore.judge` did with a judgement.
OUTCOMES: tuple[str, ...] = ("stored", "replaced", "unchanged")
#: Bidirectional controls (embeddings, overrides, isolates, marks): they reorder what a reader
#: sees, so a comment could show one text and store another.
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT PRIMARY KEY,
    png BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    replica TEXT NOT NULL,
    image_sha256 TEXT NOT NULL REFERENCES images(sha256),
    base_answer TEXT NOT NULL,
    tuned_answer TEXT NOT NULL,
    rated TEXT NOT NULL,
    correct INTEGER NOT NULL,
    corrected_answer TEXT NOT NULL,
    comment TEXT NOT NULL,
    truth TEXT,
    source TEXT NOT NULL,
    base_model TEXT NOT NULL,
    adapter TEXT NOT NULL,
    inspection_id TEXT NOT NULL DEFAULT '',
    adapter_name TEXT NOT NULL DEFAULT '',
    truth_source TEXT NOT NULL DEFAULT '',
    client TEXT NOT NULL DEFAULT '',
    replaces TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS image_pixels (
    pixels TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL REFERENCES images(sha256)
);
"""
#: Columns added after the first release, with their definitions: an older store gains them.
_ADDED_COLUMNS = {
    "inspection_id": "TEXT NOT NULL DEFAULT ''",
    "adapter_name": "TEXT NOT NULL DEFAULT ''",
    "truth_source": "TEXT NOT NULL DEFAULT ''",
    "client": "TEXT NOT NULL DEFAULT ''",
    "replaces": "TEXT NOT NULL DEFAULT ''",
}
_COLUMNS = (
    "id, uid, created_at, replica, image_sha256, base_answer, tuned_answer, rated, correct, "
    "corrected_answer, comment, truth, source, base_model, adapter, inspection_id, adapter_name, "
    "truth_source, client, replaces"
)
#: One judgement per inspection, rated answer and client: a repeat moves the row it replaces
#: into ``feedback_history`` (same columns, plus when and by which row it was replaced).
_JUDGEMENTS = """
CREATE TABLE IF NOT EXISTS feedback_history AS SELECT * FROM feedback WHERE 0;
CREATE UNIQUE INDEX IF NOT EXISTS one_judgement ON feedback (inspection_id, rated, client)
    WHERE inspection_id != '' AND client != '';
"""
_HISTORY_ADDED = {
    "replaced_at": "TEXT NOT NULL DEFAULT ''",
    "replaced_by": "TEXT NOT NULL DEFAULT ''",
}


def clean_text(text: str) -> str:
    """``text`` without control characters (NUL, ESC, ...; tabs and new lines stay) and without
    bidirectional controls (U+202E and kin), ``\\r\\n`` as ``\\n``, outer white space trimmed.

    Why: a comment is shown in the Space and shipped in a training set; a NUL cuts it short in
    SQLite's ``length()``, an ESC sequence colours a terminal, a right-to-left override shows
    another text than the one stored.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = (
        c
        for c in text
        if c in "\n\t" or (c not in _BIDI and unicodedata.category(c) not in ("Cc", "Cs"))
    )
    return "".join(kept).strip()


def canonical_answer(text: str) -> str:
    """The canonical form of an answer a person typed, or ``ValueError`` if it says no verdict."""
    parsed = parse_answer(text)
    if not parsed.understood:
        raise ValueError(
            f"cannot read the corrected answer {text[:80]!r}: write e.g. 'Passed. No defects "
            "found.' or 'Defective. 1 defect: C7 missing pin.' (or click pins on the grid)"
        )
    return format_answer(parsed.findings)


@dataclass(frozen=True)
class FeedbackEntry:
    """One judgement of one prediction.

    Attributes:
        image: the composite both answers are about.
        base_answer / tuned_answer: what the base and the fine-tuned model said ("" if absent).
        rated: which answer is judged: ``fine-tuned`` or ``base``.
        correct: whether that answer is right.
        corrected_answer: the right answer when it is wrong (any wording the parser reads; stored
            in canonical form); ignored when ``correct``.
        comment: free text, at most :data:`MAX_COMMENT` characters (shown escaped, never as HTML).
        truth: the known truth answer (generated samples), else ``None``.
        source: where the image came from (``sample qa-...``, ``upload``).
        base_model / adapter: which models answered (the adapter's Hub id or folder name).
        inspection_id: the Space's inspection the answers come from (``""`` outside the Space).
        adapter_name: the name the Space gave the adapter that answered ``tuned_answer``
            (``QEU_ADAPTERS``, e.g. ``short-pin``; ``""`` outside the Space or without one).
        truth_source: where ``truth`` came from: ``server`` (the sample was rendered or
            recognised: certain), ``user`` (typed: a claim), ``""`` when there is no truth.
        client: who judged (a keyed hash of the client's address, never the address itself;
            ``""`` outside the Space). With ``inspection_id`` and ``rated`` it names the
            judgement a repeat replaces.

    Comments and corrected answers are stripped of control and bidirectional characters
    (:func:`clean_text`) before the length check.
    """

    image: Image.Image
    base_answer: str
    tuned_answer: str
    rated: str = "fine-tuned"
    correct: bool = True
    corrected_answer: str = ""
    comment: str = ""
    truth: str | None = None
    source: str = ""
    base_model: str = ""
    adapter: str = ""
    inspection_id: str = ""
    adapter_name: str = ""
    truth_source: str = ""
    client: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.image, Image.Image):
            raise ValueError("feedback needs the image the answers are about")
        for name in (
            "base_answer", "tuned_answer", "corrected_answer", "comment", "source",
            "base_model", "adapter", "inspection_id", "adapter_name", "truth_source", "client",
        ):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ValueError(f"{name} must be text, got {type(value).__name__}")
        if self.truth is not None and not isinstance(self.truth, str):
            raise ValueError(f"truth must be text or None, got {type(self.truth).__name__}")
        if self.truth_source not in TRUTH_SOURCES:
            raise ValueError(f"truth_source must be 'server' or 'user', got {self.truth_source!r}")
        if self.truth is None and self.truth_source:
            raise ValueError("a truth source without a truth: give the truth or no source")
        object.__setattr__(self, "comment", clean_text(self.comment))
        object.__setattr__(self, "corrected_answer", clean_text(self.corrected_answer))
        if self.rated not in RATED:
            raise ValueError(f"rated must be one of {RATED}, got {self.rated!r}")
        if not self.rated_answer.strip():
            raise ValueError(
                f"the {self.rated} answer is empty: inspect the image first, then judge its answer"
            )
        if len(self.comment) > MAX_COMMENT:
            raise ValueError(
                f"the comment is {len(self.comment)} characters; at most {MAX_COMMENT} are kept"
            )
        for name in ("base_answer", "tuned_answer", "corrected_answer"):
            if len(getattr(self, name)) > MAX_ANSWER:
                raise ValueError(f"{name} is longer than {MAX_ANSWER} characters")
        if not self.correct:
            if not self.corrected_answer.strip():
                raise ValueError(
                    "a wrong answer needs the corrected answer (type it or click the pins)"
                )
            object.__setattr__(self, "corrected_answer", canonical_answer(self.corrected_answer))
        else:
            object.__setattr__(self, "corrected_answer", "")
        object.__setattr__(self, "correct", bool(self.correct))

    @property
    def rated_answer(self) -> str:
        return self.tuned_answer if self.rated == "fine-tuned" else self.base_answer


@dataclass(frozen=True)
class StoredFeedback:
    """A committed row (without its image bytes: :meth:`FeedbackStore.image` reads them)."""

    id: int
    uid: str
    created_at: str
    replica: str
    image_sha256: str
    base_answer: str
    tuned_answer: str
    rated: str
    correct: bool
    corrected_answer: str
    comment: str
    truth: str | None
    source: str
    base_model: str
    adapter: str
    inspection_id: str = ""
    adapter_name: str = ""
    truth_source: str = ""
    client: str = ""
    replaces: str = ""

    @property
    def rated_answer(self) -> str:
        return self.tuned_answer if self.rated == "fine-tuned" else self.base_answer

    @property
    def taught_answer(self) -> str:
        """The answer this feedback teaches: the correction, or the rated answer judged right."""
        return self.rated_answer if self.correct else self.corrected_answer

    def to_json(self) -> dict[str, Any]:
        """The JSONL record of the Hub mirror (``file_name`` is the image beside it)."""
        return {
            "file_name": f"images/{self.image_sha256}.png",
            "uid": self.uid,
            "created_at": self.created_at,
            "replica": self.replica,
            "base_answer": self.base_answer,
            "tuned_answer": self.tuned_answer,
            "rated": self.rated,
            "correct": self.correct,
            "corrected_answer": self.corrected_answer,
            "comment": self.comment,
            "truth": self.truth,
            "source": self.source,
            "base_model": self.base_model,
            "adapter": self.adapter,
            "inspection_id": self.inspection_id,
            "adapter_name": self.adapter_name,
            "truth_source": self.truth_source,
            "client": self.client,
            "replaces": self.replaces,
        }


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def default_db_path() -> Path:
    """``/data/qeu-feedback/feedback.sqlite3`` on a Space with persistent storage, else the
    user cache (``$XDG_CACHE_HOME`` or ``~/.cache``)``/qeu-space/feedback.sqlite3``."""
    data = Path("/data")
    if data.is_dir() and os.access(data, os.W_OK):
        return data / "qeu-feedback" / "feedback.sqlite3"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "qeu-space" / "feedback.sqlite3"


class FeedbackStore:
    """Append-only feedback rows in one SQLite file (WAL, ``synchronous=FULL``).

    One connection per store, guarded by a lock: SQLite writes one transaction at a time anyway,
    and other processes on the same file wait up to ``timeout`` seconds for the write lock.

    Args:
        path: the database file (its folder is created).
        replica: name of this writer in the Hub mirror's file names (default: a fresh id).
        mirror: a :class:`HubMirror` to append every committed row to, or ``None``.
        timeout: seconds to wait for another process's write lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        replica: str | None = None,
        mirror: HubMirror | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.replica = replica or uuid.uuid4().hex[:12]
        self.mirror = mirror
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.executescript(_SCHEMA)
            self._add_missing_columns()
            self._conn.executescript(_JUDGEMENTS)
            self._add_missing_columns("feedback_history", {**_ADDED_COLUMNS, **_HISTORY_ADDED})
        except (OSError, sqlite3.Error) as err:
            raise OSError(
                f"cannot open the feedback store {self.path}: {err}; set QEU_FEEDBACK_DB to a "
                "writable file"
            ) from None

    def __repr__(self) -> str:
        return f"FeedbackStore({str(self.path)!r}, replica={self.replica!r})"

    def _add_missing_columns(
        self, table: str = "feedback", columns: dict[str, str] = _ADDED_COLUMNS
    ) -> None:
        """A store written by an older version gains the columns added since (no row lost)."""
        have = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
        for name, definition in columns.items():
            if name not in have:
                try:
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
                except sqlite3.OperationalError:  # another process added it first
                    pass

    def client_key(self, address: str) -> str:
        """A stable, unguessable name for a client address (HMAC with this store's own secret):
        judgements and rate limits follow a client, and no address is ever stored or pushed."""
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('client_secret', ?)",
                (uuid.uuid4().hex + uuid.uuid4().hex,),
            )
            secret = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'client_secret'"
            ).fetchone()[0]
        return hmac.new(secret.encode(), address.encode(), hashlib.sha256).hexdigest()[:20]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def add(self, entry: FeedbackEntry) -> StoredFeedback:
        """Commit one row (image stored once per content hash); then mirror it if configured.

        A judgement of an inspection (``inspection_id`` and ``client`` given) replaces the same
        client's earlier judgement of the same answer (see :meth:`judge`)."""
        return self.judge(entry)[0]

    def judge(self, entry: FeedbackEntry) -> tuple[StoredFeedback, str]:
        """Commit ``entry`` as the judgement of (inspection, rated answer, client).

        Returns the row that now stands and what happened: ``stored`` (a first judgement),
        ``replaced`` (the earlier one moved to ``feedback_history``) or ``unchanged`` (the same
        verdict, correction and comment again: nothing written).
        """
        png, sha, pixels = self._encoded(entry.image)
        uid = uuid.uuid4().hex
        created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        values = (
            uid,
            created,
            self.replica,
            sha,
            entry.base_answer,
            entry.tuned_answer,
            entry.rated,
            int(entry.correct),
            entry.corrected_answer,
            entry.comment,
            entry.truth,
            entry.source,
            entry.base_model,
            entry.adapter,
            entry.inspection_id,
            entry.adapter_name,
            entry.truth_source,
            entry.client,
            "",
        )
        keyed = bool(entry.inspection_id and entry.client)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                earlier = None
                if keyed:
                    earlier = self._conn.execute(
                        f"SELECT {_COLUMNS} FROM feedback WHERE inspection_id = ? AND rated = ? "
                        "AND client = ?",
                        (entry.inspection_id, entry.rated, entry.client),
                    ).fetchone()
                if earlier is not None and (bool(earlier[8]), earlier[9], earlier[10]) == (
                    entry.correct,
                    entry.corrected_answer,
                    entry.comment,
                ):
                    self._conn.execute("COMMIT")
                    return _row(earlier), "unchanged"
                if earlier is not None:
                    values = (*values[:-1], earlier[1])
                    self._conn.execute(
                        f"INSERT INTO feedback_history ({_COLUMNS}, replaced_at, replaced_by) "
                        f"SELECT {_COLUMNS}, ?, ? FROM feedback WHERE id = ?",
                        (created, uid, earlier[0]),
                    )
                    self._conn.execute("DELETE FROM feedback WHERE id = ?", (earlier[0],))
                if png is not None:
                    self._conn.execute(
                        "INSERT OR IGNORE INTO images (sha256, png) VALUES (?, ?)", (sha, png)
                    )
                    self._conn.execute(
                        "INSERT OR IGNORE INTO image_pixels (pixels, sha256) VALUES (?, ?)",
                        (pixels, sha),
                    )
                cursor = self._conn.execute(
                    f"INSERT INTO feedback ({_COLUMNS.removeprefix('id, ')}) "
                    f"VALUES ({', '.join('?' * len(values))})",
                    values,
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        stored = StoredFeedback(cursor.lastrowid, *values[:7], entry.correct, *values[8:])
        outcome = "replaced" if earlier is not None else "stored"
        if self.mirror is not None:
            try:
                self.mirror.append(stored, png if png is not None else self._png(sha))
            except OSError as err:  # the row is safe in SQLite; the mirror catches up never
                logger.warning("feedback %s not mirrored for the Hub: %s", stored.uid, err)
        return stored, outcome

    def _encoded(self, image: Image.Image) -> tuple[bytes | None, str, str]:
        """``(png, sha256 of the png, pixel digest)``; ``png`` is ``None`` when an image of the
        same pixels is stored already (its PNG is not encoded again: 50-200 ms a composite, the
        bulk of a judgement's CPU time)."""
        rgb = image.convert("RGB")
        h = hashlib.sha256(f"{rgb.size}".encode())
        h.update(rgb.tobytes())
        pixels = h.hexdigest()
        with self._lock:
            found = self._conn.execute(
                "SELECT sha256 FROM image_pixels WHERE pixels = ?", (pixels,)
            ).fetchone()
        if found is not None:
            return None, found[0], pixels
        png = png_bytes(rgb)
        return png, hashlib.sha256(png).hexdigest(), pixels

    def _png(self, sha256: str) -> bytes:
        with self._lock:
            return self._conn.execute(
                "SELECT png FROM images WHERE sha256 = ?", (sha256,)
            ).fetchone()[0]

    def count(self) -> int:
        """Judgements standing (replaced ones are in :meth:`history`)."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def history(self) -> list[tuple[StoredFeedback, str, str]]:
        """Replaced judgements, oldest first, each with when and by which row's uid."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS}, replaced_at, replaced_by FROM feedback_history "
                "ORDER BY replaced_at"
            ).fetchall()
        return [(_row(r[:-2]), r[-2], r[-1]) for r in rows]

    def recent(self, limit: int = 20) -> list[StoredFeedback]:
        """The newest rows first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM feedback ORDER BY id DESC LIMIT ?", (int(limit),)
            ).fetchall()
        return [_row(r) for r in rows]

    def rows(self) -> Iterator[StoredFeedback]:
        """Every row, oldest first (read in pages, so a large store is not loaded at once)."""
        last = 0
        while True:
            with self._lock:
                page = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM feedback WHERE id > ? ORDER BY id LIMIT 500", (last,)
                ).fetchall()
            if not page:
                return
            yield from (_row(r) for r in page)
            last = page[-1][0]

    def image(self, sha256: str) -> Image.Image:
        with self._lock:
            found = self._conn.execute(
                "SELECT png FROM images WHERE sha256 = ?", (sha256,)
            ).fetchone()
        if found is None:
            raise KeyError(f"no image {sha256} in {self.path}")
        image = Image.open(io.BytesIO(found[0]))
        image.load()
        return image

    def integrity(self) -> str:
        """SQLite's own ``PRAGMA integrity_check`` (``"ok"`` for a sound file)."""
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])


def _row(values: tuple) -> StoredFeedback:
    values = list(values)
    values[8] = bool(values[8])
    return StoredFeedback(*values)


def open_store(path: str | os.PathLike[str]) -> FeedbackStore:
    """Open an existing store (refuses a path with no database instead of making an empty one)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no feedback store at {path} (QEU_FEEDBACK_DB of the Space)")
    return FeedbackStore(path)


# --------------------------------------------------------------------------- Hub mirror


@dataclass
class HubMirror:
    """Append committed rows to ``folder/<replica>/metadata.jsonl`` (+ ``images/``) and let a
    ``CommitScheduler`` push the folder to ``repo_id`` (``data/`` in the repo) every ``every``
    minutes. Create it with :meth:`start`, which makes the repo (private) if needed."""

    folder: Path
    scheduler: Any = field(repr=False)

    @classmethod
    def start(
        cls,
        repo_id: str,
        folder: str | os.PathLike[str],
        *,
        token: str,
        every: float = 5.0,
        endpoint: str | None = None,
    ) -> HubMirror:
        """Start pushing; raises ``HubError`` (one line, no token) when the Hub refuses."""
        from huggingface_hub import CommitScheduler, HfApi
        from huggingface_hub.errors import HfHubHTTPError

        from qeu_space.hub.upload import HubError, check_repo_id, resolve_endpoint

        check_repo_id(repo_id)
        api = HfApi(endpoint=resolve_endpoint(endpoint), token=token)
        try:
            scheduler = CommitScheduler(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=folder,
                path_in_repo="data",
                every=every,
                private=True,
                token=token,
                allow_patterns=MIRROR_PATTERNS,
                hf_api=api,
            )
        except (HfHubHTTPError, OSError) as err:
            status = getattr(getattr(err, "response", None), "status_code", None)
            reason = f"HTTP {status}" if status else type(err).__name__
            raise HubError(
                f"cannot push feedback to dataset {repo_id} ({reason}); check QEU_FEEDBACK_REPO "
                "and the token's write access (feedback is still stored locally)"
            ) from None
        return cls(Path(folder), scheduler)

    def append(self, row: StoredFeedback, png: bytes) -> None:
        """Write the row's JSON line and its image (once per content hash) under the lock."""
        replica = self.folder / row.replica
        image_path = replica / "images" / f"{row.image_sha256}.png"
        with self.scheduler.lock:
            image_path.parent.mkdir(parents=True, exist_ok=True)
            if not image_path.exists():
                partial = image_path.with_suffix(".partial")
                partial.write_bytes(png)
                os.replace(partial, image_path)
            with open(replica / "metadata.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")

    def push_now(self) -> None:
        """Push what is pending and wait for it (tests, shutdown)."""
        self.scheduler.trigger().result()

    def stop(self) -> None:
        self.scheduler.stop()
