"""Score a model (and its LoRA adapter, in the same run) on a Q/A or OD split.

:func:`evaluate` takes a loaded model and a ``datasets.Dataset`` and returns an :class:`EvalReport`;
:func:`run_evaluation` (behind ``python -m qeu_space.evaluate``) loads both from disk or the Hub and
writes the report as JSON and as a markdown table beside it. With an adapter the base model is
scored too, through PEFT's ``disable_adapter()`` on the same loaded weights, so the two rows differ
only by the adapter.

Example:
    python -m qeu_space.evaluate --task qa --base HuggingFaceTB/SmolVLM-256M-Instruct \\
        --adapter out/qa-lora --dataset out/dataset --split test --report out/eval.json
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from qeu_space.evaluation.metrics import (
    LabelledBox,
    ODMetrics,
    QAMetrics,
    findings_scores,
    od_intervals,
    od_metrics,
    qa_intervals,
    qa_metrics,
    xywh_to_xyxy,
)
from qeu_space.views.registration import NoConnectorError
from qeu_space.vocabulary import Finding

if TYPE_CHECKING:
    import datasets

    from qeu_space.modeling.loaded import LoadedModel

Task = Literal["qa", "od"]
TASKS: tuple[str, ...] = ("qa", "od")
#: Columns each task reads besides ``image`` (the dataset card's ``qa`` / ``od`` configs).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "qa": ("image", "findings", "answer"),
    "od": ("image", "objects"),
}

#: Headline metrics per task, in table order: (field of the metrics dataclass, column title).
HEADLINE: dict[str, tuple[tuple[str, str], ...]] = {
    "qa": (
        ("verdict_accuracy", "verdict acc"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("f1", "F1"),
        ("exact_match", "exact match"),
        ("direction_accuracy", "direction acc"),
        ("parse_failure_rate", "parse failures"),
        ("bleu", "BLEU"),
        ("rouge_l", "ROUGE-L"),
    ),
    "od": (
        ("map_50", "mAP@0.5"),
        ("map_50_95", "mAP@0.5:0.95"),
        ("findings_f1", "findings F1"),
        ("unreadable_rate", "unreadable"),
    ),
}


#: COCO evaluations behind an OD mAP interval (each takes ~0.1 s per 600 rows; the findings
#: intervals use the full :data:`~qeu_space.evaluation.metrics.BOOTSTRAP_DRAWS`).
OD_MAP_DRAWS = 200


class DatasetFormatError(ValueError):
    """The dataset lacks the split or the columns a task needs."""


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Prediction:
    """One generated text and the sample it belongs to.

    ``boxes`` (``od`` only): the text's boxes in the pixels of the row's image, where the truth
    boxes are (``{"label", "box": [x1, y1, x2, y2]}``); the text's own bins are the canonical
    composite's, which only the registration maps back.
    """

    id: str
    text: str
    boxes: list[dict] | None = None


@dataclass(frozen=True)
class ModelRun:
    """Scores of one model variant (``base`` or ``adapter``) on the split.

    Attributes:
        name: ``base`` or ``adapter``.
        model: the base id/folder, or the adapter id/folder.
        qa / od: the task's metrics (the other is ``None``).
        seconds: wall time of generation and parsing.
        samples_per_s: samples / seconds.
        predictions: what the model said, per sample.
        intervals: 95 % bootstrap interval ``[low, high]`` per headline metric (rows resampled:
            :func:`~qeu_space.evaluation.metrics.qa_intervals`, and for ``od``
            :func:`~qeu_space.evaluation.metrics.od_intervals` with :data:`OD_MAP_DRAWS` COCO
            evaluations for the mAP intervals).
    """

    name: str
    model: str
    seconds: float
    samples_per_s: float
    qa: QAMetrics | None = None
    od: ODMetrics | None = None
    predictions: list[Prediction] = field(default_factory=list)
    intervals: dict[str, list[float]] = field(default_factory=dict)

    @property
    def metrics(self) -> QAMetrics | ODMetrics:
        result = self.qa if self.qa is not None else self.od
        assert result is not None, "a run carries the metrics of its task"
        return result

    def headline(self, task: str) -> dict[str, float | None]:
        """The task's headline metrics by column title."""
        return {title: getattr(self.metrics, name) for name, title in HEADLINE[task]}


@dataclass(frozen=True)
class EvalReport:
    """What one evaluation run measured: the setting and one :class:`ModelRun` per variant."""

    task: str
    base: str
    adapter: str | None
    dataset: str
    split: str
    n_samples: int
    device: str
    max_new_tokens: int
    runs: list[ModelRun]
    grammar: bool = True  # answers generated under the answer / <OD> grammar

    def run(self, name: str) -> ModelRun:
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(f"no {name!r} run in this report (runs: {[r.name for r in self.runs]})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalReport:
        """Rebuild a report written by :meth:`to_dict` (e.g. read back from the JSON file)."""
        runs = []
        for raw in data["runs"]:
            raw = dict(raw)
            raw["qa"] = QAMetrics(**raw["qa"]) if raw.get("qa") else None
            raw["od"] = ODMetrics(**raw["od"]) if raw.get("od") else None
            raw["predictions"] = [Prediction(**p) for p in raw.get("predictions", [])]
            runs.append(ModelRun(**raw))
        return cls(**{**data, "runs": runs})

    def to_markdown(self) -> str:
        """A table with one row per variant and the task's headline metrics as columns."""
        titles = [title for _, title in HEADLINE[self.task]]
        head = ["model", *titles, "samples/s"]
        lines = [
            f"**{self.task}** on `{self.dataset}` split `{self.split}` "
            f"({self.n_samples} samples, {self.device}, max_new_tokens={self.max_new_tokens}"
            + ("" if self.grammar else ", no grammar: unconstrained generation")
            + ")",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
        ]
        for run in self.runs:
            cells = [f"{run.name} (`{run.model}`)"]
            cells += [_fmt(v) for v in run.headline(self.task).values()]
            cells.append(f"{run.samples_per_s:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        for run in self.runs:
            shown = [
                f"{title} [{low:.3f}, {high:.3f}]"
                for name, title in HEADLINE[self.task]
                if name in run.intervals
                for low, high in [run.intervals[name]]
            ]
            if shown:
                lines += ["", f"95 % bootstrap intervals, {run.name}: " + "; ".join(shown)]
        return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# --------------------------------------------------------------------------- truth from rows


def findings_of(row: dict) -> list[Finding]:
    """A Q/A row's true findings; accepts the column as a list of structs or a struct of lists."""
    raw = row["findings"]
    if isinstance(raw, dict):  # datasets' Sequence({...}) stores a dict of lists
        keys = list(raw)
        raw = [dict(zip(keys, values, strict=True)) for values in zip(*raw.values(), strict=True)]
    return [Finding.from_dict(item) for item in raw or []]


def boxes_of(row: dict, category_names: Sequence[str] | None = None) -> list[LabelledBox]:
    """An OD row's true boxes from ``objects`` {``bbox`` [x, y, w, h], ``category``}.

    ``category`` may be a name or a ``ClassLabel`` index (then ``category_names`` maps it).
    """
    objects = row["objects"]
    if isinstance(objects, list):  # a list of structs instead of a struct of lists
        objects = {
            "bbox": [o["bbox"] for o in objects],
            "category": [o["category"] for o in objects],
        }
    out = []
    for bbox, category in zip(objects["bbox"], objects["category"], strict=True):
        if not isinstance(category, str):
            if category_names is None:
                raise DatasetFormatError(
                    f"objects.category holds {category!r} but the dataset names no categories"
                )
            category = category_names[int(category)]
        out.append((category, xywh_to_xyxy(bbox)))
    return out


def check_columns(dataset: datasets.Dataset, task: str) -> None:
    """Raise :class:`DatasetFormatError` naming the missing columns and the right config."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    missing = [c for c in REQUIRED_COLUMNS[task] if c not in dataset.column_names]
    if missing:
        raise DatasetFormatError(
            f"the dataset lacks column(s) {missing} needed for task {task!r} "
            f"(has {dataset.column_names}); use the dataset's {task!r} config"
        )


def category_names(dataset: datasets.Dataset) -> list[str] | None:
    """The names of ``objects.category`` when it is a ``ClassLabel`` (else ``None``)."""
    feature = dataset.features["objects"]
    category = feature["category"] if isinstance(feature, dict) else None
    if category is None and hasattr(feature, "feature"):
        category = feature.feature.get("category")
    inner = getattr(category, "feature", category)
    return list(inner.names) if hasattr(inner, "names") else None


# --------------------------------------------------------------------------- library


def evaluate(
    loaded: LoadedModel,
    dataset: datasets.Dataset,
    *,
    task: str,
    dataset_name: str = "",
    split: str = "",
    compare_base: bool = True,
    batch_size: int = 4,
    max_new_tokens: int = 64,
    progress: bool = True,
    grammar: bool = True,
) -> EvalReport:
    """Generate for every row and score it; with an adapter, also score the base (one model).

    Args:
        loaded: from :func:`qeu_space.modeling.loading.load_model`.
        dataset: rows of the task's config (``qa``: image, findings, answer; ``od``: image,
            objects).
        task: ``qa`` or ``od``.
        dataset_name, split: recorded in the report.
        compare_base: with an adapter, add a ``base`` run under ``disable_adapter()``.
        batch_size: images per ``generate`` call.
        max_new_tokens: generation length (an OD answer needs ~5 tokens per box).
        progress: show a tqdm bar per run.
        grammar: generate under the answer grammar (chat VLM) / the ``<OD>`` grammar
            (Florence-2), as the Space does; ``False``: unconstrained (the ablation).

    Returns:
        An :class:`EvalReport` with the ``base`` run first when both are scored.
    """
    check_columns(dataset, task)
    if len(dataset) == 0:
        raise DatasetFormatError(f"split {split!r} of {dataset_name!r} has no rows")
    variants: list[tuple[str, str, Callable[[], contextlib.AbstractContextManager]]] = []
    if loaded.adapter is None:
        variants.append(("base", str(loaded.base), contextlib.nullcontext))
    else:
        if compare_base:  # PEFT's disable_adapter() on the same loaded weights
            variants.append(("base", str(loaded.base), loaded.base_only))
        variants.append(("adapter", str(loaded.adapter), contextlib.nullcontext))
    runs = [
        _score_variant(
            loaded,
            dataset,
            task=task,
            name=name,
            model=model,
            context=context,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            progress=progress,
            grammar=grammar,
        )
        for name, model, context in variants
    ]
    return EvalReport(
        task=task,
        base=str(loaded.base),
        adapter=None if loaded.adapter is None else str(loaded.adapter),
        dataset=dataset_name,
        split=split,
        n_samples=len(dataset),
        device=str(loaded.device),
        max_new_tokens=max_new_tokens,
        runs=runs,
        grammar=grammar,
    )


def _batches(dataset: datasets.Dataset, size: int) -> Iterator[dict[str, list]]:
    for start in range(0, len(dataset), size):
        yield dataset[start : start + size]


def _score_variant(
    loaded: LoadedModel,
    dataset: datasets.Dataset,
    *,
    task: str,
    name: str,
    model: str,
    context: Callable[[], contextlib.AbstractContextManager],
    batch_size: int,
    max_new_tokens: int,
    progress: bool,
    grammar: bool = True,
) -> ModelRun:
    from tqdm.auto import tqdm

    from qeu_space.modeling.families import family_for

    family = family_for(loaded.model)
    if task not in family.TASKS:
        raise ValueError(
            f"task {task!r} needs a model family that answers it; {loaded.base} is a "
            f"{family.NAME} model (tasks: {', '.join(family.TASKS)})"
        )
    texts: list[str] = []
    ids: list[str] = []
    predicted: list[list] = []
    found: list[list[Finding]] = []
    refused: list[bool] = []  # no connector found: never answered
    started = time.perf_counter()
    with context(), tqdm(total=len(dataset), desc=f"{task} {name}", disable=not progress) as bar:
        for batch in _batches(dataset, batch_size):
            images = [image.convert("RGB") for image in batch["image"]]
            said = _generate(family, loaded, images, batch.get("question"), max_new_tokens, grammar)
            refused += [t is None for t in said]
            answers = [t or "" for t in said]
            texts.extend(answers)
            ids.extend(str(i) for i in batch.get("id", range(len(ids), len(ids) + len(images))))
            if task == "od":  # boxes in each image's own pixels, where its truth boxes are
                for text, image in zip(answers, images, strict=True):
                    predicted.append(family.boxes_in_image(text, image) if text else [])
                    found.append(family.parse(text, image.size) if text else [])
            bar.update(len(images))
    seconds = time.perf_counter() - started
    if task == "od":
        predictions = [
            Prediction(i, t, [{"label": label, "box": list(box)} for label, box in boxes])
            for i, t, boxes in zip(ids, texts, predicted, strict=True)
        ]
    else:
        predictions = [Prediction(i, t) for i, t in zip(ids, texts, strict=True)]
    speed = len(dataset) / seconds if seconds > 0 else float("inf")
    if task == "qa":
        rows = dataset.remove_columns("image")
        truths = [findings_of(r) for r in rows]
        metrics = qa_metrics(truths, texts, references=rows["answer"])
        intervals = qa_intervals(truths, texts)
        return ModelRun(
            name, model, seconds, speed, qa=metrics, predictions=predictions, intervals=intervals
        )
    names = category_names(dataset)
    truths = [boxes_of(r, names) for r in dataset.remove_columns("image")]
    metrics = od_metrics(truths, predicted)
    # The truth's pins: an od row stores boxes only, so each is read on the registered grid.
    truth_findings = [
        _truth_findings(family, boxes, image)
        for boxes, image in zip(truths, dataset["image"], strict=True)
    ]
    bad = [r or not family.readable(t) for t, r in zip(texts, refused, strict=True)]
    scores = findings_scores(truth_findings, found, bad)
    intervals = od_intervals(truths, predicted, truth_findings, found, bad, map_draws=OD_MAP_DRAWS)
    unreadable = sum(bad)
    metrics = dataclasses.replace(
        metrics,
        findings_precision=scores.precision,
        findings_recall=scores.recall,
        findings_f1=scores.f1,
        findings_exact_match=scores.exact_match,
        n_unreadable=unreadable,
    )
    return ModelRun(
        name, model, seconds, speed, od=metrics, predictions=predictions, intervals=intervals
    )


def _truth_findings(family: Any, boxes: list[LabelledBox], image: Any) -> list[Finding]:
    """An od row's true findings: its boxes read on the registered grid (as they are, when no
    connector is found; the row is then unreadable for the model anyway)."""
    image = image.convert("RGB")
    try:
        return family.findings_in_image(boxes, image)
    except NoConnectorError:
        return family.pin_findings(boxes, image.size)


def _generate(
    family: Any,
    loaded: LoadedModel,
    images: list,
    questions: list[str] | None,
    max_new_tokens: int,
    grammar: bool = True,
) -> list[str | None]:
    """The family's greedy answers; Q/A rows asking another question than the family's default
    are asked theirs (consecutive rows with the same question share a ``generate`` call).

    An image in which no connector is found gets ``None`` (scored as the empty answer and
    counted as unreadable, never as an answer); the rest of its batch is answered one by one.
    """
    try:
        return _generate_batch(family, loaded, images, questions, max_new_tokens, grammar)
    except NoConnectorError:
        out = []
        for i, image in enumerate(images):
            one = None if not questions else questions[i : i + 1]
            try:
                out += _generate_batch(family, loaded, [image], one, max_new_tokens, grammar)
            except NoConnectorError:
                out.append(None)
        return out


def _generate_batch(
    family: Any,
    loaded: LoadedModel,
    images: list,
    questions: list[str] | None,
    max_new_tokens: int,
    grammar: bool = True,
) -> list[str]:
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    if "grammar" in inspect.signature(family.generate).parameters:
        options["grammar"] = grammar
    if not questions or "question" not in inspect.signature(family.generate).parameters:
        return family.generate(loaded, images, **options)
    out: list[str] = []
    start = 0
    for question, group in itertools.groupby(questions):
        n = len(list(group))
        chunk = images[start : start + n]
        out += family.generate(loaded, chunk, question=question, **options)
        start += n
    return out


# --------------------------------------------------------------------------- data loading (CLI)


def load_split(dataset: str, task: str, split: str) -> datasets.Dataset:
    """One split of ``dataset`` (a saved folder or a Hub id) in the task's config.

    A folder written by ``save_to_disk`` (``dataset_dict.json``) is read with
    ``load_from_disk``, also when it sits in a ``<task>/`` subfolder; anything else (parquet
    shards with a dataset card, a Hub id) goes through ``load_dataset`` with the task as config.

    Raises:
        DatasetFormatError: the split or the task's columns are missing.
    """
    import datasets

    root = Path(dataset).expanduser()
    if not root.exists() and (dataset.startswith((".", "/", "~")) or dataset.count("/") > 1):
        raise DatasetFormatError(f"dataset folder {dataset!r} does not exist")
    if root.is_dir():
        for folder in (root / task, root):
            if (folder / "dataset_dict.json").is_file():
                splits = datasets.load_from_disk(str(folder))
                break
        else:
            splits = _load_with_config(dataset, task)
    elif root.exists():
        raise DatasetFormatError(f"dataset {dataset!r} is a file; give a folder or a Hub id")
    else:
        splits = _load_with_config(dataset, task)
    if split not in splits:
        raise DatasetFormatError(
            f"dataset {dataset!r} has no split {split!r} (splits: {', '.join(splits)}); "
            "pick one with --split"
        )
    table = splits[split]
    check_columns(table, task)
    return table


def _load_with_config(dataset: str, task: str) -> datasets.DatasetDict:
    import datasets

    try:
        configs = datasets.get_dataset_config_names(dataset)
    except Exception:  # noqa: BLE001 - no card / no configs: read the files as they are
        configs = []
    name = task if task in configs else None
    return datasets.load_dataset(dataset, name)


# --------------------------------------------------------------------------- the CLI's run


@dataclass(frozen=True)
class EvalOptions:
    """The CLI's settings, one field per flag."""

    task: str
    base: str
    dataset: str
    report: Path
    adapter: str | None = None
    split: str = "test"
    limit: int | None = None
    compare_base: bool = True
    batch_size: int = 4
    max_new_tokens: int = 64
    trust_remote_code: bool = False
    device: str | None = None
    progress: bool = True
    grammar: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {TASKS}, got {self.task!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {self.limit}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("--batch-size and --max-new-tokens must be at least 1")
        if Path(self.report).suffix != ".json":
            raise ValueError(f"--report must name a .json file, got {str(self.report)!r}")


def run_evaluation(options: EvalOptions) -> EvalReport:
    """Load the split and the model, evaluate, and write ``report.json`` and ``report.md``."""
    from qeu_space.modeling.loading import load_model

    table = load_split(options.dataset, options.task, options.split)
    if options.limit is not None:
        table = table.select(range(min(options.limit, len(table))))
    loaded = load_model(
        options.base,
        options.adapter,
        trust_remote_code=options.trust_remote_code,
        device=options.device,
    )
    report = evaluate(
        loaded,
        table,
        task=options.task,
        dataset_name=options.dataset,
        split=options.split,
        compare_base=options.compare_base,
        batch_size=options.batch_size,
        max_new_tokens=options.max_new_tokens,
        progress=options.progress,
        grammar=options.grammar,
    )
    write_report(report, options.report)
    return report


def write_report(report: EvalReport, path: str | Path) -> tuple[Path, Path]:
    """Write ``path`` (JSON) and the markdown table beside it (same name, ``.md``)."""
    json_path = Path(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path = json_path.with_suffix(".md")
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    md_path.write_text(report.to_markdown(), encoding="utf-8")
    return json_path, md_path


def read_report(path: str | Path) -> EvalReport:
    """Read a report JSON written by :func:`write_report`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return EvalReport.from_dict(data)
    except FileNotFoundError:
        raise ValueError(f"metrics report {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{str(path)!r} is not a report written by `python -m qeu_space.evaluate` ({err})"
        ) from None
