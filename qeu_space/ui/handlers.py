"""One handler per action of the Space; :mod:`qeu_space.ui.layout` wires them to the Blocks.

An inspection is a record (:mod:`qeu_space.ui.records`): :meth:`InspectionApp.inspect_image` runs
SOARTC, the ViT, the base and the fine-tuned answers (with the adapter the visitor picked, by its
``QEU_ADAPTERS`` name) and the ``<OD>`` boxes on one composite and keeps what they said, and which
adapter said it, under an inspection id; feedback judges that record, never answers a client
sends. :class:`~qeu_space.ui.differences.Differences` lists the generated samples on which the
picked adapter and the base disagree. Every model fault (no model, a model that raises, an empty
or non-canonical answer) is a line in its panel, never an exception out of a handler.

Handlers taking uploads get Gradio's raw file payload (``preprocess=False`` events and ``gr.api``),
so every upload is checked by :func:`qeu_space.ui.files.upload_path` and read by
:func:`qeu_space.views.image_io.read_image`; a bad file becomes a readable ``gr.Error``. Model calls
go through the ``spaces.GPU`` functions of :mod:`qeu_space.ui.models`.

The ``api_*`` methods are the typed API (``/inspect``, ``/soartc``, ``/feedback``): compact JSON
and one JPEG heatmap, because every file a ``gradio_client`` call uploads or downloads costs it one
more HTTP request. The ``ui_*`` methods fill the browser's panels from the same record.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from gradio.data_classes import FileData
from PIL import Image

from qeu_space.feedback import RATED, FeedbackEntry, FeedbackStore, clean_text
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
from qeu_space.ui.comparison import compare, describe_comparison
from qeu_space.ui.differences import Differences, DifferenceView
from qeu_space.ui.drawing import DISPLAY_SCALE, draw_labelled_boxes, mark_findings
from qeu_space.ui.feedback_view import feedback_table, toggle_finding
from qeu_space.ui.files import OutputFiles, upload_path
from qeu_space.ui.models import Models, display_name, public_text
from qeu_space.ui.oddities import Oddities
from qeu_space.ui.panels import Panels
from qeu_space.ui.queues import RateLimit, RateLimited
from qeu_space.ui.reading import ReadError, canonical_findings, read_findings
from qeu_space.ui.records import (
    CaseIndex,
    InspectionLog,
    InspectionRecord,
    ModelAnswer,
    UnknownInspection,
    inspections_path,
)
from qeu_space.ui.settings import AppSettings
from qeu_space.ui.soartc_view import SoartcView, run_soartc
from qeu_space.views.image_io import UploadError, UploadLimits, check_pair, read_image
from qeu_space.views.registration import NoConnectorError, register_composite
from qeu_space.vocabulary import DefectKind, Finding, format_answer

logger = logging.getLogger(__name__)

JUDGEMENTS: tuple[str, ...] = ("correct", "wrong")
KINDS: tuple[str, ...] = tuple(k.value for k in DefectKind)
DIRECTIONS: tuple[str, ...] = ("up", "down", "left", "right")
RECENT = 10
MAX_SEED = 2**32 - 1


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


class UnknownAdapter(ValueError):
    """An adapter name this Space does not have (``QEU_ADAPTERS``)."""


class TruthConflict(ValueError):
    """A typed truth (or correction) that contradicts the truth the server knows."""


def agrees(typed: Sequence[Finding], known: Sequence[Finding]) -> bool:
    """Whether a typed list of findings says what the known truth says (same pins and kinds;
    a bent pin typed without its direction agrees with any direction)."""
    if len(typed) != len(known):
        return False
    by_pin = {f.position: f for f in known}
    for f in typed:
        k = by_pin.get(f.position)
        if k is None or k.kind != f.kind:
            return False
        if f.direction is not None and f.direction != k.direction:
            return False
    return True


def text_field(value: Any, what: str) -> str:
    """A text input as text (``None`` is empty); anything else is refused in one line."""
    if value is None:
        return ""
    if not isinstance(value, str):
        kind = "a list" if isinstance(value, list | tuple) else type(value).__name__
        raise gr.Error(f"the {what} must be text, got {kind}", print_exception=False)
    return value


def client_address(request: Any) -> str:
    """Who sent a request: on a Hugging Face Space (``SPACE_ID`` set) the first address of
    ``X-Forwarded-For``, which its proxy sets, else the connection's address (``"local"`` for
    calls without a request: tests, scripts)."""
    import os

    if request is None:
        return "local"
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.get("x-forwarded-for", "") if os.environ.get("SPACE_ID") else ""
    if forwarded.strip():
        return forwarded.split(",")[0].strip()
    client = getattr(request, "client", None)
    return str(getattr(client, "host", "") or "unknown")


def _error(err: Exception) -> gr.Error:
    return gr.Error(str(err), print_exception=False)


def _short_error(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return public_text(text[0][:300]) if text else type(err).__name__


@dataclass(frozen=True)
class VitView:
    """The ViT panel: class probabilities and attention over the test connector, or why not."""

    probabilities: dict[str, float] | None
    attention: Image.Image | None
    note: str

    @property
    def label(self) -> str | None:
        if not self.probabilities:
            return None
        return max(self.probabilities, key=self.probabilities.get)

    def report(self) -> dict:
        return {"label": self.label, "probabilities": self.probabilities, "note": self.note}


@dataclass(frozen=True)
class OdView:
    """The Florence-2 ``<OD>`` panel: the boxes drawn, its raw output and what it says."""

    image: Image.Image | None
    note: str
    text: str = ""
    findings: tuple[Finding, ...] = ()
    status: str = "ok"  # "unreadable": not a clean bbox_str, so no findings and no verdict

    def report(self, scale: tuple[float, float] = (1.0, 1.0)) -> dict:
        """The API's OD result; boxes on the inspected image, times ``scale`` per axis (the
        submitted image's size over the inspected one's)."""
        findings = [f.to_dict() for f in self.findings]
        for finding in findings:
            if finding["box"] is not None:
                x1, y1, x2, y2 = finding["box"]
                sx, sy = scale
                finding["box"] = [x1 * sx, y1 * sy, x2 * sx, y2 * sy]
        return {"status": self.status, "text": self.text, "findings": findings, "note": self.note}


@dataclass(frozen=True)
class Inspection:
    """Everything one inspection produced; ``record`` is ``None`` when it was refused.

    Attributes:
        image: the composite inspected.
        truth: the ground truth compared with, ``None`` when unknown.
        source: where the composite came from, as the server knows it.
        refused: why nothing was answered (no connector found), else ``None``.
        adapter: the name of the adapter asked for the fine-tuned answer (``None``: none
            configured).
        record: what feedback may judge (kept in the app's :class:`InspectionLog`).
        soartc / vit / od: the panels' results (``None`` when refused).
    """

    image: Image.Image
    truth: tuple[Finding, ...] | None
    source: str
    refused: str | None = None
    record: InspectionRecord | None = None
    soartc: SoartcView | None = None
    vit: VitView | None = None
    od: OdView | None = None
    adapter: str | None = None

    @property
    def id(self) -> str:
        return self.record.id if self.record is not None else ""

    def report(self, submitted_size: tuple[int, int] | None = None) -> dict:
        """The ``/inspect`` API's JSON: every panel as data, boxes in the pixels of the image as
        submitted (``submitted_size``; default: the composite inspected), where the Space draws
        them."""
        width, height = submitted_size or self.image.size
        scale = (width / self.image.width, height / self.image.height)
        out: dict[str, Any] = {
            "inspection_id": self.id or None,
            "source": self.source,
            "truth": None if self.truth is None else format_answer(self.truth),
            "truth_source": self.record.truth_source if self.record is not None else None,
            "warnings": list(self.record.notes) if self.record is not None else [],
            "refused": self.refused,
            "adapter": self.adapter,
            "soartc": None,
            "vit": None,
            "base": None,
            "fine_tuned": None,
            "od": None,
        }
        if self.record is not None:
            out.update(
                soartc=self.soartc.report() if self.soartc else None,
                vit=self.vit.report() if self.vit else None,
                base=self.record.base.report(),
                fine_tuned=self.record.tuned.report(),
                od=self.od.report(scale) if self.od else None,
            )
        return out


@dataclass(repr=False)
class InspectionApp:
    """The Space's state: settings, models, cases, kept inspections, the feedback store.

    ``samples`` are the generated samples of the "where they differ" view (default: the
    gallery); the gallery's and theirs are known cases (their truth is the server's).
    """

    settings: AppSettings
    models: Models
    source: CaseSource
    store: FeedbackStore
    gallery: list[Case]
    inspections: InspectionLog | None = None
    cases: CaseIndex | None = None
    outputs: OutputFiles = field(default_factory=OutputFiles)
    answers: Counter = field(default_factory=Counter)
    samples: list[Case] = field(default_factory=list)
    differences: Differences | None = None
    rate_limit: RateLimit | None = None
    oddities: Oddities | None = None

    def __post_init__(self) -> None:
        if self.inspections is None:  # beside the feedback store: survives a restart
            self.inspections = InspectionLog(
                self.settings.inspections_kept,
                self.settings.inspection_minutes * 60,
                path=inspections_path(self.store.path) if self.store is not None else None,
            )
        if self.rate_limit is None:
            self.rate_limit = RateLimit(self.settings.feedback_per_minute)
        if not self.samples:
            self.samples = list(self.gallery)
        if self.cases is None:
            self.cases = CaseIndex([*self.gallery, *self.samples])
        if self.differences is None:
            self.differences = Differences(self.samples, self._answers_for)
        if self.oddities is None:
            self.oddities = Oddities(self.cases.cases)

    # ----------------------------------------------------------------- adapters

    @property
    def adapter_names(self) -> tuple[str, ...]:
        """The configured adapters' names (``QEU_ADAPTERS``), the default first."""
        return self.settings.adapter_names

    def adapter_choice(self, requested: str | None) -> str | None:
        """The adapter a request names: ``""`` is the default (the first), ``None`` when there
        is none.

        Raises:
            UnknownAdapter: a name this Space does not have (the message lists its names).
        """
        names = self.adapter_names
        name = (requested or "").strip() if isinstance(requested, str | None) else requested
        if not name:
            return names[0] if names else None
        if name in names:
            return name
        known = (
            f"{', '.join(names)} (an empty name means {names[0]})"
            if names
            else "none: QEU_ADAPTERS names no adapter, only the base answers"
        )
        raise UnknownAdapter(f"unknown adapter {str(name)[:60]!r}; this Space's adapters: {known}")

    @property
    def limits(self) -> UploadLimits:
        return UploadLimits(self.settings.max_upload_bytes, self.settings.max_pixels)

    # ----------------------------------------------------------------- choosing a case

    def gallery_items(self) -> list[tuple[Image.Image, str]]:
        return [(case.composite, case.caption) for case in self.gallery]

    def pick_sample(self, evt: gr.SelectData) -> tuple[Image.Image, str, str]:
        """A gallery sample becomes the composite to inspect, with its full truth."""
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
            if seed is None or float(seed) != int(float(seed)) or not 0 <= seed <= MAX_SEED:
                raise ValueError(f"the seed must be a whole number from 0 to {MAX_SEED}: {seed}")
            request = SampleRequest(
                findings=parse_defects(defects or ""),
                housing=housing,
                pins=pins,
                labels_drawn=bool(labels),
                nuisances=bool(nuisances),
                seed=int(seed),
            )
            case = self.cases.add(self.source.generate(request))
        except (TypeError, ValueError) as err:
            raise _error(err) from None
        return case.composite, case.truth_text, case.source

    def _read(self, payload: Any, what: str, min_size: tuple[int, int]) -> Image.Image:
        return read_image(upload_path(payload, what), self.limits, min_size=min_size, what=what)

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
            raise _error(err) from None
        case = self.cases.add(Case(composite, None, "pair upload"))
        return case.composite, "", case.source

    # ----------------------------------------------------------------- SOARTC only

    def soartc_view(self, reference: Any, test: Any) -> SoartcView:
        try:
            ref, tst = self._read_pair(reference, test)
            return run_soartc(ref, tst)
        except (UploadError, NoConnectorError) as err:
            raise _error(err) from None

    def api_soartc(self, reference: FileData, test: FileData) -> tuple[FileData, dict]:
        """SOARTC of a reference and a test image (one connector each, same size).

        Returns the heatmap over the test image (JPEG, with its colour bar) and the result:
        ``{"score", "threshold", "verdict", "units", "top": [[position, score], ...]}``.
        """
        view = self.soartc_view(reference, test)
        return self.outputs.image(view.overlay, "heatmap"), view.report()

    def ui_soartc(self, reference: Any, test: Any) -> tuple[Image.Image, str]:
        view = self.soartc_view(reference, test)
        return view.overlay, view.markdown()

    # ----------------------------------------------------------------- inspect

    def read_request(
        self, composite: Any, truth: str | None
    ) -> tuple[Image.Image, Any, tuple[int, int]]:
        """The composite (at the models' size), the typed truth and the size the composite was
        submitted at, of an inspect request (``gr.Error`` if bad)."""
        truth = text_field(truth, "truth")
        try:
            submitted = self._read(composite, "composite", MIN_COMPOSITE)
            image = normalise_composite(submitted)
            known = parse_truth(truth)
        except (UploadError, ReadError) as err:
            raise _error(err) from None
        return image, known, submitted.size

    def inspect_image(
        self,
        image: Image.Image,
        truth: Sequence[Finding] | None,
        progress: Callable[..., Any] = lambda *a, **k: None,
        adapter: str | None = "",
    ) -> Inspection:
        """Run every panel on ``image`` and keep the inspection (refused: no connector).

        ``adapter`` names the adapter beside the base (``""``: the default one).

        Raises:
            UnknownAdapter: ``adapter`` is no adapter of this Space.
        """
        name = self.adapter_choice(adapter)
        truth, truth_source, case = self.truth_of(image, truth)
        source = case.source if case is not None else "upload"
        try:  # every model reads the registered frame: no connector, no answer from anyone
            frame = register_composite(image)
        except NoConnectorError as err:
            return Inspection(image, truth, source, refused=str(err), adapter=name)
        reference, test = split_composite(image)
        progress(0.05, desc="SOARTC heatmap")
        soartc = run_soartc(reference, test, registrations=(frame.reference, frame.test))
        progress(0.2, desc="ViT verdict")
        vit = self._vit(test, reference)
        progress(0.35, desc="base model answering")
        base = self._answer(image, None)
        progress(0.6, desc=f"adapter {name} answering" if name else "no adapter")
        tuned = (
            self._answer(image, name)
            if name
            else ModelAnswer("unavailable", note="no adapter configured (set QEU_ADAPTERS)")
        )
        progress(0.85, desc="Florence-2 boxes")
        od = self._od(image, truth)
        progress(1.0, desc="done")
        for who, answer in (("base", base), (name or "fine-tuned", tuned)):
            self.answers[who, answer.status] += 1
        od_said = od.findings if od.image is not None else None
        notes = self.oddities.notes(image, soartc, vit, (base, tuned), od_said)
        record = self.inspections.add(
            InspectionRecord.new(
                image,
                truth=truth,
                source=source,
                base=base,
                tuned=tuned,
                adapter=name,
                truth_source=truth_source,
                notes=notes,
            )
        )
        return Inspection(image, truth, source, None, record, soartc, vit, od, name)

    def truth_of(
        self, image: Image.Image, typed: Sequence[Finding] | None
    ) -> tuple[tuple[Finding, ...] | None, str, Case | None]:
        """The truth an inspection is compared with, where it comes from, and the server's case.

        A case the server made or recognises (gallery, generated, composed from a known sample)
        keeps its truth (``server``); a typed truth on it must agree, or :class:`TruthConflict`
        names the known one. A typed truth on anything else is a claim (``user``).
        """
        case = self.cases.find(image)
        if case is not None and case.truth is not None:
            if typed is not None and not agrees(tuple(typed), case.truth):
                raise TruthConflict(
                    f"the server knows this sample's truth ({case.source}): "
                    f"'{case.truth_text}'; the typed truth '{format_answer(typed)}' differs: "
                    "leave the truth empty or type the known one"
                )
            return tuple(case.truth), "server", case
        if typed is not None:
            return tuple(typed), "user", case
        return None, "", case

    def _adapter(self, requested: str | None) -> str | None:
        try:
            return self.adapter_choice(requested)
        except UnknownAdapter as err:
            raise _error(err) from None

    def api_inspect(
        self, composite: FileData, truth: str = "", adapter: str = ""
    ) -> tuple[str, dict, Any]:
        """Inspect one composite (reference on top, test below): SOARTC, ViT, both answers, OD.

        ``adapter`` names the adapter that gives the fine-tuned answer (``QEU_ADAPTERS``; ``""``
        is the default one); an unknown name is refused with the list of known ones.

        Returns the inspection id (``""`` when refused: no connector found), the report (JSON:
        ``soartc``, ``vit``, ``base``, ``fine_tuned``, ``adapter``, ``od``, ``truth``,
        ``source``, ``refused``) and the SOARTC heatmap (JPEG, ``None`` when refused). Send
        feedback on it with ``/feedback`` and the id.
        """
        name = self._adapter(text_field(adapter, "adapter"))
        image, known, submitted = self.read_request(composite, truth)
        done = self._inspect(image, known, adapter=name or "")
        heatmap = self.outputs.image(done.soartc.overlay, "heatmap") if done.soartc else None
        return done.id, done.report(submitted), heatmap

    def _inspect(self, image: Image.Image, known: Any, progress=None, adapter: str = ""):
        try:
            if progress is None:
                return self.inspect_image(image, known, adapter=adapter)
            return self.inspect_image(image, known, progress, adapter=adapter)
        except TruthConflict as err:
            raise _error(err) from None

    def ui_inspect(
        self,
        composite: Any,
        truth: str | None,
        adapter: str | None = "",
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple:
        """The browser's Inspect button: every panel and the feedback panel, one record."""
        name = self._adapter(text_field(adapter, "adapter"))
        image, known, _ = self.read_request(composite, truth)
        done = self._inspect(image, known, progress, adapter=name or "")
        return Panels.of(done, self.corrected_start).values()

    def ui_clear(self) -> tuple:
        """A new composite was chosen: no panel may keep showing the last inspection."""
        return Panels.empty().values()

    def ui_composite_changed(self, composite: Any, truth: str | None, case: str | None) -> tuple:
        """A new composite empties every panel; no composite at all (cleared, or an upload
        the browser refused as too large) empties the truth and the case too, so nothing is
        shown about an image that is not there."""
        if not composite:
            truth, case = "", ""
        return (*Panels.empty().values(), truth, case)

    def _vit(self, test: Image.Image, reference: Image.Image | None = None) -> VitView:
        slot = self.models.vit
        if not slot.available:
            return VitView(None, None, slot.status())
        try:
            verdict = model_fns.classify_with_vit(test, reference)
        except Exception as err:  # noqa: BLE001 - one panel fails, the others still show
            logger.exception("ViT failed")
            return VitView(None, None, f"ViT error: {_short_error(err)}")
        attention = attention_overlay(test, verdict.attention)
        p = verdict.probabilities[verdict.label]
        return VitView(
            verdict.probabilities, attention, f"ViT verdict: **{verdict.label}** ({p:.0%})"
        )

    def _unavailable(self, adapter: str | None) -> ModelAnswer | None:
        """Why the base (``adapter=None``) or the named adapter cannot answer, or ``None``."""
        slot = self.models.vlm
        if not slot.available:
            return ModelAnswer(
                "unavailable", note=slot.reason or "no chat VLM configured (set QEU_BASE_MODEL)"
            )
        if adapter is None:
            return None
        named = slot.named(adapter)
        if named is None or not named.in_use or not slot.has_adapter:
            why = named.reason if named is not None and named.reason else "it is not loaded"
            return ModelAnswer("unavailable", note=why or f"adapter {adapter} is not loaded")
        return None

    def _answer(self, image: Image.Image, adapter: str | None) -> ModelAnswer:
        """The base's answer (``adapter=None``) or the named adapter's, as a panel's record."""
        who = "base" if adapter is None else "fine-tuned"
        missing = self._unavailable(adapter)
        if missing is not None:
            return missing
        try:
            answer = model_fns.answer_with_vlm(
                image, adapter=adapter, max_new_tokens=self.settings.max_new_tokens
            )
        except Exception as err:  # noqa: BLE001
            logger.exception("chat VLM failed")
            return ModelAnswer("error", note=f"model error: {_short_error(err)}")
        findings = canonical_findings(answer.text) or ()
        return ModelAnswer.from_text(answer.text, tuple(findings), who)

    def _answers_for(self, images: Sequence[Image.Image], adapter: str | None) -> list:
        """Answers for the "where they differ" view (a model error raises: nothing is kept)."""
        who = "base" if adapter is None else "fine-tuned"
        answers = model_fns.answers_with_vlm(
            images, adapter=adapter, max_new_tokens=self.settings.max_new_tokens
        )
        return [
            ModelAnswer.from_text(a.text, tuple(canonical_findings(a.text) or ()), who)
            for a in answers
        ]

    # ----------------------------------------------------------------- where they differ

    def difference_view(
        self, adapter: str | None, progress: Callable[..., Any] = lambda f, d: None
    ) -> DifferenceView | str:
        """The samples the adapter and the base disagree on, or why there is nothing to show."""
        name = self.adapter_choice(adapter)
        if name is None:
            return "No adapter configured (set `QEU_ADAPTERS`): only the base answers."
        for who in (None, name):
            missing = self._unavailable(who)
            if missing is not None:
                return f"Nothing to compare: {missing.note}"
        return self.differences.view(name, progress)

    def ui_differences(
        self,
        adapter: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[list, str, list[int]]:
        """The browser's "where they differ" button: gallery, table, and the samples listed."""
        try:
            view = self.difference_view(adapter, lambda f, d: progress(f, desc=d))
        except UnknownAdapter as err:
            raise _error(err) from None
        except Exception as err:  # noqa: BLE001 - a model error is a line, nothing is kept
            logger.exception("where they differ failed")
            return [], f"model error: {_short_error(err)}", []
        if isinstance(view, str):
            return [], view, []
        return view.gallery(), view.markdown(), [d.index for d in view.differences]

    def pick_difference(
        self, shown: list[int] | None, adapter: str | None, evt: gr.SelectData
    ) -> tuple[Image.Image, str, str, str | None, Any]:
        """A listed sample becomes the composite to inspect, with its truth and the adapter, and
        the Inspect tab is shown."""
        index = evt.index if isinstance(evt.index, int) else int(evt.index[0])
        if not shown or not 0 <= index < len(shown):
            raise gr.Error("no such sample in the list: press the button again")
        case = self.samples[shown[index]]
        name = self._adapter(adapter)
        return case.composite, case.truth_text, case.source, name, gr.Tabs(selected="inspect")

    def _od(self, image: Image.Image, truth: Sequence[Finding] | None) -> OdView:
        """Florence-2's boxes with their category, drawn where the product really is; with an
        adapter, the base's boxes (left) beside the adapter's (right)."""
        from qeu_space.modeling.families import florence2

        slot = self.models.od
        if not slot.available:
            return OdView(None, slot.status() if slot.name else "no Florence-2 OD model configured")
        variants = [("base", False), ("fine-tuned", True)] if slot.has_adapter else [("", True)]
        panels, notes, statuses = [], [], []
        answer = None
        for name, tuned in variants:
            try:
                answer = model_fns.detect_with_florence(
                    image, max_new_tokens=self.settings.max_new_tokens, tuned=tuned
                )
                readable = florence2.readable(answer.text)
                boxes = florence2.boxes_in_image(answer.text, image) if readable else []
            except Exception as err:  # noqa: BLE001
                logger.exception("Florence-2 failed")
                return OdView(None, f"Florence-2 error: {_short_error(err)}")
            if not readable:  # garbage is no verdict: never "0 boxes, Passed"
                answer = model_fns.Answer(answer.text, ())
                said = answer.text[:120].replace("`", "'")
                note = (
                    "**unreadable `<OD>` output**: not a sequence of known kinds, each with four "
                    f"`<loc_N>` tokens, so it gives no verdict: `{said}`"
                )
                notes.append(f"**{name}** {note}" if name else note)
                panels.append(draw_labelled_boxes(image, []))
                statuses.append("unreadable")
                continue
            statuses.append("ok")
            note = f"`<OD>` output: {len(boxes)} box(es); read on the grid: "
            note += format_answer(answer.findings)
            if truth is not None:
                note += f" — vs truth: {describe_comparison(compare(truth, answer.findings))}"
            notes.append(f"**{name}** {note}" if name else note)
            panels.append(draw_labelled_boxes(image, boxes))
        assert answer is not None  # the adapter's answer when there is one
        found = tuple(florence2.findings_on_image(answer.findings, image))  # boxes as drawn
        if len(panels) == 1:
            return OdView(panels[0], notes[0], answer.text, found, statuses[-1])
        shown = _side_by_side(panels, [name for name, _ in variants])
        return OdView(shown, "\n\n".join(notes), answer.text, found, statuses[-1])

    # ----------------------------------------------------------------- feedback

    def record(self, inspection_id: str | None) -> InspectionRecord:
        try:
            return self.inspections.get(inspection_id or "")
        except UnknownInspection as err:
            raise _error(err) from None

    def corrected_start(self, record: InspectionRecord) -> tuple[str, Image.Image]:
        """The feedback panel after an inspection: the fine-tuned (else base) canonical answer
        as the corrected answer, drawn on the inspected composite."""
        for answer in (record.tuned, record.base):
            if answer.status == "ok":
                return answer.canonical, mark_findings(record.image, answer.findings)
        return "", mark_findings(record.image, ())

    def toggle_pin(
        self,
        corrected: str,
        kind: str,
        direction: str,
        inspection_id: str | None,
        evt: gr.SelectData,
    ) -> tuple[str, Image.Image]:
        """A click on the grid adds (or removes) a finding at that pin of the test product."""
        record = self.record(inspection_id)
        x, y = (v / DISPLAY_SCALE for v in evt.index)
        position = CompositeLayout(COMPOSITE_SIZE).position_at(x, y)
        if position is None:
            raise gr.Error("click on a pin of the lower (test) connector", print_exception=False)
        try:
            current = read_findings(corrected, what="corrected answer") if corrected else ()
        except ReadError as err:
            raise _error(err) from None
        text = toggle_finding(format_answer(current), str(position), kind, direction)
        return text, mark_findings(record.image, read_findings(text))

    def send_feedback(
        self,
        inspection_id: str | None,
        rated: str,
        judgement: str,
        corrected: str = "",
        comment: str = "",
        client: str = "local",
    ) -> str:
        """Store a judgement of one answer of a kept inspection; returns the status line.

        ``client`` is who judges (:func:`client_address`): one judgement per inspection, rated
        answer and client stands (a repeat replaces it, the same one again changes nothing),
        and each client may send :attr:`AppSettings.feedback_per_minute` a minute.
        """
        inspection_id = text_field(inspection_id, "inspection id")
        rated = text_field(rated, "rated answer")
        judgement = text_field(judgement, "judgement")
        corrected = clean_text(text_field(corrected, "corrected answer"))
        comment = clean_text(text_field(comment, "comment"))
        key = self.store.client_key(client)
        try:
            self.rate_limit.take(key)
        except RateLimited as err:
            raise _error(err) from None
        if judgement not in JUDGEMENTS:
            raise gr.Error(
                f"say whether the rated answer is {' or '.join(JUDGEMENTS)}", print_exception=False
            )
        if rated not in RATED:
            raise gr.Error(f"rate one of the answers: {', '.join(RATED)}", print_exception=False)
        record = self.record(inspection_id)
        answer = record.tuned if rated == "fine-tuned" else record.base
        if not answer.answered:
            raise gr.Error(
                f"the {rated} model gave no answer in this inspection ({answer.note}): there is "
                "nothing of it to judge; rate the other answer",
                print_exception=False,
            )
        correct = judgement == "correct"
        if correct and answer.status != "ok":
            raise gr.Error(
                f"the {rated} answer is unreadable, so it cannot be correct: mark it wrong and "
                "give the corrected answer",
                print_exception=False,
            )
        try:
            fixed = ""
            if not correct:
                if not corrected.strip():
                    raise ReadError(
                        "a wrong answer needs the corrected answer (type it or click the pins)"
                    )
                fixed = format_answer(
                    read_findings(corrected, what="corrected answer", require_direction=True)
                )
            self._check_against_truth(record, rated, answer, correct, fixed)
            named = self.models.vlm.named(record.adapter) if record.adapter else None
            in_use = named is not None and named.in_use and self.models.vlm.has_adapter
            entry = FeedbackEntry(
                image=record.image,
                base_answer=record.base.text,
                tuned_answer=record.tuned.text,
                rated=rated,
                correct=correct,
                corrected_answer=fixed,
                comment=comment,
                truth=record.truth_text,
                source=record.source,
                base_model=display_name(self.settings.base_model),
                adapter=display_name(named.source) if in_use else "",
                inspection_id=record.id,
                adapter_name=record.adapter if in_use else "",
                truth_source=record.truth_source if record.truth is not None else "",
                client=key,
            )
        except ValueError as err:
            raise _error(err) from None
        stored, outcome = self.store.judge(entry)
        what = f"feedback #{stored.id} on inspection `{record.id[:8]}…`"
        if outcome == "unchanged":
            return f"Unchanged: you sent this judgement before ({what}); nothing new stored."
        done = "stored, replacing your earlier judgement" if outcome == "replaced" else "stored"
        return f"Thank you: {what} {done} ({self.store.count()} in all)."

    @staticmethod
    def _check_against_truth(
        record: InspectionRecord, rated: str, answer: ModelAnswer, correct: bool, fixed: str
    ) -> None:
        """A judgement may not contradict a truth the server knows (a typed truth is a claim
        and stays open to correction)."""
        if record.truth is None or record.truth_source != "server":
            return
        known = record.truth_text
        if correct and not agrees(answer.findings, record.truth):
            raise TruthConflict(
                f"the {rated} answer '{answer.canonical}' differs from this sample's truth, "
                f"which the server knows: '{known}'; judge it wrong (the truth is the correction)"
            )
        if not correct and fixed != known:
            raise TruthConflict(
                f"the correction '{fixed}' contradicts this sample's truth, which the server "
                f"knows: '{known}'; send the known truth as the correction"
            )

    def api_feedback(
        self,
        inspection_id: str,
        rated: str,
        judgement: str,
        corrected_answer: str = "",
        comment: str = "",
        request: gr.Request = None,
    ) -> str:
        """Judge one answer of an inspection: ``rated`` is ``fine-tuned`` or ``base``,
        ``judgement`` ``correct`` or ``wrong`` (then ``corrected_answer`` is the right answer,
        e.g. ``C7 missing pin``). The image, both answers and the truth stored are the ones the
        server kept for ``inspection_id``. One judgement per inspection, rated answer and client
        stands (a repeat replaces it); a correction against a truth the server knows is refused,
        and so is a client over ``QEU_FEEDBACK_PER_MINUTE``. Returns the status line."""
        return self.send_feedback(
            inspection_id, rated, judgement, corrected_answer, comment, client_address(request)
        )

    def ui_feedback(
        self,
        inspection_id: str | None,
        rated: str,
        judgement: str,
        corrected: str,
        comment: str,
        request: gr.Request = None,
    ) -> tuple[str, str]:
        """The browser's Send feedback: the status line and the refreshed log."""
        status = self.send_feedback(
            inspection_id, rated, judgement, corrected, comment, client_address(request)
        )
        return status, self.recent_feedback_html()

    def recent_feedback_html(self) -> str:
        return feedback_table(self.store.recent(RECENT), self.store.count())
