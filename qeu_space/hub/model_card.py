"""The model card of a published adapter: Hub metadata (YAML) plus a short page a person reads.

The YAML is written by ``huggingface_hub.ModelCardData`` so the Hub reads it as it expects:
``base_model`` (the model-tree link), ``datasets``, ``library_name: peft`` and the evaluation
results as ``model-index`` (the adapter's own scores; the base's are in the page's table, which
is what the seeds never had: a before/after on the same split). The page adds the adapter's size,
the training arguments, the loss plot and the commands that reproduce and evaluate it.

Example:
    >>> card = build_model_card(CardInputs(base_model="microsoft/Florence-2-base",
    ...                                    datasets=["me/qeu-connectors"], task="od"))
    >>> card.data.base_model
    'microsoft/Florence-2-base'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from qeu_space.evaluation.evaluate import HEADLINE, EvalReport
from qeu_space.hub.summary import AdapterSummary

PROJECT_TAG = "qeu-inspection-space"
#: The project's licence (the Space's and every published model's).
LICENSE = "apache-2.0"
#: The Hub pipeline tag of each task.
PIPELINE_TAGS = {
    "qa": "image-text-to-text",
    "od": "image-text-to-text",
    "cls": "image-classification",
}
#: How each headline metric is typed in ``model-index`` (free-form ids, Hub metric names where
#: one exists). BLEU / ROUGE-L (corpus text similarity, no per-row interval) stay in the page's
#: table only.
METRIC_TYPES: dict[str, str] = {
    "verdict_accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "f1",
    "exact_match": "exact_match",
    "direction_accuracy": "accuracy",
    "parse_failure_rate": "parse_failure_rate",
    "map_50": "mAP@0.5",
    "map_50_95": "mAP@0.5:0.95",
}
TASK_NAMES = {
    "qa": "Connector inspection Q/A (findings by grid position)",
    "od": "Connector defect detection (<OD> boxes)",
}
#: Training arguments shown on the page (the full set stays in ``training_args.json``).
SHOWN_TRAINING_ARGS = (
    "task",
    "base",
    "dataset",
    "scope",
    "rank",
    "alpha",
    "dropout",
    "use_dora",
    "full_finetune",
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "seed",
    "bf16",
    "gradient_checkpointing",
)


@dataclass(frozen=True)
class CardInputs:
    """Everything a card says; all but ``base_model`` may be absent.

    Attributes:
        base_model: Hub id of the base model (the model-tree link).
        datasets: Hub ids of the training/evaluation datasets.
        task: ``qa`` or ``od`` (taken from ``report`` when not given).
        repo_id: the model repo the card belongs to (title, usage snippet, model-index name).
        report: an evaluation report; its ``adapter`` run (else its only run) feeds model-index.
        training_args: ``training_args.json`` as a dict.
        trainer_state: ``trainer_state.json`` as a dict (steps, epochs, best checkpoint, losses).
        loss_plot: file name of the loss plot inside the pushed folder.
        reproduce: the shell command that trained this adapter.
        adapter: the adapter's inspection summary (rank, modules, parameter counts); ``None``
            for a full model (``library_name: transformers``).
        license: the Hub licence id (the project's own: Apache-2.0).
        ships_processor: the pushed folder carries ``processing_qeu.py`` (the model's view); the
            card then opens with :data:`VIEW_NOTICE` and shows the transformers-only snippet.
        kind: ``adapter`` (``library_name: peft``) or ``model`` (a full model, transformers).
    """

    base_model: str | None
    datasets: list[str] = field(default_factory=list)
    task: str | None = None
    repo_id: str | None = None
    report: EvalReport | None = None
    training_args: Mapping[str, Any] = field(default_factory=dict)
    trainer_state: Mapping[str, Any] = field(default_factory=dict)
    loss_plot: str | None = None
    reproduce: str | None = None
    adapter: AdapterSummary | None = None
    license: str = LICENSE
    ships_processor: bool = False
    kind: str = "adapter"


def eval_results(report: EvalReport, dataset_id: str | None = None) -> list[EvalResult]:
    """``model-index`` entries for the report's adapter run (or its only run).

    Each metric carries its 95 % bootstrap interval as ``args.ci95`` when the report has one
    (reports written by ``qeu_space.evaluate`` do for ``qa``). The dataset is named by its Hub
    id; a report of a local folder is named by the folder's name only, never its path.
    """
    run = report.runs[-1]  # the adapter run comes last when both were scored
    dataset = dataset_id or Path(report.dataset).name or report.task
    results = []
    for name, title in HEADLINE[report.task]:
        value = getattr(run.metrics, name)
        if value is None or name not in METRIC_TYPES:
            continue
        interval = run.intervals.get(name)
        results.append(
            EvalResult(
                task_type=PIPELINE_TAGS.get(report.task, "image-text-to-text"),
                task_name=TASK_NAMES.get(report.task, report.task),
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_config=report.task,
                dataset_split=report.split,
                metric_type=METRIC_TYPES[name],
                metric_name=title,
                metric_value=round(float(value), 4),
                metric_args={"ci95": [round(v, 4) for v in interval]} if interval else None,
            )
        )
    return results


def build_model_card(inputs: CardInputs) -> ModelCard:
    """The card: YAML metadata from :class:`ModelCardData` and a markdown page."""
    task = inputs.task or (inputs.report.task if inputs.report else None)
    is_adapter = inputs.kind == "adapter"
    name = inputs.repo_id or ("qeu-inspection-adapter" if is_adapter else "qeu-inspection-model")
    results = eval_results(inputs.report, _first(inputs.datasets)) if inputs.report else None
    tags = [PROJECT_TAG, *(["lora", "peft"] if is_adapter else [])]
    tags += [
        *([f"task:{task}"] if task else []),
        *(["custom_code"] if inputs.ships_processor else []),
    ]
    data = ModelCardData(
        base_model=inputs.base_model,
        datasets=list(inputs.datasets) or None,
        license=inputs.license,
        library_name="peft" if is_adapter else "transformers",
        pipeline_tag=PIPELINE_TAGS.get(task or "", "image-text-to-text"),
        tags=tags,
        model_name=name if results else None,
        eval_results=results or None,
    )
    sections = [
        f"# {name}",
        VIEW_NOTICE if inputs.ships_processor else "",
        _intro(inputs, task),
        _adapter_section(inputs.adapter),
        _eval_section(inputs.report),
        _training_section(inputs),
        _usage_section(inputs, task),
    ]
    body = "\n\n".join(s for s in sections if s)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def _first(items: list[str]) -> str | None:
    return items[0] if items else None


def _intro(inputs: CardInputs, task: str | None) -> str:
    what = TASK_NAMES.get(task or "", "connector terminal inspection")
    base = f"`{inputs.base_model}`" if inputs.base_model else "its base model"
    data = ", ".join(f"`{d}`" for d in inputs.datasets) or "a synthetic connector dataset"
    kind = "A PEFT adapter for" if inputs.kind == "adapter" else "A model fine-tuned from"
    return (
        f"{kind} {base}, trained on {data} for **{what}**: it names bent and missing "
        "pins of a 3 x 9 connector by grid position (rows U, C, D; columns 1-9), comparing a "
        "good reference with the product under inspection. Made with QEU Inspection Space."
    )


def _adapter_section(adapter: AdapterSummary | None) -> str:
    if adapter is None:
        return ""
    share = (
        f"{adapter.share_of_base:.4%} of the base's {adapter.base_params:,}"
        if adapter.share_of_base is not None
        else "share of the base not measured (base not available locally)"
    )
    rows = [
        ("PEFT type", adapter.peft_type),
        ("rank / alpha", f"{adapter.rank} / {adapter.alpha}"),
        ("target modules", f"`{adapter.target_modules}`"),
        ("modules saved whole", ", ".join(adapter.modules_to_save) or "none"),
        ("adapter parameters", f"{adapter.trainable_params:,} ({share})"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"## Adapter\n\n| | |\n|---|---|\n{table}"


def _eval_section(report: EvalReport | None) -> str:
    if report is None:
        return ""
    note = (
        "Base and adapter were scored in one run on the same loaded weights "
        "(`disable_adapter()`), so the rows differ only by the adapter."
        if len(report.runs) > 1
        else ""
    )
    return f"## Evaluation\n\n{report.to_markdown()}\n{note}".rstrip()


def _training_section(inputs: CardInputs) -> str:
    parts = []
    shown = {k: inputs.training_args[k] for k in SHOWN_TRAINING_ARGS if k in inputs.training_args}
    if not shown:  # unknown layout: show every scalar argument
        shown = {
            k: v for k, v in inputs.training_args.items() if isinstance(v, str | int | float | bool)
        }
    if shown:
        rows = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in shown.items())
        parts.append(f"| argument | value |\n|---|---|\n{rows}")
    state = inputs.trainer_state
    facts = []
    if "global_step" in state:
        facts.append(f"{state['global_step']} optimizer steps")
    if state.get("epoch") is not None:
        facts.append(f"{float(state['epoch']):.2f} epochs")
    if state.get("best_metric") is not None:
        facts.append(f"best validation metric {float(state['best_metric']):.4f}")
    losses = [e["loss"] for e in state.get("log_history", []) if "loss" in e]
    if losses:
        facts.append(f"training loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    if facts:
        parts.append("Trained for " + ", ".join(facts) + ".")
    if inputs.loss_plot:
        parts.append(f"![training and validation loss]({inputs.loss_plot})")
    if inputs.reproduce:
        parts.append(f"Reproduce:\n\n```bash\n{inputs.reproduce}\n```")
    return "## Training\n\n" + "\n\n".join(parts) if parts else ""


def _usage_section(inputs: CardInputs, task: str | None) -> str:
    repo = inputs.repo_id or (
        "ADAPTER_DIR_OR_REPO" if inputs.kind == "adapter" else "MODEL_DIR_OR_REPO"
    )
    base = inputs.base_model or "BASE_MODEL"
    data = _first(inputs.datasets) or "DATASET"
    parts = ["## Use"]
    if inputs.ships_processor and task in ("qa", "cls", "od"):
        if inputs.kind == "adapter":
            snippet = plain_usage(task, base, adapter=repo)
        else:
            snippet = plain_usage(task, repo)
        parts.append(
            f"With `transformers`{' and `peft`' if inputs.kind == 'adapter' else ''} only:\n\n"
            f"```python\n{snippet}```"
        )
    load = f'"{base}", "{repo}"' if inputs.kind == "adapter" else f'"{repo}"'
    parts.append(
        "With QEU Inspection Space (`pip install` the project), which also draws SOARTC "
        "heatmaps and maps answers back onto the image:\n\n"
        "```python\nfrom qeu_space.modeling.loading import load_model\n\n"
        f"loaded = load_model({load})\n```"
    )
    if inputs.kind == "adapter":
        parts.append(
            "Evaluate against the base on the held-out split:\n\n```bash\n"
            f"python -m qeu_space.evaluate --task {task or 'qa'} --base {base} --adapter {repo} "
            f"--dataset {data} --split test --report eval.json\n```"
        )
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- plain-library use

#: What the plain-library snippets need besides transformers (the shipped processor's imports).
PLAIN_REQUIREMENTS = "transformers torch pillow scipy opencv-python-headless"
#: The first lines of every card whose model reads the canonical frame.
VIEW_NOTICE = (
    "**Load the processor with `trust_remote_code=True`.** This model reads a registered, "
    "cropped view of the image (the connector's 3 x 9 pin grid found and warped onto a fixed "
    "frame), made by `processing_qeu.py` in this repository. Without it the image would be "
    "resized whole and the answers would be wrong, so the processor configs name only that "
    "class: `AutoProcessor` / `pipeline` without `trust_remote_code=True` refuse to load."
)


_CLS_SNIPPET = """\
# pip install {requirements}
from transformers import pipeline

# trust_remote_code: the processor finds the pin grid and crops it (processing_qeu.py)
classify = pipeline("image-classification", model="{model}", trust_remote_code=True)
print(classify("{image}"))  # [{{'label': 'OK', 'score': ...}}, ...]
"""
_CLS_PAIR_SNIPPET = """\
# pip install {requirements}
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

# trust_remote_code: the processor finds each connector's pin grid and crops it
processor = AutoImageProcessor.from_pretrained("{model}", trust_remote_code=True)
model = AutoModelForImageClassification.from_pretrained("{model}")


def classify_pair(reference, test):
    \"\"\"The label of connector image ``test`` compared with ``reference`` (a good product of
    the same rig): both are registered and cropped, then stacked as channels, reference first.\"\"\"
    views = [
        processor(images=Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]
        for path in (reference, test)
    ]
    with torch.no_grad():
        logits = model(pixel_values=torch.cat(views, dim=1)).logits
    return model.config.id2label[int(logits.argmax())]


print(classify_pair("{reference}", "{image}"))  # 'OK', 'BENDNG', 'NUKENG' or 'SHORTNG'
"""
_QA_SNIPPET = """\
# pip install {requirements}
from PIL import Image
{peft_import}from transformers import AutoModelForImageTextToText, AutoProcessor

# trust_remote_code: the processor registers both connectors and crops the test one
processor = AutoProcessor.from_pretrained("{processor}", trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained("{model}")
{peft_load}QUESTION = (
{question}
)


def inspect(path):
    \"\"\"The answer for a composite: the good reference on top, the product below.\"\"\"
    content = [{{"type": "image"}}, {{"type": "text", "text": QUESTION}}]
    chat = [{{"role": "user", "content": content}}]
    prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
    inputs = processor(text=prompt, images=[Image.open(path)], return_tensors="pt")
    grammar = processor.answer_grammar(model)  # canonical answers only, as the Space's
    out = model.generate(**inputs, max_new_tokens=64, do_sample=False, logits_processor=grammar)
    new_tokens = out[0, inputs["input_ids"].shape[1] :]
    return processor.decode(new_tokens, skip_special_tokens=True).strip()


print(inspect("{image}"))  # e.g. Defective. 1 defect: C7 missing pin.
"""
_OD_SNIPPET = """\
# pip install {requirements}
from PIL import Image
{peft_import}from transformers import AutoProcessor, Florence2ForConditionalGeneration

# trust_remote_code: the processor registers the composite and crops the test product's pin grid
processor = AutoProcessor.from_pretrained("{processor}", trust_remote_code=True)
model = Florence2ForConditionalGeneration.from_pretrained("{model}")
{peft_load}

def detect(path):
    \"\"\"Boxes and categories on a composite: the good reference on top, the product below.\"\"\"
    image = Image.open(path)
    inputs = processor(text="<OD>", images=image, return_tensors="pt")
    grammar = processor.od_grammar(model)  # known kinds, four <loc_N> each, as the Space's
    out = model.generate(
        **inputs, max_new_tokens=64, num_beams=1, do_sample=False, logits_processor=grammar
    )
    text = processor.batch_decode(out, skip_special_tokens=False)[0]
    # in the pixels of `image`: the processor maps the boxes back through its registration
    return processor.post_process_generation(text, task="<OD>", image_size=image.size)["<OD>"]


print(detect("{image}"))  # {{'bboxes': [[x1, y1, x2, y2], ...], 'labels': ['missing pin', ...]}}
"""


def plain_usage(
    task: str,
    model: str,
    *,
    adapter: str | None = None,
    image: str = "connector.png",
    reference: str = "reference.png",
) -> str:
    """The card's snippet: this model with ``transformers`` (+ ``peft``) only, no project code.

    ``task`` is ``cls`` (the ViT classifier, one connector image), ``cls-pair`` (the pair ViT:
    a reference and a test connector image, stacked as 6 channels), ``qa`` (a chat VLM, a
    composite: reference on top, test below) or ``od`` (Florence-2 ``<OD>`` boxes on a
    composite, in the composite's own pixels). The processor comes from the adapter when one is
    given (an adapter folder made by this project carries its base's processor). A test runs
    exactly this text in an interpreter where ``qeu_space`` cannot be imported.
    """
    import textwrap

    from qeu_space.vocabulary import INSPECTION_QUESTION

    if task == "cls":
        return _CLS_SNIPPET.format(requirements=PLAIN_REQUIREMENTS, model=model, image=image)
    if task == "cls-pair":
        return _CLS_PAIR_SNIPPET.format(
            requirements=PLAIN_REQUIREMENTS, model=model, image=image, reference=reference
        )
    if task == "od":
        return _OD_SNIPPET.format(
            requirements=PLAIN_REQUIREMENTS + (" peft" if adapter else ""),
            peft_import="from peft import PeftModel\n" if adapter else "",
            processor=adapter or model,
            model=model,
            peft_load=f'model = PeftModel.from_pretrained(model, "{adapter}")\n' if adapter else "",
            image=image,
        )
    if task != "qa":
        raise ValueError(f"no plain-library snippet for task {task!r} (cls, qa or od)")
    lines = textwrap.wrap(INSPECTION_QUESTION, 80, drop_whitespace=False)
    return _QA_SNIPPET.format(
        requirements=PLAIN_REQUIREMENTS + (" peft" if adapter else ""),
        peft_import="from peft import PeftModel\n" if adapter else "",
        processor=adapter or model,
        model=model,
        peft_load=f'model = PeftModel.from_pretrained(model, "{adapter}")\n' if adapter else "",
        question="\n".join(f"    {line!r}" for line in lines),
        image=image,
    )
