"""An answer against the truth: which findings it got, which it invented, which it missed.

Findings match on (position, kind); a matched bent pin whose stated direction differs from the
truth is reported separately, since the position was right.

Example:
    >>> cmp = compare([Finding("C7", "missing pin")], [Finding("C7", "missing pin")])
    >>> cmp.exact
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qeu_space.vocabulary import DefectKind, Finding, format_answer, sort_findings

if TYPE_CHECKING:
    from qeu_space.ui.records import ModelAnswer


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


def comparison_markdown(
    base: ModelAnswer | None,
    tuned: ModelAnswer | None,
    truth: Sequence[Finding] | None,
    *,
    tuned_label: str = "fine-tuned",
) -> str:
    """Base vs fine-tuned, each against the truth when it is known.

    Only a canonical answer is compared; an unreadable or empty one says so (it counts as no
    verdict, not as "passed"), and a model that did not run is left out. ``tuned_label`` names
    the fine-tuned answer (e.g. ``fine-tuned (short-pin)``).
    """
    lines = []
    for name, answer in (("base", base), (tuned_label, tuned)):
        if answer is None or answer.status in ("unavailable", "error"):
            continue
        if answer.status != "ok":
            lines.append(f"**{name}**: {answer.status} answer — no verdict to compare")
            continue
        line = f"**{name}**: reads as *{format_answer(answer.findings)}*"
        if truth is not None:
            line += f" — vs truth: {describe_comparison(compare(truth, answer.findings))}"
        lines.append(line)
    if truth is not None:
        lines.append(f"**truth**: {format_answer(truth)}")
    elif lines:
        lines.append("truth unknown (an upload): boxes show what each model named")
    return "\n\n".join(lines)
