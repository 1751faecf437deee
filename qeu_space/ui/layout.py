"""The Blocks of the Space: Inspect (with feedback), where an adapter and the base differ, the
feedback log, the models panel.

Named API endpoints (``gradio_client``): ``/inspect`` (composite, truth, adapter -> inspection
id, report, heatmap), ``/soartc`` (reference, test -> heatmap, result), ``/feedback``
(inspection id, rated, judgement, corrected answer, comment -> status), ``/generate`` and
``/compose`` (a composite to inspect). The first three are typed ``gr.api`` endpoints that return
JSON and one JPEG; the browser's buttons run private events that fill its panels from the same
records.

Each kind of request has a lane of its own in the queue (:mod:`qeu_space.ui.queues`): model calls
(``QEU_MODEL_CONCURRENCY`` running, ``QEU_QUEUE_SIZE`` waiting), ``/soartc`` and the samples
(2 running, ``QEU_LIGHT_QUEUE_SIZE`` waiting each) and feedback (no running limit, 256 waiting):
a full model queue refuses model calls only. Model calls use at most ``QEU_MODEL_THREADS`` CPU
threads (all cores but one), and on the CPU they run in a model worker process
(:mod:`qeu_space.ui.worker`, ``QEU_MODEL_WORKER``), so the light endpoints are starved neither of
CPU nor of this process's GIL.
Gradio's temporary files are deleted after ``QEU_CACHE_MINUTES`` (``delete_cache``).

Example:
    >>> demo = build_demo(AppSettings.from_env(), source)
    >>> demo.launch(**launch_options(AppSettings.from_env()))
"""

from __future__ import annotations

import logging
import os
from typing import Any

import gradio as gr

from qeu_space.feedback import RATED, FeedbackStore, HubMirror
from qeu_space.modeling.devices import detect_device
from qeu_space.ui.adapter_panel import adapters_markdown, device_markdown, models_markdown
from qeu_space.ui.cases import CAPTION_LEGEND, CaseSource
from qeu_space.ui.handlers import DIRECTIONS, JUDGEMENTS, KINDS, InspectionApp
from qeu_space.ui.models import (
    Models,
    class_labels,
    input_channels,
    limit_model_threads,
    load_models,
    use_models,
    use_worker,
)
from qeu_space.ui.panels import NOT_INSPECTED, NOTHING_TO_JUDGE, TUNED_TITLE, Panels, vit_legend
from qeu_space.ui.queues import Lane, install_lanes
from qeu_space.ui.settings import AppSettings
from qeu_space.views.image_io import configure_pil

logger = logging.getLogger(__name__)

TITLE = "QEU Inspection Space"
INTRO = (
    "Connector terminals (rows **U, C, D** by columns **1-9**): the upper product is a good "
    "reference, the lower one is inspected. Pick a sample, generate one with chosen defects, or "
    "upload a composite or a reference/test pair; pick the adapter that answers beside the base; "
    "then **Inspect**."
)
DIFF_INTRO = (
    "Generated test samples (held-out pin positions, every defect kind of `QEU_GALLERY_KINDS`) "
    "answered by the base and by the chosen adapter: the list shows only those on which the two "
    "disagree, with the truth, so you see at once what the adapter changed. Answers are computed "
    "the first time an adapter is asked for, then kept."
)
CSS = """
.qeu-feedback { width: 100%; border-collapse: collapse; font-size: 0.9em; table-layout: fixed; }
.qeu-feedback th, .qeu-feedback td { border-bottom: 1px solid #8884; padding: 4px 6px;
  text-align: left; vertical-align: top; overflow-wrap: anywhere; word-break: break-word; }
#feedback-log { max-width: 100%; overflow-x: hidden; }
#base-answer details pre, #tuned-answer details pre { white-space: pre-wrap;
  overflow-wrap: anywhere; max-height: 12em; overflow-y: auto; }
@media (max-width: 640px) {
  #sample-gallery .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
}
"""
FEEDBACK_WAITING = 256
LIGHT_RUNNING = 2


def open_feedback_store(settings: AppSettings) -> FeedbackStore:
    """The local store, mirrored to ``QEU_FEEDBACK_REPO`` when a token is available."""
    mirror = None
    if settings.feedback_repo:
        from qeu_space.hub.upload import HubError, resolve_token

        try:
            token = resolve_token()
            folder = settings.feedback_db.parent / "hub-mirror"
            mirror = HubMirror.start(
                settings.feedback_repo, folder, token=token, every=settings.feedback_every
            )
        except (HubError, ValueError) as err:
            logger.warning("feedback stays local: %s", err)
    return FeedbackStore(settings.feedback_db, mirror=mirror)


def lanes(settings: AppSettings) -> dict[str, Lane]:
    """The queue's lanes (see the module docstring and the README's API section)."""
    light = "Model calls do not hold this queue up."
    return {
        "models": Lane(
            "models",
            settings.model_concurrency,
            settings.queue_size,
            "model calls (/inspect)",
            "/soartc, /generate, /compose and /feedback have queues of their own and still answer.",
        ),
        "soartc": Lane("soartc", LIGHT_RUNNING, settings.light_queue_size, "/soartc", light),
        "samples": Lane(
            "samples", LIGHT_RUNNING, settings.light_queue_size, "/generate and /compose", light
        ),
        "feedback": Lane("feedback", None, FEEDBACK_WAITING, "feedback", light),
    }


def vit_labels(models: Models) -> tuple[str, ...] | None:
    """The loaded ViT's class names (``id2label``), or ``None`` when no ViT is loaded."""
    return class_labels(models.vit.loaded)


def vit_reads_pair(models: Models) -> bool:
    """Whether the loaded ViT compares the pair (6 channels) rather than the test alone."""
    loaded = models.vit.loaded
    return loaded is not None and input_channels(loaded) == 6


def models_panel(app: InspectionApp) -> str:
    """The Models tab's status part: each model, and what its answers were this session."""
    counts = app.answers
    lines = [models_markdown(app.models), "", "**Answers since start**", ""]
    for who in ("base", *(app.adapter_names or ("fine-tuned",))):
        parts = [f"{counts[who, s]} {s}" for s in ("ok", "unreadable", "empty", "error")]
        lines.append(f"- {who}: " + ", ".join(parts))
    return "\n".join(lines)


def build_demo(
    settings: AppSettings,
    source: CaseSource,
    *,
    models: Models | None = None,
    store: FeedbackStore | None = None,
) -> gr.Blocks:
    """Load the models (unless given), open the feedback store, and lay out the Blocks."""
    configure_pil(settings.max_pixels)
    limit_model_threads(settings.model_threads)
    worker = None
    if models is None:
        device = detect_device()
        if settings.uses_worker(device.kind):
            from qeu_space.ui.worker import ModelWorker

            worker = ModelWorker.start(settings, device, wait=False)  # loads while we draw
        else:
            models = load_models(settings, device)
    else:
        use_models(models)  # the model functions run what the page shows
    samples = source.gallery(
        max(settings.gallery_size, settings.diff_samples),
        settings.gallery_seed,
        kinds=settings.gallery_kinds,
    )
    looks = source.look_gallery(settings.gallery_seed)
    if worker is not None:
        worker.wait()
        models = use_worker(worker)
    app = InspectionApp(
        settings=settings,
        models=models,
        source=source,
        store=store or open_feedback_store(settings),
        gallery=[*samples[: settings.gallery_size], *looks],
        samples=samples[: settings.diff_samples],
    )
    names = list(app.adapter_names)
    push = (
        f"pushed to `{settings.feedback_repo}`"
        if app.store.mirror is not None
        else "stored locally"
    )
    lane = lanes(settings)

    with gr.Blocks(
        title=TITLE, analytics_enabled=False, delete_cache=settings.delete_cache
    ) as demo:
        demo.temp_file_sets.append(app.outputs.paths)
        inspection = gr.State(None)
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        gr.Markdown(device_markdown(models), elem_id="device-line")
        with gr.Tabs() as tabs:
            with gr.Tab("Inspect", id="inspect"):
                with gr.Row():
                    with gr.Column(scale=4, min_width=300):
                        with gr.Tabs():
                            with gr.Tab("Samples"):
                                gallery = gr.Gallery(
                                    value=app.gallery_items(),
                                    label=f"Generated samples ({CAPTION_LEGEND})",
                                    columns=4,
                                    height=260,
                                    allow_preview=False,
                                    format="png",
                                    elem_id="sample-gallery",
                                )
                            with gr.Tab("Generate"):
                                with gr.Row():
                                    housing = gr.Dropdown(
                                        list(source.housings),
                                        value=source.housings[0],
                                        label="Housing",
                                    )
                                    pins = gr.Dropdown(
                                        list(source.pin_styles),
                                        value=source.pin_styles[0],
                                        label="Pins",
                                    )
                                defects = gr.Textbox(
                                    label="Defects (bent pin with its direction, missing pin, "
                                    "short pin)",
                                    value="U3 bent pin (left); C7 missing pin",
                                    placeholder="e.g. U3 bent pin (left); C7 missing pin; "
                                    "C4 short pin (empty = a good product)",
                                    elem_id="defects",
                                )
                                with gr.Row():
                                    labels = gr.Checkbox(value=True, label="Grid labels")
                                    nuisances = gr.Checkbox(value=True, label="Nuisances")
                                    seed = gr.Number(value=0, precision=0, label="Seed")
                                generate_btn = gr.Button("Generate sample", elem_id="generate")
                            with gr.Tab("Upload pair"):
                                with gr.Row():
                                    reference_up = gr.Image(
                                        type="filepath",
                                        label="Reference (good)",
                                        sources=["upload", "clipboard"],
                                        height=160,
                                    )
                                    test_up = gr.Image(
                                        type="filepath",
                                        label="Test",
                                        height=160,
                                        sources=["upload", "clipboard"],
                                    )
                                with gr.Row():
                                    compose_btn = gr.Button("Compose for inspection")
                                    soartc_btn = gr.Button("SOARTC only")
                                pair_heat = gr.Image(
                                    label="SOARTC heatmap", height=200, format="jpeg"
                                )
                                pair_soartc = gr.Markdown(NOT_INSPECTED)
                        composite = gr.Image(
                            type="filepath",
                            format="png",
                            label="Composite to inspect (or upload one here)",
                            sources=["upload", "clipboard"],
                            height=360,
                            elem_id="composite",
                        )
                        truth = gr.Textbox(
                            label="Ground truth (when known)",
                            elem_id="truth",
                            placeholder="empty for an upload; e.g. 'C7 missing pin'",
                        )
                        source_box = gr.Textbox(
                            label="Case", interactive=False, max_lines=1, elem_id="case"
                        )
                        adapter_pick = gr.Dropdown(
                            names,
                            value=names[0] if names else None,
                            label="Adapter beside the base (QEU_ADAPTERS)",
                            visible=bool(names),
                            elem_id="adapter-pick",
                        )
                        inspect_btn = gr.Button("Inspect", variant="primary", elem_id="inspect")
                    with gr.Column(scale=6, min_width=300):
                        with gr.Row():
                            heatmap = gr.Image(
                                label="SOARTC heatmap over the test product (colour bar: "
                                "robust SD, pass/fail mark)",
                                height=240,
                                format="jpeg",
                                elem_id="heatmap",
                            )
                            soartc_md = gr.Markdown(NOT_INSPECTED, elem_id="soartc")
                        with gr.Row():
                            vit_attention = gr.Image(
                                label="ViT attention", height=200, format="jpeg"
                            )
                            with gr.Column():
                                vit_label = gr.Label(label="ViT verdict", num_top_classes=3)
                                vit_note = gr.Markdown(elem_id="vit-note")
                                gr.Markdown(
                                    vit_legend(vit_labels(models), pair=vit_reads_pair(models)),
                                    elem_id="vit-legend",
                                )
                        with gr.Row():
                            with gr.Column(min_width=240):
                                gr.Markdown("**Base model answer**")
                                base_answer = gr.Markdown(elem_id="base-answer")
                                base_marked = gr.Image(
                                    label="Base findings", height=300, format="jpeg"
                                )
                            with gr.Column(min_width=240):
                                tuned_title_md = gr.Markdown(TUNED_TITLE, elem_id="tuned-title")
                                tuned_answer = gr.Markdown(elem_id="tuned-answer")
                                tuned_marked = gr.Image(
                                    label="Fine-tuned findings", height=300, format="jpeg"
                                )
                        comparison = gr.Markdown(elem_id="comparison")
                        with gr.Accordion("Florence-2 boxes", open=models.od.available):
                            od_image = gr.Image(label="<OD> boxes", height=300, format="jpeg")
                            od_note = gr.Markdown()
                with gr.Accordion("Feedback on this prediction", open=True):
                    judging = gr.Markdown(NOTHING_TO_JUDGE, elem_id="judging")
                    with gr.Row():
                        feedback_image = gr.Image(
                            label="Corrected findings: click a pin of the lower connector to "
                            "add or remove it",
                            interactive=False,
                            height=360,
                            format="jpeg",
                            elem_id="feedback-grid",
                        )
                        with gr.Column(min_width=280):
                            with gr.Row():
                                rated = gr.Radio(list(RATED), value=RATED[0], label="Answer rated")
                                judgement = gr.Radio(
                                    list(JUDGEMENTS), label="It is", elem_id="judgement"
                                )
                            with gr.Row():
                                kind = gr.Dropdown(list(KINDS), value=KINDS[0], label="Click adds")
                                direction = gr.Dropdown(
                                    list(DIRECTIONS), value=DIRECTIONS[2], label="Direction"
                                )
                            corrected = gr.Textbox(
                                label="Corrected answer (typed, or built by clicking pins)",
                                elem_id="corrected",
                            )
                            comment = gr.Textbox(label="Comment", lines=2, elem_id="comment")
                            send_btn = gr.Button("Send feedback", elem_id="send-feedback")
                            feedback_status = gr.Markdown(elem_id="feedback-status")
            with gr.Tab("Feedback log", id="log"):
                gr.Markdown(
                    f"Feedback is {push}; `python -m dataset_tools from-feedback` turns it "
                    "into a Q/A split."
                )
                recent = gr.HTML(label="Recent feedback", elem_id="feedback-log")
                refresh_btn = gr.Button("Refresh")
            with gr.Tab("Models & adapters", id="models"):
                models_md = gr.Markdown(elem_id="models-panel")
                gr.Markdown(adapters_markdown(models.vlm), elem_id="adapter-panel")
            with gr.Tab("Where they differ", id="differ"):
                gr.Markdown(DIFF_INTRO)
                with gr.Row():
                    differ_pick = gr.Dropdown(
                        names,
                        value=names[0] if names else None,
                        label="Adapter",
                        elem_id="differ-pick",
                    )
                    differ_btn = gr.Button(
                        f"Compare with the base on {len(app.samples)} samples",
                        variant="primary",
                        elem_id="differ-run",
                    )
                differ_gallery = gr.Gallery(
                    label="Samples on which they disagree (caption: truth · base ✓/✗ · "
                    "adapter ✓/✗); pick one to inspect it",
                    columns=6,
                    height=240,
                    allow_preview=False,
                    format="png",
                    elem_id="differ-gallery",
                )
                differ_md = gr.Markdown(elem_id="differ-table")
                differ_shown = gr.State([])

        panels = {
            "heatmap": heatmap,
            "soartc": soartc_md,
            "vit_label": vit_label,
            "vit_attention": vit_attention,
            "vit_note": vit_note,
            "base_answer": base_answer,
            "tuned_title": tuned_title_md,
            "tuned_answer": tuned_answer,
            "base_marked": base_marked,
            "tuned_marked": tuned_marked,
            "comparison": comparison,
            "od_image": od_image,
            "od_note": od_note,
            "inspection_id": inspection,
            "judging": judging,
            "corrected": corrected,
            "feedback_image": feedback_image,
            "feedback_status": feedback_status,
        }
        panel_outputs = [panels[name] for name in Panels.names()]
        private = {"api_visibility": "private"}

        # Browser events: choosing a case, inspecting, judging.
        case_outputs = [composite, truth, source_box]
        gallery.select(app.pick_sample, outputs=case_outputs, queue=False, **private)
        generate_btn.click(
            app.generate_sample,
            inputs=[housing, pins, defects, labels, nuisances, seed],
            outputs=case_outputs,
            api_name="generate",
            **lane["samples"].wiring(),
        )
        compose_btn.click(
            app.compose_pair,
            inputs=[reference_up, test_up],
            outputs=case_outputs,
            preprocess=False,
            api_name="compose",
            **lane["samples"].wiring(),
        )
        composite.upload(
            lambda: ("", "upload"), outputs=[truth, source_box], queue=False, **private
        )
        inspecting = inspect_btn.click(
            app.ui_inspect,
            inputs=[composite, truth, adapter_pick],
            outputs=panel_outputs,
            preprocess=False,
            **lane["models"].wiring(),
            **private,
        )
        # A new composite (picked, generated, composed, uploaded, cleared) empties every panel
        # and the feedback panel, and a running inspection of the old one is dropped; no
        # composite (cleared, or an upload refused as too large) empties truth and case too.
        composite.change(
            app.ui_composite_changed,
            inputs=[composite, truth, source_box],
            outputs=[*panel_outputs, truth, source_box],
            cancels=[inspecting],
            queue=False,
            **private,
        )
        # Another adapter: the panels showed the last one's answer, so they are emptied too.
        adapter_pick.input(
            app.ui_clear, outputs=panel_outputs, cancels=[inspecting], queue=False, **private
        )
        differ_btn.click(
            app.ui_differences,
            inputs=[differ_pick],
            outputs=[differ_gallery, differ_md, differ_shown],
            **lane["models"].wiring(),
            **private,
        )
        differ_pick.input(
            lambda: ([], "", []),
            outputs=[differ_gallery, differ_md, differ_shown],
            queue=False,
            **private,
        )
        differ_gallery.select(
            app.pick_difference,
            inputs=[differ_shown, differ_pick],
            outputs=[composite, truth, source_box, adapter_pick, tabs],
            queue=False,
            **private,
        )
        soartc_btn.click(
            app.ui_soartc,
            inputs=[reference_up, test_up],
            outputs=[pair_heat, pair_soartc],
            preprocess=False,
            **lane["soartc"].wiring(),
            **private,
        )
        feedback_image.select(
            app.toggle_pin,
            inputs=[corrected, kind, direction, inspection],
            outputs=[corrected, feedback_image],
            queue=False,
            **private,
        )
        send_btn.click(
            app.ui_feedback,
            inputs=[inspection, rated, judgement, corrected, comment],
            outputs=[feedback_status, recent],
            **lane["feedback"].wiring(),
            **private,
        )
        refresh_btn.click(app.recent_feedback_html, outputs=recent, queue=False, **private)
        demo.load(
            lambda: (app.recent_feedback_html(), models_panel(app)),
            outputs=[recent, models_md],
            queue=False,
            **private,
        )

        # The typed API: JSON and one JPEG per call (README, "API").
        gr.api(app.api_inspect, api_name="inspect", **lane["models"].wiring())
        gr.api(app.api_soartc, api_name="soartc", **lane["soartc"].wiring())
        gr.api(app.api_feedback, api_name="feedback", **lane["feedback"].wiring())
    install_lanes(demo, list(lane.values()))
    demo.inspection_app = app  # the handlers' state, for tests and benchmarks
    return demo


def launch_options(settings: AppSettings, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``launch()`` keywords: local only unless told, no share link, upload cap, port from env."""
    env = os.environ if environ is None else environ
    port = env.get("GRADIO_SERVER_PORT")
    return {
        "server_name": env.get("GRADIO_SERVER_NAME") or "127.0.0.1",
        "server_port": int(port) if port else None,
        "share": False,
        "max_file_size": settings.max_upload_bytes,
        "ssr_mode": False,
        "show_error": False,
        "css": CSS,
    }
