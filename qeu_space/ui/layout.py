"""The Blocks of the Space: Inspect (with feedback), the feedback log, the models panel.

Named API endpoints (``gradio_client``): ``/inspect`` (composite, truth), ``/soartc`` (reference
image, test image -> heatmap, score, top positions), ``/feedback``, and ``/generate`` (a new
sample with chosen defects). Model calls share one queue slot group (``concurrency_limit``) and
the queue holds at most ``queue_size`` waiting requests; feedback bypasses the queue.

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
from qeu_space.ui.adapter_panel import adapter_markdown, models_markdown
from qeu_space.ui.cases import CaseSource
from qeu_space.ui.handlers import DIRECTIONS, JUDGEMENTS, KINDS, InspectionApp
from qeu_space.ui.models import Models, load_models
from qeu_space.ui.settings import AppSettings
from qeu_space.ui.soartc_view import UNITS as HEAT_LEGEND
from qeu_space.views.image_io import configure_pil

logger = logging.getLogger(__name__)

TITLE = "QEU Inspection Space"
INTRO = (
    "Connector terminals (rows **U, C, D** by columns **1-9**): the upper product is a good "
    "reference, the lower one is inspected. Pick a sample, generate one with chosen defects, or "
    "upload a composite or a reference/test pair; then **Inspect**."
)
CSS = """
.qeu-feedback { width: 100%; border-collapse: collapse; font-size: 0.9em; }
.qeu-feedback th, .qeu-feedback td { border-bottom: 1px solid #8884; padding: 4px 6px;
  text-align: left; vertical-align: top; }
"""


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


def build_demo(
    settings: AppSettings,
    source: CaseSource,
    *,
    models: Models | None = None,
    store: FeedbackStore | None = None,
) -> gr.Blocks:
    """Load the models (unless given), open the feedback store, and lay out the Blocks."""
    configure_pil(settings.max_pixels)
    if models is None:
        models = load_models(settings, detect_device())
    app = InspectionApp(
        settings=settings,
        models=models,
        source=source,
        store=store or open_feedback_store(settings),
        gallery=source.gallery(settings.gallery_size, settings.gallery_seed),
    )
    push = (
        f"pushed to `{settings.feedback_repo}`"
        if app.store.mirror is not None
        else "stored locally"
    )
    model_limit = {"concurrency_limit": settings.model_concurrency, "concurrency_id": "models"}

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        gr.Markdown(models_markdown(models), elem_id="device-line")
        with gr.Tabs():
            with gr.Tab("Inspect", id="inspect"):
                with gr.Row():
                    with gr.Column(scale=4):
                        with gr.Tabs():
                            with gr.Tab("Samples"):
                                gallery = gr.Gallery(
                                    value=app.gallery_items(),
                                    label="Generated samples (caption = ground truth)",
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
                                    label="Defects",
                                    value="U3 bent pin (left); C7 missing pin",
                                    placeholder="e.g. U3 bent pin (left); C7 missing pin "
                                    "(empty = a good product)",
                                )
                                with gr.Row():
                                    labels = gr.Checkbox(value=True, label="Grid labels")
                                    nuisances = gr.Checkbox(value=True, label="Nuisances")
                                    seed = gr.Number(value=0, precision=0, label="Seed")
                                generate_btn = gr.Button("Generate sample")
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
                                pair_heat = gr.Image(label="SOARTC heatmap", height=180)
                                with gr.Row():
                                    pair_score = gr.Number(label="Image score")
                                    pair_top = gr.Dataframe(
                                        headers=["position", "score"], label="Top positions"
                                    )
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
                            placeholder="empty for an upload",
                        )
                        source_box = gr.Textbox(label="Source", visible=False)
                        inspect_btn = gr.Button("Inspect", variant="primary", elem_id="inspect")
                    with gr.Column(scale=6):
                        with gr.Row():
                            heatmap = gr.Image(
                                label=f"SOARTC heatmap, test product ({HEAT_LEGEND})",
                                height=220,
                            )
                            with gr.Column():
                                score = gr.Number(label="SOARTC image score")
                                top = gr.Dataframe(
                                    headers=["position", "score"], label="Top positions"
                                )
                        with gr.Row():
                            vit_attention = gr.Image(label="ViT attention", height=200)
                            with gr.Column():
                                vit_label = gr.Label(label="ViT verdict", num_top_classes=3)
                                vit_note = gr.Markdown(label="ViT note")
                        with gr.Row():
                            with gr.Column():
                                base_answer = gr.Textbox(
                                    label="Base model answer", lines=2, elem_id="base-answer"
                                )
                                base_marked = gr.Image(label="Base findings", height=300)
                            with gr.Column():
                                tuned_answer = gr.Textbox(
                                    label="Fine-tuned answer", lines=2, elem_id="tuned-answer"
                                )
                                tuned_marked = gr.Image(label="Fine-tuned findings", height=300)
                        comparison = gr.Markdown(label="Comparison", elem_id="comparison")
                        with gr.Accordion("Florence-2 boxes", open=models.od.available):
                            od_image = gr.Image(label="<OD> boxes", height=300)
                            od_note = gr.Markdown(label="OD note")
                with gr.Accordion("Feedback on this prediction", open=True):
                    with gr.Row():
                        feedback_image = gr.Image(
                            label="Corrected findings: click a pin of the lower connector to "
                            "add or remove it",
                            interactive=False,
                            height=360,
                            elem_id="feedback-grid",
                        )
                        with gr.Column():
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
                            feedback_status = gr.Markdown(
                                label="Feedback status", elem_id="feedback-status"
                            )
            with gr.Tab("Feedback log", id="log"):
                gr.Markdown(
                    f"Feedback is {push}; `python -m dataset_tools from-feedback` turns it "
                    "into a Q/A split."
                )
                recent = gr.HTML(
                    app.recent_feedback_html(), label="Recent feedback", elem_id="feedback-log"
                )
                refresh_btn = gr.Button("Refresh")
            with gr.Tab("Models & adapter", id="models"):
                gr.Markdown(models_markdown(models))
                gr.Markdown(adapter_markdown(settings.adapter), elem_id="adapter-panel")

        case_outputs = [composite, truth, source_box]
        gallery.select(app.pick_sample, outputs=case_outputs, api_visibility="private")
        generate_btn.click(
            app.generate_sample,
            inputs=[housing, pins, defects, labels, nuisances, seed],
            outputs=case_outputs,
            api_name="generate",
            concurrency_limit=2,
        )
        composite.upload(
            lambda: ("", "upload"),
            outputs=[truth, source_box],
            queue=False,
            api_visibility="private",
        )
        compose_btn.click(
            app.compose_pair,
            inputs=[reference_up, test_up],
            outputs=case_outputs,
            preprocess=False,
            api_name="compose",
            concurrency_limit=2,
        )
        soartc_btn.click(
            app.soartc,
            inputs=[reference_up, test_up],
            outputs=[pair_heat, pair_score, pair_top],
            preprocess=False,
            api_name="soartc",
            concurrency_limit=2,
        )
        inspect_btn.click(
            app.inspect,
            inputs=[composite, truth],
            outputs=[
                heatmap,
                score,
                top,
                vit_label,
                vit_attention,
                vit_note,
                base_answer,
                tuned_answer,
                base_marked,
                tuned_marked,
                comparison,
                od_image,
                od_note,
            ],
            preprocess=False,
            api_name="inspect",
            **model_limit,
        ).success(
            app.prefill_feedback,
            inputs=[composite, tuned_answer, base_answer],
            outputs=[corrected, feedback_image],
            preprocess=False,
            api_visibility="private",
        )
        feedback_image.select(
            app.toggle_pin,
            inputs=[corrected, kind, direction, composite],
            outputs=[corrected, feedback_image],
            preprocess=False,
            queue=False,
            api_visibility="private",
        )
        send_btn.click(
            app.send_feedback,
            inputs=[
                composite,
                base_answer,
                tuned_answer,
                rated,
                judgement,
                corrected,
                comment,
                truth,
                source_box,
            ],
            outputs=[feedback_status, recent],
            preprocess=False,
            api_name="feedback",
            queue=False,  # the browser posts it directly: never refused by a full model queue
            concurrency_limit=None,  # through the queue (gradio_client): never waits either
        )
        refresh_btn.click(
            app.recent_feedback_html, outputs=recent, queue=False, api_visibility="private"
        )
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
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
