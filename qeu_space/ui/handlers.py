"""One handler per action of the Space; :mod:`qeu_space.ui.layout` wires them to the Blocks.

Handlers taking uploads get Gradio's raw file payload (events wired with ``preprocess=False``),
so every upload is read by :func:`qeu_space.views.image_io.read_image` and a bad file becomes a
readable ``gr.Error`` instead of an exception inside Gradio's own decoding. Model calls go through
the ``spaces.GPU`` functions of :mod:`qeu_space.ui.models`; an empty model slot shows its reason
("model not available: ...") in its panel and the other panels still fill.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from qeu_space.feedback import RATED, FeedbackEntry, FeedbackStore
from qeu_space.geometry import CompositeLayout
from qeu_space.modeling.attention import attention_overlay
from qeu_space.ui import models as model_fns
from qeu_space.ui.cases import (
    COMPOSITE_SIZE,
    MIN_COMPOSITE,
    MIN_CONNECTOR,
    Case,
    CaseSource,
    SampleRequest,
    normalise_composite,
    parse_defects,
    parse_truth,
    split_composite,
)
from qeu_space.ui.comparison import compare, comparison_markdown, describe_comparison
from qeu_space.ui.drawing import DISPLAY_SCALE, draw_labelled_boxes, mark_findings
from qeu_space.ui.feedback_view import feedback_table, toggle_finding
from qeu_space.ui.models import Answer, Models
from qeu_space.ui.settings import AppSettings
from qeu_space.ui.soartc_view import run_soartc
from qeu_space.views.image_io import UploadError, UploadLimits, check_pair, read_image
from qeu_space.views.registration import NoConnectorError, register_composite
from qeu_space.vocabulary import DefectKind, Finding, format_answer, parse_answer

logger = logging.getLogger(__name__)

JUDGEMENTS: tuple[str, ...] = ("correct", "wrong")
KINDS: tuple[str, ...] = tuple(k.value for k in DefectKind)
DIRECTIONS: tuple[str, ...] = ("up", "down", "left", "right")
RECENT = 10


def _side_by_side(panels: Sequence[Image.Image], titles: Sequence[str]) -> Image.Image:
    """Equal panels in a row, each titled in its top-right corner."""
    from PIL import ImageDraw

    width, height = panels[0].size
    out = Image.new("RGB", (width * len(panels), height))
    draw = ImageDraw.Draw(out)
    for i, (panel, title) in enumerate(zip(panels, titles, strict=True)):
        out.paste(panel, (i * width, 0))
        box = draw.textbbox((0, 0), title, font_size=28)
        x = (i + 1) * width - (box[2] - box[0]) - 16
        draw.rectangle((x - 6, 4, (i + 1) * width - 10, box[3] + 14), fill=(0, 0, 0))
        draw.text((x, 8), title, fill=(255, 255, 255), font_size=28)
    return out


def _path(payload: Any) -> str | None:
    """The file path of a raw Gradio file payload (``{"path": ...}``) or a plain path."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return payload.get("path")
    return str(payload)


def _upload_error(err: UploadError | ValueError) -> gr.Error:
    return gr.Error(str(err), print_exception=False)


@dataclass(frozen=True)
class InspectOutputs:
    """Everything the Inspect tab shows for one composite (the order of the ``/inspect`` API)."""

    heatmap: Image.Image | None
    score: float | None
    top: list[list]
    vit_label: dict[str, float] | None
    vit_attention: Image.Image | None
    vit_note: str
    base_answer: str
    tuned_answer: str
    base_marked: Image.Image | None
    tuned_marked: Image.Image | None
    comparison: str
    od_image: Image.Image | None
    od_note: str

    @classmethod
    def refused(cls, reason: str) -> InspectOutputs:
        """What every panel shows when no connector was found: the reason, never an answer."""
        return cls(
            heatmap=None,
            score=None,
            top=[],
            vit_label=None,
            vit_attention=None,
            vit_note=reason,
            base_answer=reason,
            tuned_answer=reason,
            base_marked=None,
            tuned_marked=None,
            comparison=f"**{reason}**",
            od_image=None,
            od_note=reason,
        )

    def as_tuple(self) -> tuple:
        return (
            self.heatmap,
            self.score,
            self.top,
            self.vit_label,
            self.vit_attention,
            self.vit_note,
            self.base_answer,
            self.tuned_answer,
            self.base_marked,
            self.tuned_marked,
            self.comparison,
            self.od_image,
            self.od_note,
        )


@dataclass
class InspectionApp:
    """The Space's state: settings, models, the case source and gallery, the feedback store."""

    settings: AppSettings
    models: Models
    source: CaseSource
    store: FeedbackStore
    gallery: list[Case]

    @property
    def limits(self) -> UploadLimits:
        return UploadLimits(self.settings.max_upload_bytes, self.settings.max_pixels)

    # ----------------------------------------------------------------- choosing a case

    def gallery_items(self) -> list[tuple[Image.Image, str]]:
        return [(case.composite, case.truth_text) for case in self.gallery]

    def pick_sample(self, evt: gr.SelectData) -> tuple[Image.Image, str, str]:
        """A gallery sample becomes the composite to inspect, with its truth."""
        index = evt.index if isinstance(evt.index, int) else int(evt.index[0])
        if not 0 <= index < len(self.gallery):
            raise gr.Error(f"no sample {index} in the gallery")
        case = self.gallery[index]
        return case.composite, case.truth_text, case.source

    def generate_sample(
        self, housing: str, pins: str, defects: str, labels: bool, nuisances: bool, seed: float
    ) -> tuple[Image.Image, str, str]:
        """A new sample with exactly the typed defects."""
        try:
            request = SampleRequest(
                findings=parse_defects(defects or ""),
                housing=housing,
                pins=pins,
                labels_drawn=bool(labels),
                nuisances=bool(nuisances),
                seed=int(seed or 0),
            )
            case = self.source.generate(request)
        except ValueError as err:
            raise _upload_error(err) from None
        return case.composite, case.truth_text, case.source

    def _read(self, payload: Any, what: str, min_size: tuple[int, int]) -> Image.Image:
        path = _path(payload)
        if path is None:
            raise UploadError(f"no {what}: upload one first")
        return read_image(path, self.limits, min_size=min_size, what=what)

    def _read_pair(self, reference: Any, test: Any) -> tuple[Image.Image, Image.Image]:
        ref = self._read(reference, "reference image", MIN_CONNECTOR)
        tst = self._read(test, "test image", MIN_CONNECTOR)
        check_pair(ref, tst)
        return ref, tst

    def compose_pair(self, reference: Any, test: Any) -> tuple[Image.Image, str, str]:
        """An uploaded reference and test image, composed like the datasets' composites."""
        try:
            ref, tst = self._read_pair(reference, test)
            composite = self.source.compose_pair(ref, tst)
        except (UploadError, ValueError) as err:
            raise _upload_error(err) from None
        return composite, "", "pair upload"

    # ----------------------------------------------------------------- SOARTC only

    def soartc(self, reference: Any, test: Any) -> tuple[Image.Image, float, list[list]]:
        """``/soartc``: heatmap over the test image, image score, top pin positions."""
        try:
            ref, tst = self._read_pair(reference, test)
            view = run_soartc(ref, tst)
        except (UploadError, NoConnectorError) as err:
            raise _upload_error(err) from None
        return view.overlay, round(view.score, 3), view.top_rows()

    # ----------------------------------------------------------------- inspect

    def inspect(
        self,
        composite: Any,
        truth: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple:
        """``/inspect``: SOARTC, ViT, base and fine-tuned answers, OD boxes for one composite."""
        try:
            image = normalise_composite(self._read(composite, "composite", MIN_COMPOSITE))
            known = parse_truth(truth)
        except UploadError as err:
            raise _upload_error(err) from None
        return self.inspect_image(image, known, progress).as_tuple()

    def inspect_image(
        self,
        image: Image.Image,
        truth: Sequence[Finding] | None,
        progress: Callable[..., Any] = lambda *a, **k: None,
    ) -> InspectOutputs:
        try:  # every model reads the registered frame: no connector, no answer from anyone
            register_composite(image)
        except NoConnectorError as err:
            return InspectOutputs.refused(str(err))
        reference, test = split_composite(image)
        progress(0.05, desc="SOARTC heatmap")
        view = run_soartc(reference, test)
        progress(0.2, desc="ViT verdict")
        vit_label, vit_attention, vit_note = self._vit(test)
        progress(0.35, desc="base model answering")
        base = self._answer(tuned=False, image=image)
        progress(0.6, desc="fine-tuned model answering")
        tuned = self._answer(tuned=True, image=image)
        progress(0.85, desc="Florence-2 boxes")
        od_image, od_note = self._od(image, truth)
        progress(1.0, desc="done")
        base_answer = base if isinstance(base, Answer) else None
        tuned_answer = tuned if isinstance(tuned, Answer) else None
        return InspectOutputs(
            heatmap=view.overlay,
            score=round(view.score, 3),
            top=view.top_rows(),
            vit_label=vit_label,
            vit_attention=vit_attention,
            vit_note=vit_note,
            base_answer=base_answer.text if base_answer else str(base),
            tuned_answer=tuned_answer.text if tuned_answer else str(tuned),
            base_marked=mark_findings(image, base_answer.findings, truth) if base_answer else None,
            tuned_marked=(
                mark_findings(image, tuned_answer.findings, truth) if tuned_answer else None
            ),
            comparison=comparison_markdown(base_answer, tuned_answer, truth),
            od_image=od_image,
            od_note=od_note,
        )

    def _vit(self, test: Image.Image) -> tuple[dict[str, float] | None, Image.Image | None, str]:
        slot = self.models.vit
        if not slot.available:
            return None, None, slot.status()
        try:
            verdict = model_fns.classify_with_vit(test)
        except Exception as err:  # noqa: BLE001 - one panel fails, the others still show
            logger.exception("ViT failed")
            return None, None, f"ViT error: {err}"
        attention = attention_overlay(test, verdict.attention)
        p = verdict.probabilities[verdict.label]
        return verdict.probabilities, attention, f"ViT verdict: **{verdict.label}** ({p:.0%})"

    def _answer(self, *, tuned: bool, image: Image.Image) -> Answer | str:
        slot = self.models.vlm
        if not slot.available:
            return slot.reason or "no chat VLM configured (set QEU_BASE_MODEL)"
        if tuned and not slot.has_adapter:
            return slot.adapter_reason or "no adapter configured (set QEU_ADAPTER)"
        try:
            return model_fns.answer_with_vlm(
                image, tuned=tuned, max_new_tokens=self.settings.max_new_tokens
            )
        except Exception as err:  # noqa: BLE001
            logger.exception("chat VLM failed")
            return f"model error: {str(err).strip().splitlines()[0] if str(err).strip() else err}"

    def _od(
        self, image: Image.Image, truth: Sequence[Finding] | None
    ) -> tuple[Image.Image | None, str]:
        """Florence-2's boxes with their category, drawn where the product really is; with an
        adapter, the base's boxes (left) beside the adapter's (right)."""
        from qeu_space.modeling.families import florence2

        slot = self.models.od
        if not slot.available:
            return None, slot.status() if slot.name else "no Florence-2 OD model configured"
        variants = [("base", False), ("fine-tuned", True)] if slot.has_adapter else [("", True)]
        panels, notes = [], []
        for name, tuned in variants:
            try:
                answer = model_fns.detect_with_florence(
                    image, max_new_tokens=self.settings.max_new_tokens, tuned=tuned
                )
                boxes = florence2.boxes_in_image(answer.text, image)
            except Exception as err:  # noqa: BLE001
                logger.exception("Florence-2 failed")
                return None, f"Florence-2 error: {err}"
            note = f"`<OD>` output: {len(boxes)} box(es); read on the grid: "
            note += format_answer(answer.findings)
            if truth is not None:
                note += f" — vs truth: {describe_comparison(compare(truth, answer.findings))}"
            notes.append(f"**{name}** {note}" if name else note)
            panels.append(draw_labelled_boxes(image, boxes))
        if len(panels) == 1:
            return panels[0], notes[0]
        return _side_by_side(panels, [name for name, _ in variants]), "\n\n".join(notes)

    # ----------------------------------------------------------------- feedback

    def prefill_feedback(
        self, composite: Any, tuned_answer: str, base_answer: str
    ) -> tuple[str, Image.Image | None]:
        """After an inspection: the corrected answer starts as the fine-tuned (else base) answer."""
        answer = tuned_answer if parse_answer(tuned_answer or "").understood else base_answer
        findings = parse_answer(answer or "").findings
        text = format_answer(findings) if parse_answer(answer or "").understood else ""
        return text, self._feedback_image(composite, findings)

    def _feedback_image(self, composite: Any, findings: Sequence[Finding]) -> Image.Image | None:
        try:
            image = normalise_composite(self._read(composite, "composite", MIN_COMPOSITE))
        except UploadError:
            return None
        return mark_findings(image, findings)

    def toggle_pin(
        self, corrected: str, kind: str, direction: str, composite: Any, evt: gr.SelectData
    ) -> tuple[str, Image.Image | None]:
        """A click on the grid adds (or removes) a finding at that pin of the test product."""
        x, y = (v / DISPLAY_SCALE for v in evt.index)
        position = CompositeLayout(COMPOSITE_SIZE).position_at(x, y)
        if position is None:
            raise gr.Error("click on a pin of the lower (test) connector", print_exception=False)
        text = toggle_finding(corrected or "", str(position), kind, direction)
        return text, self._feedback_image(composite, parse_answer(text).findings)

    def send_feedback(
        self,
        composite: Any,
        base_answer: str,
        tuned_answer: str,
        rated: str,
        judgement: str,
        corrected: str,
        comment: str,
        truth: str | None = None,
        source: str | None = None,
    ) -> tuple[str, str]:
        """``/feedback``: store the judgement with the image and both answers."""
        if judgement not in JUDGEMENTS:
            raise gr.Error(f"say whether the answer is {' or '.join(JUDGEMENTS)}")
        if rated not in RATED:
            raise gr.Error(f"rate one of the answers: {', '.join(RATED)}")
        try:
            image = normalise_composite(self._read(composite, "composite", MIN_COMPOSITE))
            entry = FeedbackEntry(
                image=image,
                base_answer=base_answer or "",
                tuned_answer=tuned_answer or "",
                rated=rated,
                correct=judgement == "correct",
                corrected_answer=corrected or "",
                comment=(comment or "").strip(),
                truth=(truth or "").strip() or None,
                source=(source or "").strip() or "api",
                base_model=self.settings.base_model or "",
                adapter=self.settings.adapter or "",
            )
        except (UploadError, ValueError) as err:
            raise _upload_error(err) from None
        stored = self.store.add(entry)
        return (
            f"Thank you: feedback #{stored.id} stored ({self.store.count()} in all).",
            self.recent_feedback_html(),
        )

    def recent_feedback_html(self) -> str:
        return feedback_table(self.store.recent(RECENT), self.store.count())
