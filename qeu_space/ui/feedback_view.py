"""The feedback panel's pure parts: a click on the grid edits the corrected answer, and the log
of recent feedback is an HTML table in which every stored text is escaped (shown, never run).

Example:
    >>> toggle_finding("", "C7", "missing pin", None)
    'Defective. 1 defect: C7 missing pin.'
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from qeu_space.feedback import StoredFeedback
from qeu_space.vocabulary import DefectKind, Finding, format_answer, parse_answer


def toggle_finding(text: str, position: str, kind: str, direction: str | None) -> str:
    """Add a finding at ``position`` to the answer ``text``, or remove the one already there."""
    findings = list(parse_answer(text).findings)
    kept = [f for f in findings if str(f.position) != position]
    if len(kept) == len(findings):
        defect = DefectKind.parse(kind)
        kept.append(Finding(position, defect, direction if defect.has_direction else None))
    return format_answer(kept)


def feedback_table(rows: Sequence[StoredFeedback], total: int) -> str:
    """Recent feedback as an HTML table; every stored text is escaped (shown, never run)."""
    if not rows:
        return "<p>No feedback yet.</p>"
    head = "".join(
        f"<th>{h}</th>" for h in ("#", "time (UTC)", "rated", "judged", "answer taught", "comment")
    )
    body = []
    for r in rows:
        cells = (
            str(r.id),
            r.created_at[:19].replace("T", " "),
            r.rated,
            "correct" if r.correct else "wrong",
            r.taught_answer,
            r.comment,
        )
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return (
        f"<p>{total} feedback row(s) stored; the newest {len(rows)}:</p>"
        f'<table class="qeu-feedback"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )
