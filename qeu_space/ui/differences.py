"""Where an adapter and the base disagree: generated samples answered by both, with the truth.

A visitor choosing an adapter wants to see at once what it changed. :class:`Differences` answers
a fixed list of generated test-split samples (``QEU_DIFF_SAMPLES``, the gallery's first) with the
base once and with each adapter once, when that adapter is first asked about (the models are
called in chunks, so a progress bar can follow and inspections are not held up for long), keeps
the answers, and lists the samples on which the two answers differ. Two answers differ when
their canonical findings differ, or, for an answer that is not canonical, when its status or
text differs.

The answers come from an ``answer(images, adapter)`` function (the Space's: one chat VLM call
per image under the model lock), so this module runs no model itself.

Example:
    >>> differences = Differences(cases, answer)
    >>> view = differences.view("short-pin")
    >>> print(view.markdown())
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from qeu_space.ui.cases import Case, short_truth
from qeu_space.ui.comparison import compare
from qeu_space.ui.records import ModelAnswer
from qeu_space.vocabulary import format_answer

#: ``answer(images, adapter)``: one answer per image; ``adapter=None`` is the base.
AnswerFn = Callable[[Sequence[Image.Image], str | None], list[ModelAnswer]]
#: Images per model call while answering the list (the progress bar moves between calls).
CHUNK = 4
#: Characters of a non-canonical answer shown in the table.
RAW_CHARS = 40


def said(answer: ModelAnswer) -> str:
    """What an answer says, for comparing two: canonical findings, else status and text."""
    if answer.status == "ok":
        return answer.canonical or ""
    return f"{answer.status}: {answer.text.strip()}"


def right(answer: ModelAnswer, case: Case) -> bool | None:
    """Whether ``answer`` matches the case's truth (position, kind, direction), ``None`` when the
    truth is unknown."""
    if case.truth is None:
        return None
    return answer.status == "ok" and compare(case.truth, answer.findings).exact


def _cell(answer: ModelAnswer) -> str:
    """An answer in a Markdown table cell: canonical text, or its status and the start of its raw
    text (escaped, so no model output can break the table or make an element)."""
    if answer.status == "ok":
        text = said(answer)
    else:
        raw = " ".join(answer.text.split())  # one line: a newline would end the table row
        text = answer.status + (
            f': "{raw[:RAW_CHARS]}{"…" if len(raw) > RAW_CHARS else ""}"' if raw else ""
        )
    return html.escape(text).replace("|", "&#124;").replace("`", "&#96;").replace("*", "&#42;")


@dataclass(frozen=True)
class Difference:
    """One sample on which the base and the adapter disagree."""

    index: int
    case: Case
    base: ModelAnswer
    tuned: ModelAnswer

    def caption(self) -> str:
        marks = {True: "✓", False: "✗", None: "?"}
        return (
            f"#{self.index + 1} {short_truth(self.case.truth or ())} · base "
            f"{marks[right(self.base, self.case)]} · adapter {marks[right(self.tuned, self.case)]}"
        )


@dataclass(frozen=True)
class DifferenceView:
    """The samples ``adapter`` and the base disagree on, out of ``samples`` answered by both."""

    adapter: str
    samples: int
    differences: tuple[Difference, ...]

    def gallery(self) -> list[tuple[Image.Image, str]]:
        return [(d.case.composite, d.caption()) for d in self.differences]

    def markdown(self) -> str:
        """A summary line and one table row per disagreement (answers escaped)."""
        name = f"`{self.adapter}`"
        if not self.differences:
            return (
                f"{name} and the base give the same answer on all {self.samples} generated samples."
            )
        tuned_right = sum(bool(right(d.tuned, d.case)) for d in self.differences)
        base_right = sum(bool(right(d.base, d.case)) for d in self.differences)
        lines = [
            f"{name} and the base disagree on **{len(self.differences)} of {self.samples}** "
            f"generated test samples; on those, {name} matches the truth **{tuned_right}** "
            f"time(s), the base **{base_right}**. Pick a sample to inspect it.",
            "",
            f"| # | truth | base | {name} |",
            "|---:|---|---|---|",
        ]
        for d in self.differences:
            truth = "unknown" if d.case.truth is None else format_answer(d.case.truth)
            cells = [str(d.index + 1), truth]
            for answer in (d.base, d.tuned):
                mark = {True: "✓ ", False: "✗ ", None: ""}[right(answer, d.case)]
                cells.append(mark + _cell(answer))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


class Differences:
    """Base and adapter answers on a fixed list of cases, computed on first use and kept.

    Thread-safe: one computation at a time; a second visitor asking for the same adapter waits
    for the first and gets the kept answers.
    """

    def __init__(self, cases: Sequence[Case], answer: AnswerFn) -> None:
        self.cases = tuple(cases)
        self._answer = answer
        self._answers: dict[str | None, list[ModelAnswer]] = {}
        self._lock = threading.Lock()

    def cached(self, adapter: str) -> bool:
        """Whether ``adapter``'s (and the base's) answers are kept already."""
        return None in self._answers and adapter in self._answers

    def view(
        self, adapter: str, progress: Callable[[float, str], object] = lambda f, d: None
    ) -> DifferenceView:
        """The samples ``adapter`` and the base disagree on (answering what is not kept yet).

        ``progress(fraction, description)`` follows the model calls.
        """
        with self._lock:
            todo = [name for name in (None, adapter) if name not in self._answers]
            total = len(todo) * len(self.cases)
            done = 0
            for name in todo:
                who = "base" if name is None else f"adapter {name}"
                answers: list[ModelAnswer] = []
                for start in range(0, len(self.cases), CHUNK):
                    progress(done / max(total, 1), f"{who}: sample {start + 1}/{len(self.cases)}")
                    chunk = [c.composite for c in self.cases[start : start + CHUNK]]
                    answers += self._answer(chunk, name)
                    done += len(chunk)
                self._answers[name] = answers
            progress(1.0, "done")
            base, tuned = self._answers[None], self._answers[adapter]
        found = tuple(
            Difference(i, case, b, t)
            for i, (case, b, t) in enumerate(zip(self.cases, base, tuned, strict=True))
            if said(b) != said(t)
        )
        return DifferenceView(adapter, len(self.cases), found)
