"""Reading texts strictly: what a person types, and whether a model's answer is canonical.

The vocabulary's :func:`~qeu_space.vocabulary.parse_answer` reads whatever a model says as well as
it can and never fails: right for scoring free text, wrong for what the Space *stores* or
*compares against*. Read leniently, a typed truth ``Defective. 1 defect: Z9 exploded pin.`` has no
finding and compares as "Passed", and ``C7 missing pin; Z9 missing pin`` silently loses Z9. Here
every part of a typed text must be understood, or a :class:`ReadError` names the part that is
wrong; and a model's answer counts as an answer only in the canonical form the models were taught
(``Passed. No defects found.`` / ``Defective. N defects: <finding>; <finding>.``), anything else is
an *unreadable answer*.

Typed texts may be the canonical answer or just the findings, separated by ``;``, ``,`` or new
lines: ``U3 bent pin (left); C7 missing pin``. A position is a row ``U``/``C``/``D`` and a column
``1``-``9`` in either order (``C7``, ``7C``, ``c-7``); a kind is ``bent pin`` / ``bent`` /
``BENDNG`` (with a direction ``up``/``down``/``left``/``right``, in brackets or not),
``missing pin`` / ``missing`` / ``NUKENG`` or ``short pin`` / ``short`` / ``SHORTNG``: every kind
of the vocabulary (:class:`~qeu_space.vocabulary.DefectKind`), by its name, keyword or label
(and ``pushed in`` for a short pin: ``the pin at D6 is pushed in`` reads as ``D6 short pin``).

Example:
    >>> read_findings("U3 bent pin (left); C7 missing pin", what="defects")
    (Finding(position=Position(row='U', column=3), ...), Finding(...C7...))
    >>> read_findings("Z9 missing pin", what="ground truth")
    Traceback (most recent call last):
    ReadError: the ground truth names an unknown position 'Z9' in 'Z9 missing pin': ...
    >>> canonical_findings("Passed. No defects found found found.") is None
    True
"""

from __future__ import annotations

import re

from qeu_space.vocabulary import (
    COLUMNS,
    PASSED_ANSWER,
    ROWS,
    DefectKind,
    Direction,
    Finding,
    Position,
    format_answer,
    sort_findings,
)


class ReadError(ValueError):
    """A typed text that cannot be read; the message names the part that is wrong."""


_PASSED = re.compile(
    r"^(?:passed\.?\s*(?:no defects?(?: found)?\.?)?|no defects?(?: found)?\.?|ok\.?|none\.?)$",
    re.I,
)
_HEADER = re.compile(r"^defective\b\.?\s*(?:(\d+)\s+defects?\s*:?)?\s*", re.I)
_ITEM = re.compile(
    r"^(?:the\s+)?(?:pin\s+)?(?:at\s+)?(?:position\s+)?"
    r"(?P<pos>[a-z][ \t]?-?[ \t]?\d+|\d+[ \t]?-?[ \t]?[a-z](?![a-z]))"
    r"(?P<rest>.*)$",
    re.I,
)
_DIRECTION = re.compile(r"\(?\s*\b(up|down|left|right)\b\s*\)?\s*$", re.I)
_KIND_NAMES = {
    name: kind for kind in DefectKind for name in (kind.value, kind.keyword, kind.label.lower())
} | {
    "pushed in": DefectKind.SHORT,
    "pushed in pin": DefectKind.SHORT,
    "pushed-in pin": DefectKind.SHORT,
}
KNOWN_KINDS = ", ".join(
    kind.value + (" (with a direction: up, down, left or right)" if kind.has_direction else "")
    for kind in DefectKind
)


def _position(token: str, item: str, what: str) -> Position:
    letters = re.sub(r"[\s\-]", "", token).upper()
    row = next(c for c in letters if c.isalpha())
    digits = "".join(c for c in letters if c.isdigit())
    if row not in ROWS or not digits.isdigit() or int(digits) not in COLUMNS:
        raise ReadError(
            f"the {what} names an unknown position {token.strip()!r} in {item!r}: rows are "
            f"{', '.join(ROWS)} and columns {COLUMNS[0]}-{COLUMNS[-1]} (e.g. C7)"
        )
    return Position(row, int(digits))


def _item(item: str, what: str, require_direction: bool) -> Finding:
    """One typed finding: position, kind, direction (bent pins)."""
    found = _ITEM.match(item)
    if found is None:
        raise ReadError(
            f"the {what} has {item!r}, which names no pin position: start each defect with its "
            "position, e.g. 'C7 missing pin'"
        )
    position = _position(found["pos"], item, what)
    rest = re.sub(r"^(?:pin\s+)?(?:is|was)\s+", "", found["rest"].strip(" \t:-"), flags=re.I)
    direction = None
    turned = _DIRECTION.search(rest)
    if turned:
        direction = Direction(turned[1].lower())
        rest = rest[: turned.start()].strip(" \t,")
    kind = _KIND_NAMES.get(re.sub(r"\s+", " ", rest).lower())
    if kind is None:
        named = f"{rest!r}" if rest else "no defect kind"
        raise ReadError(
            f"the {what} has {named} for {position} in {item!r}: known kinds are {KNOWN_KINDS}"
        )
    if not kind.has_direction and direction is not None:
        raise ReadError(f"the {what} gives a {kind.value} a direction in {item!r}: leave it out")
    if kind is DefectKind.BENT and direction is None and require_direction:
        raise ReadError(
            f"the bent pin at {position} in the {what} needs a direction: write "
            f"'{position} bent pin (up|down|left|right)'"
        )
    return Finding(position, kind, direction)


def read_findings(
    text: str, *, what: str = "answer", require_direction: bool = False
) -> tuple[Finding, ...]:
    """Every finding a person typed, in canonical order; ``()`` for a passed product.

    Args:
        text: the canonical answer, or findings separated by ``;``, ``,`` or new lines, or
            ``Passed`` (empty text is the caller's business: it means different things).
        what: how messages name the text (``"ground truth"``, ``"corrected answer"``).
        require_direction: a bent pin must say which way it is bent.

    Raises:
        ReadError: a part that names no position, an unknown position or kind, a direction on a
            missing pin, a position named twice, or a stated count that differs from the list.
    """
    body = " ".join(text.split())
    if not body:
        raise ReadError(f"the {what} is empty: write e.g. 'C7 missing pin' or 'Passed'")
    if _PASSED.match(body):
        return ()
    stated = None
    header = _HEADER.match(body)
    if header:
        stated = int(header[1]) if header[1] else None
        body = body[header.end() :]
        if not body.strip(" .;,"):
            raise ReadError(
                f"the {what} says Defective but names no defect: add them, e.g. "
                "'Defective. 1 defect: C7 missing pin.'"
            )
    elif body.lower().startswith("passed"):
        raise ReadError(
            f"the {what} starts with Passed and then says more ({text.strip()[:80]!r}): write "
            "'Passed' alone, or list the defects"
        )
    items = [part.strip(" .") for part in re.split(r"[;,\n]", body.rstrip(". "))]
    findings = [_item(item, what, require_direction) for item in items if item]
    seen: set[Position] = set()
    for f in findings:
        if f.position in seen:
            raise ReadError(f"the {what} names {f.position} twice: one finding per pin")
        seen.add(f.position)
    if stated is not None and stated != len(findings):
        raise ReadError(
            f"the {what} says {stated} defect{'s' if stated != 1 else ''} but lists "
            f"{len(findings)}: make the count match the list"
        )
    return tuple(sort_findings(findings))


_CANONICAL_ITEM = re.compile(
    rf"^(?P<pos>[UCD][1-9]) (?P<kind>{'|'.join(k.value for k in DefectKind)})"
    r"(?: \((?P<dir>up|down|left|right)\))?$"
)
_CANONICAL = re.compile(r"^Defective\. (?P<n>[1-9]\d*) (?P<noun>defects?): (?P<items>.+)\.$")


def canonical_findings(text: str) -> tuple[Finding, ...] | None:
    """The findings of an answer in the canonical form, or ``None`` if it is not in that form.

    Canonical: ``Passed. No defects found.`` or ``Defective. N defect(s): item; item.`` with each
    item ``<position> bent pin (<direction>)``, ``<position> missing pin`` or ``<position> short
    pin``, ``N`` equal to the number of items, no pin twice (in any order; surrounding white space
    is ignored). A repeated word, a count that differs from the list, a direction on a kind that
    has none, or extra text make the answer unreadable: a degenerate generation must not pass for
    a verdict.
    """
    body = text.strip() if isinstance(text, str) else ""
    if body == PASSED_ANSWER:
        return ()
    found = _CANONICAL.match(body)
    if found is None:
        return None
    items = found["items"].split("; ")
    findings = []
    for item in items:
        part = _CANONICAL_ITEM.match(item)
        if part is None:
            return None
        if not DefectKind.parse(part["kind"]).has_direction and part["dir"] is not None:
            return None
        findings.append(Finding(part["pos"], part["kind"], part["dir"]))
    if int(found["n"]) != len(findings) or len({f.position for f in findings}) != len(findings):
        return None
    if found["noun"] != ("defect" if len(findings) == 1 else "defects"):
        return None
    return tuple(sort_findings(findings))


def canonical_text(findings: tuple[Finding, ...]) -> str:
    """The canonical answer for ``findings`` (what a typed text is stored as)."""
    return format_answer(findings)
