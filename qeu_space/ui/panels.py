"""The Inspect tab's panels, filled from one inspection or emptied when the composite changes.

:class:`Panels` has one field per output component of the browser's Inspect event, in the order
:mod:`qeu_space.ui.layout` wires them (it builds its output list from these fields), so a panel can
be neither forgotten when clearing nor filled from another inspection than the one kept for
feedback.

Example:
    >>> Panels.of(inspection, app.corrected_start).values()    # after Inspect
    >>> Panels.empty().values()                                # a new composite was chosen
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from PIL import Image

from qeu_space.ui.comparison import comparison_markdown
from qeu_space.ui.drawing import mark_findings
from qeu_space.ui.records import InspectionRecord, ModelAnswer
from qeu_space.vocabulary import OK_LABEL, DefectKind, format_answer


def vit_legend(labels: tuple[str, ...] | None = None, *, pair: bool = False) -> str:
    """The ViT's classes explained; a defect kind the loaded ViT has no class for is named, so a
    short pin read as ``NUKENG`` by a three-class ViT is not a surprise. ``pair``: the ViT
    compares the test with the reference (6 channels) rather than reading the test alone."""
    kinds = list(DefectKind)
    shown = [k for k in kinds if labels is None or k.label in labels]
    text = " · ".join([f"**{OK_LABEL}**: no defect"] + [f"**{k.label}**: {k.value}" for k in shown])
    text += (
        " (the ViT compares the lower, test product with the reference, pin by pin)"
        if pair
        else " (the ViT classifies the lower, test product alone)"
    )
    missing = [k.value for k in kinds if k not in shown]
    if missing:
        text += f"; it has no class for a {' or '.join(missing)}: it reads one as another class"
    return text


NOT_INSPECTED = "*Not inspected yet: press **Inspect**.*"
NOTHING_TO_JUDGE = (
    "Nothing to judge yet: **Inspect** a composite first. Feedback is stored with the inspected "
    "image and the answers the models gave it."
)
RAW_SHOWN = 4000
TUNED_TITLE = "**Fine-tuned answer**"


def tuned_title(adapter: str | None) -> str:
    """The fine-tuned panel's heading: which adapter answered."""
    return TUNED_TITLE + (f" (adapter `{html.escape(adapter)}`)" if adapter else "")


def answer_markdown(answer: ModelAnswer) -> str:
    """One model's answer panel: the answer, or what went wrong (raw output folded away)."""
    if answer.status == "ok":
        return html.escape(answer.text.strip())
    if answer.status == "unreadable":
        raw = answer.text if len(answer.text) <= RAW_SHOWN else answer.text[:RAW_SHOWN] + " …"
        return (
            "**unreadable answer** — not the canonical form, so it counts as no verdict.\n\n"
            f"<details><summary>raw output ({len(answer.text)} characters)</summary>"
            f'<pre style="white-space: pre-wrap; overflow-wrap: anywhere">{html.escape(raw)}'
            "</pre></details>"
        )
    if answer.status == "empty":
        return f"**empty answer** — {html.escape(answer.note)}"
    return html.escape(answer.note)


def judging_markdown(record: InspectionRecord) -> str:
    truth = record.truth_text or "unknown"
    return (
        f"Judging inspection `{record.id[:8]}…` of *{html.escape(record.source)}* "
        f"(truth: {html.escape(truth)})."
    )


@dataclass(frozen=True)
class Panels:
    """Every output of the browser's Inspect event (field order = output order)."""

    heatmap: Image.Image | None
    soartc: str
    vit_label: dict[str, float] | None
    vit_attention: Image.Image | None
    vit_note: str
    base_answer: str
    tuned_title: str
    tuned_answer: str
    base_marked: Image.Image | None
    tuned_marked: Image.Image | None
    comparison: str
    od_image: Image.Image | None
    od_note: str
    inspection_id: str | None
    judging: str
    corrected: str
    feedback_image: Image.Image | None
    feedback_status: str

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.names())

    @classmethod
    def empty(cls) -> Panels:
        """No inspection on screen: no score, no answers, nothing to judge."""
        return cls(
            heatmap=None,
            soartc=NOT_INSPECTED,
            vit_label=None,
            vit_attention=None,
            vit_note="",
            base_answer="",
            tuned_title=TUNED_TITLE,
            tuned_answer="",
            base_marked=None,
            tuned_marked=None,
            comparison="",
            od_image=None,
            od_note="",
            inspection_id=None,
            judging=NOTHING_TO_JUDGE,
            corrected="",
            feedback_image=None,
            feedback_status="",
        )

    @classmethod
    def refused(cls, reason: str) -> Panels:
        """No connector found: every panel says why, nothing can be judged."""
        text = html.escape(reason)
        return cls(
            **{
                **cls.empty().__dict__,
                "soartc": f"**{text}**",
                "vit_note": text,
                "base_answer": text,
                "tuned_answer": text,
                "comparison": f"**{text}**",
                "od_note": text,
            }
        )

    @classmethod
    def of(
        cls, inspection: Any, corrected_start: Callable[[InspectionRecord], tuple[str, Any]]
    ) -> Panels:
        """The panels of an :class:`~qeu_space.ui.handlers.Inspection`."""
        if inspection.record is None:
            return cls.refused(inspection.refused or "not inspected")
        record = inspection.record
        truth = inspection.truth

        def marked(answer: ModelAnswer) -> Image.Image | None:
            if answer.status != "ok":
                return None
            return mark_findings(record.image, answer.findings, truth)

        corrected, feedback_image = corrected_start(record)
        label = f"fine-tuned ({record.adapter})" if record.adapter else "fine-tuned"
        comparison = comparison_markdown(record.base, record.tuned, truth, tuned_label=label)
        if truth is not None and "**truth**" not in comparison:
            comparison += f"\n\n**truth**: {format_answer(truth)}"
        if record.truth_source == "user":
            comparison += " (typed: a claim, not checked by the server)"
        if record.notes:
            warned = "\n".join(f"- ⚠ {html.escape(note)}" for note in record.notes)
            comparison = f"**Look twice:**\n{warned}\n\n{comparison}"
        return cls(
            heatmap=inspection.soartc.overlay,
            soartc=inspection.soartc.markdown(),
            vit_label=inspection.vit.probabilities,
            vit_attention=inspection.vit.attention,
            vit_note=inspection.vit.note,
            base_answer=answer_markdown(record.base),
            tuned_title=tuned_title(record.adapter),
            tuned_answer=answer_markdown(record.tuned),
            base_marked=marked(record.base),
            tuned_marked=marked(record.tuned),
            comparison=comparison,
            od_image=inspection.od.image,
            od_note=inspection.od.note,
            inspection_id=record.id,
            judging=judging_markdown(record),
            corrected=corrected,
            feedback_image=feedback_image,
            feedback_status="",
        )
