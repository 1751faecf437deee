"""The shared vocabulary: grid positions, defect kinds, findings, and the two texts models speak.

Every part of the project (renderer, dataset builders, training collators, evaluation, the Space)
talks about a product through :class:`Finding`. The answer text (chat VLMs) and the ``bbox_str``
(Florence-2 ``<OD>``) are the only two ways a finding becomes text, and both are read back here, so
a builder and a metric can never disagree about what a string means.

Example:
    >>> f = Finding("U3", "bent pin", "left")
    >>> format_answer([Finding("C7", "missing pin"), f])
    'Defective. 2 defects: U3 bent pin (left); C7 missing pin.'
    >>> parse_answer("position 7C is missing").findings[0].position.name
    'C7'
    >>> parse_answer("C4 is pushed in").findings[0].describe()
    'C4 short pin'
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import total_ordering
from typing import Literal

ROWS: tuple[str, ...] = ("U", "C", "D")
COLUMNS: tuple[int, ...] = tuple(range(1, 10))
OK_LABEL = "OK"
LOC_BINS = 1000

Box = tuple[float, float, float, float]
Verdict = Literal["passed", "defective"]


@total_ordering
@dataclass(frozen=True)
class Position:
    """One pin site: row ``U``/``C``/``D`` (top to bottom), column 1..9 (left to right)."""

    row: str
    column: int

    def __post_init__(self) -> None:
        if self.row not in ROWS:
            raise ValueError(f"row must be one of {ROWS}, got {self.row!r}")
        if self.column not in COLUMNS:
            raise ValueError(f"column must be 1..9, got {self.column!r}")

    @property
    def name(self) -> str:
        return f"{self.row}{self.column}"

    @property
    def row_index(self) -> int:
        return ROWS.index(self.row)

    def __lt__(self, other: Position) -> bool:
        return (self.row_index, self.column) < (other.row_index, other.column)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str | Position) -> Position:
        """Read ``U1``, ``1U``, ``U-1``, ``u 1`` (whole string); raises ``ValueError`` otherwise."""
        if isinstance(text, Position):
            return text
        found = _find_positions(str(text).strip())
        if len(found) != 1 or found[0][1] != 0 or found[0][2] != len(str(text).strip()):
            raise ValueError(
                f"not a grid position: {text!r} (expected a row U/C/D and a column 1-9, e.g. 'C7')"
            )
        return found[0][0]


ALL_POSITIONS: tuple[Position, ...] = tuple(Position(r, c) for r in ROWS for c in COLUMNS)


class Direction(Enum):
    """Where a bent pin's tip points, in image coordinates (up = towards row U)."""

    UP = "up"
    DOWN = "down"
    LEFT = "left"
    RIGHT = "right"

    @property
    def vector(self) -> tuple[int, int]:
        return {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}[self.value]


class DefectKind(Enum):
    """A defect's name in answers and OD labels; ``label`` is the classification label.

    ``short pin`` is a terminal pushed into the housing (a smaller, darker top face in a shadow
    ring, not displaced): datasets draw it only when asked (``--kinds``, :data:`DEFAULT_KINDS`).
    """

    BENT = "bent pin"
    MISSING = "missing pin"
    SHORT = "short pin"

    @property
    def label(self) -> str:
        return _KIND_LABELS[self]

    @property
    def keyword(self) -> str:
        """The kind's first word (``bent``, ``missing``, ``short``): ``--kinds`` and short marks."""
        return self.value.split()[0]

    @property
    def has_direction(self) -> bool:
        return self is DefectKind.BENT

    @classmethod
    def parse(cls, text: str | DefectKind) -> DefectKind:
        """Read a name (``bent pin``), a label (``BENDNG``) or a keyword (``bent``)."""
        if isinstance(text, DefectKind):
            return text
        key = str(text).strip()
        for kind in cls:
            if key.lower() in (kind.value, kind.keyword) or key.upper() == kind.label:
                return kind
        names = ", ".join(f"{k.value!r}/{k.label!r}" for k in cls)
        raise ValueError(f"unknown defect kind {text!r}; known kinds: {names}")


_KIND_LABELS = {
    DefectKind.BENT: "BENDNG",
    DefectKind.MISSING: "NUKENG",
    DefectKind.SHORT: "SHORTNG",
}
DEFAULT_KINDS: tuple[DefectKind, ...] = (DefectKind.BENT, DefectKind.MISSING)
"""The kinds a dataset shows unless asked for more; the others are opt-in (``--kinds``)."""


def kinds_in_order(kinds: Iterable[DefectKind | str]) -> tuple[DefectKind, ...]:
    """``kinds`` parsed, without repeats, in canonical order (:data:`DEFAULT_KINDS` first).

    Raises:
        ValueError: an unknown kind, or none at all.
    """
    chosen = {DefectKind.parse(k) for k in kinds}
    if not chosen:
        raise ValueError("at least one defect kind is needed")
    default = [k for k in DEFAULT_KINDS if k in chosen]
    return (*default, *(k for k in DefectKind if k in chosen and k not in DEFAULT_KINDS))


def class_labels(kinds: Iterable[DefectKind | str] = DEFAULT_KINDS) -> tuple[str, ...]:
    """Classification labels of a dataset showing ``kinds``: ``OK``, ``BENDNG``, ``NUKENG``, then
    each opt-in kind shown (``SHORTNG``).

    The first three are always there, so a label's id never depends on which kinds are on (the
    shipped three-class ViT reads a ``--kinds bent missing short`` set's ids 0-2 unchanged).
    """
    extra = [k.label for k in kinds_in_order(kinds) if k not in DEFAULT_KINDS]
    return (OK_LABEL, *(k.label for k in DEFAULT_KINDS), *extra)


def od_categories(kinds: Iterable[DefectKind | str] = DEFAULT_KINDS) -> tuple[str, ...]:
    """OD category names of a dataset showing ``kinds`` (canonical order, default kinds first)."""
    return tuple(k.value for k in kinds_in_order(kinds))


CLASS_LABELS: tuple[str, ...] = class_labels()
"""The default (three-class) labels: ``OK``, ``BENDNG``, ``NUKENG``."""


@dataclass(frozen=True)
class Finding:
    """One defect: where, what, which way (bent pins only) and its box in composite pixels.

    Strings are accepted and converted, so ``Finding("C7", "missing pin")`` works. A missing pin
    with a direction is rejected; a bent pin without one means "direction not stated" (a model's
    answer may omit it; rendered truth always has one).
    """

    position: Position
    kind: DefectKind
    direction: Direction | None = None
    box: Box | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", Position.parse(self.position))
        object.__setattr__(self, "kind", DefectKind.parse(self.kind))
        if self.direction is not None and not isinstance(self.direction, Direction):
            object.__setattr__(self, "direction", Direction(str(self.direction).lower()))
        if not self.kind.has_direction and self.direction is not None:
            raise ValueError(f"{self.kind.value} at {self.position} takes no direction")
        if self.box is not None:
            box = tuple(float(v) for v in self.box)
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise ValueError(
                    f"box must be four finite numbers (x1, y1, x2, y2), got {self.box}"
                )
            if box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"box must have x2 > x1 and y2 > y1, got {box}")
            object.__setattr__(self, "box", box)

    @property
    def sort_key(self) -> tuple[int, int, str]:
        return (self.position.row_index, self.position.column, self.kind.value)

    def describe(self) -> str:
        """The finding as the canonical answer writes it: ``U3 bent pin (left)``."""
        text = f"{self.position} {self.kind.value}"
        return f"{text} ({self.direction.value})" if self.direction else text

    def to_dict(self) -> dict:
        """The ``findings`` column's struct: ``{position, kind, direction, box}``."""
        return {
            "position": self.position.name,
            "kind": self.kind.value,
            "direction": self.direction.value if self.direction else None,
            "box": list(self.box) if self.box is not None else None,
        }

    @classmethod
    def from_dict(cls, row: dict) -> Finding:
        return cls(row["position"], row["kind"], row.get("direction"), row.get("box"))


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Canonical order: rows U..D, then columns 1..9."""
    return sorted(findings, key=lambda f: f.sort_key)


def verdict_of(findings: Sequence[Finding]) -> Verdict:
    return "defective" if findings else "passed"


def class_label_of(findings: Sequence[Finding]) -> str:
    """Classification label of one connector: ``OK`` or its defect's label (first in order)."""
    return sort_findings(findings)[0].kind.label if findings else OK_LABEL


# --------------------------------------------------------------------------- answer text

PASSED_ANSWER = "Passed. No defects found."
INSPECTION_QUESTION = (
    "The upper connector is a good reference; the lower one is under inspection. "
    "Compare their pins and name every bent or missing pin of the lower connector by its grid "
    "position (rows U, C, D; columns 1-9)."
)
OD_PROMPT = "<OD>"


def format_answer(findings: Iterable[Finding]) -> str:
    """The canonical answer: ``Passed. No defects found.`` or ``Defective. N defects: ...``."""
    ordered = sort_findings(findings)
    if not ordered:
        return PASSED_ANSWER
    noun = "defect" if len(ordered) == 1 else "defects"
    return f"Defective. {len(ordered)} {noun}: " + "; ".join(f.describe() for f in ordered) + "."


@dataclass(frozen=True)
class ParsedAnswer:
    """What a model's answer says: a verdict (``None`` if it says neither) and its findings."""

    verdict: Verdict | None
    findings: tuple[Finding, ...]
    stated_count: int | None = None

    @property
    def understood(self) -> bool:
        return self.verdict is not None


_ROW_COL = re.compile(r"(?<![a-z0-9])([ucd])[ \t]?[-_]?[ \t]?([1-9])(?![0-9])", re.I)
_COL_ROW = re.compile(r"(?<![a-z0-9])([1-9])[ \t]?[-_]?[ \t]?([ucd])(?![a-z0-9])", re.I)
_ROW_WORD_COL = re.compile(
    r"\brow[ \t]+([ucd])\b[ \t,]*(?:and[ \t]+)?col(?:umn)?[ \t]+([1-9])(?![0-9])", re.I
)
_KIND_WORDS = {
    DefectKind.BENT: re.compile(
        r"\b(bent|bend|bending|bendng|tilted|tilt|crooked|deformed|leaning|leans|displaced)\b", re.I
    ),
    DefectKind.MISSING: re.compile(
        r"\b(missing|absent|nukeng|lacking|lacks|empty|gone|no pin|not present)\b", re.I
    ),
    # conservative: "short" and its forms, "pushed in" (not "pushed" alone, nor "pushed down": a
    # bent pin is pushed aside or down), "recessed", "sunken"; not "in short", nor "low" (the
    # question's "lower connector")
    DefectKind.SHORT: re.compile(
        r"(?<!\bin )\b(short|shorter|shortened|shortng|pushed[- ]in(?:to)?|recessed|sunken|sunk)\b",
        re.I,
    ),
}
_DIRECTION_WORDS = re.compile(
    r"\b(up|upward|upwards|down|downward|downwards|left|leftward|leftwards|right|rightward|rightwards)\b",
    re.I,
)
_PASSED_WORDS = re.compile(
    r"\b(passed|pass|no defects?|no anomal\w*|defect[- ]free|all pins (?:are )?(?:present|ok|good)|"
    r"looks good|is ok|ok)\b",
    re.I,
)
_DEFECTIVE_WORDS = re.compile(r"\b(defective|defects? found|fail(?:ed)?|ng|reject(?:ed)?)\b", re.I)
_COUNT = re.compile(r"\b(\d+)\s+defects?\b", re.I)
_CONJUNCTION = re.compile(r"\b(?:and|also|while|but|plus)\b", re.I)
_CLAUSE_SPLIT = re.compile(r"[;.\n]|,(?!\s*(?:and\s+)?col)")


def _find_positions(text: str) -> list[tuple[Position, int, int]]:
    """All position mentions as ``(position, start, end)``, in text order, overlaps removed."""
    hits: list[tuple[Position, int, int]] = []
    for m in _ROW_WORD_COL.finditer(text):
        hits.append((Position(m.group(1).upper(), int(m.group(2))), m.start(), m.end()))
    for pattern, row_group in ((_ROW_COL, 1), (_COL_ROW, 2)):
        for m in pattern.finditer(text):
            if any(s < m.end() and m.start() < e for _, s, e in hits):
                continue
            row = m.group(row_group).upper()
            col = int(m.group(3 - row_group))
            hits.append((Position(row, col), m.start(), m.end()))
    return sorted(hits, key=lambda h: h[1])


def _clauses(text: str) -> Iterator[str]:
    """Clauses that each name one thing: split at ``;`` ``.`` commas and new lines, and at
    ``and``/``also``/``while``/``but`` where several positions meet several defect words."""
    for clause in _CLAUSE_SPLIT.split(text):
        kinds = sum(len(rx.findall(clause)) for rx in _KIND_WORDS.values())
        if kinds > 1 and len(_find_positions(clause)) > 1:
            yield from _CONJUNCTION.split(clause)
        else:
            yield clause


def _nearest(targets: list[tuple[object, int]], at: int) -> object | None:
    """The target whose offset is closest to ``at`` (ties go to the one after)."""
    if not targets:
        return None
    return min(targets, key=lambda t: (abs(t[1] - at), t[1] < at))[0]


def parse_answer(text: str) -> ParsedAnswer:
    """Read findings from what a model actually says.

    Tolerates other orders and cases, ``position C7``, ``7C``, ``row C column 7`` and extra words.
    Each clause (split at ``;``, ``.``, commas, new lines) pairs its positions with the nearest
    defect word and direction in that clause. Anything unreadable gives no findings, never an error.
    """
    if not isinstance(text, str):
        return ParsedAnswer(None, ())
    findings: dict[tuple[Position, DefectKind], Finding] = {}
    pending: list[Position] = []  # positions whose clause named no kind ("C7:\nmissing")
    undirected: list[tuple[Position, DefectKind]] = []  # bent pins still without a direction
    for clause in _clauses(text):
        positions = [(p, (s + e) // 2) for p, s, e in _find_positions(clause)]
        kinds = [(kind, m.start()) for kind, rx in _KIND_WORDS.items() for m in rx.finditer(clause)]
        directions = [
            (Direction(_direction_root(m.group(1))), m.start())
            for m in _DIRECTION_WORDS.finditer(clause)
        ]
        if not positions and kinds and pending:
            positions, pending = [(p, 0) for p in pending], []
        if not positions:
            if directions and not kinds:  # "U3: bent pin, pointing left"
                for key in undirected:
                    findings[key] = replace(findings[key], direction=directions[0][0])
            undirected = []
            continue
        if not kinds:
            pending = [p for p, _ in positions]
            continue
        pending, undirected = [], []
        for position, at in positions:
            kind = kinds[0][0] if len(kinds) == 1 else _nearest(kinds, at)
            direction = _nearest(directions, at) if kind.has_direction else None
            findings.setdefault((position, kind), Finding(position, kind, direction))
            if kind.has_direction and direction is None:
                undirected.append((position, kind))
    ordered = tuple(sort_findings(findings.values()))
    count = _COUNT.search(text)
    stated = int(count.group(1)) if count else None
    if ordered:
        verdict: Verdict | None = "defective"
    elif _DEFECTIVE_WORDS.search(_strip_negated(text)):
        verdict = "defective"
    elif _PASSED_WORDS.search(text):
        verdict = "passed"
    else:
        verdict = None
    return ParsedAnswer(verdict, ordered, stated)


def _direction_root(word: str) -> str:
    word = word.lower()
    for root in ("up", "down", "left", "right"):
        if word.startswith(root):
            return root
    raise ValueError(word)


def _strip_negated(text: str) -> str:
    """Drop phrases such as 'no defects found' so they do not read as a defective verdict."""
    return re.sub(r"\bno\s+defects?\s+found\b|\bnot\s+defective\b", " ", text, flags=re.I)


# --------------------------------------------------------------------------- bbox_str (Florence-2)


def quantize(coord: float, size: float, bins: int = LOC_BINS) -> int:
    """Florence-2's rule: ``clamp(floor(coord / (size / bins)), 0, bins - 1)``."""
    return int(min(max(math.floor(coord / (size / bins)), 0), bins - 1))


def dequantize(index: int, size: float, bins: int = LOC_BINS) -> float:
    """A bin's centre in pixels, as ``Florence2Processor.post_process_generation`` returns it."""
    return (index + 0.5) * size / bins


def format_bbox_str(findings: Iterable[Finding], image_size: tuple[int, int]) -> str:
    """``bent pin<loc_x1><loc_y1><loc_x2><loc_y2>missing pin<loc_...>`` in canonical order.

    Args:
        findings: findings with boxes in pixels of the image.
        image_size: ``(width, height)`` of that image.
    """
    width, height = image_size
    parts = []
    for f in sort_findings(findings):
        if f.box is None:
            raise ValueError(f"finding {f.describe()} has no box; OD targets need boxes")
        x1, y1, x2, y2 = f.box
        locs = (
            quantize(x1, width),
            quantize(y1, height),
            quantize(x2, width),
            quantize(y2, height),
        )
        parts.append(f.kind.value + "".join(f"<loc_{v}>" for v in locs))
    return "".join(parts)


_BBOX_ITEM = re.compile(r"([^<>]+?)\s*<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>")


def parse_bbox_str(text: str, image_size: tuple[int, int]) -> list[tuple[str, Box]]:
    """Labels and pixel boxes (bin centres) from a ``bbox_str``; junk between items is ignored."""
    width, height = image_size
    out = []
    for m in _BBOX_ITEM.finditer(text.replace("</s>", "").replace("<s>", "")):
        label = m.group(1).strip()
        x1, y1, x2, y2 = (int(m.group(i)) for i in range(2, 6))
        box = (
            dequantize(x1, width),
            dequantize(y1, height),
            dequantize(x2, width),
            dequantize(y2, height),
        )
        out.append((label, box))
    return out
