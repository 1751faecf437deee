"""Dataset rows for the three configs, and the ``DatasetDict`` builder.

``qa`` rows teach a chat VLM to answer in the canonical text, ``od`` rows teach Florence-2 ``<OD>``
with ``bbox_str`` targets, ``cls`` rows teach a ViT one connector's label. All three come from the
same :class:`~dataset_tools.compose.Sample`, so their truths agree by construction.

Example:
    >>> dd = build_dataset(BuildConfig("qa", num=4, seed=0, size=224))
    >>> sorted(dd), dd["train"][0]["answer"][:6] in ("Passed", "Defect")
    (['test', 'test_unseen_housing', 'train', 'validation'], True)
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from PIL import Image

from dataset_tools.compose import Sample, compose_into, make_sample
from dataset_tools.looks import CLASSIC, HELD_OUT_FAMILIES, resolve_looks
from dataset_tools.png import LEVEL, encode_png, encode_scanlines, scanlines
from dataset_tools.render import HOUSINGS, SEEN_HOUSINGS, UNSEEN_HOUSING, Nuisances
from dataset_tools.sampling import (
    CONFIGS,
    HELD_OUT_LOOKS_SPLIT,
    SPLITS,
    TRAIN_POSITION_CHOICES,
    Config,
    Split,
    draw_spec,
    row_rng,
)
from qeu_space.geometry import CompositeLayout
from qeu_space.vocabulary import (
    CLASS_LABELS,
    DEFAULT_KINDS,
    INSPECTION_QUESTION,
    OD_PROMPT,
    DefectKind,
    class_label_of,
    class_labels,
    format_answer,
    format_bbox_str,
    kinds_in_order,
    od_categories,
    verdict_of,
)

if TYPE_CHECKING:
    import datasets

MIN_COMPOSITE = 224
"""Smallest composite side: its connectors (212 px wide) are the smallest registration reads."""

OD_CATEGORIES: tuple[str, ...] = od_categories(DEFAULT_KINDS)
"""The default ``od`` config's ``objects.category`` names (a ``ClassLabel``): the default defect
kinds' names; ``--kinds ... short`` adds ``short pin`` (:func:`features`)."""


def _nsoart(sample: Sample) -> Image.Image:
    from dataset_tools.nsoart import nsoart_image  # needs SOARTC: import only when asked for

    return nsoart_image(sample.image, sample.layout)


VARIANTS: dict[str, Callable[[Sample], Image.Image]] = {
    "plain": lambda sample: sample.image,
    "nsoart": _nsoart,
}
"""Image variants of a composite: ``plain``, or ``nsoart`` (SOARTC map blended over the test)."""


@dataclass(frozen=True)
class BuildConfig:
    """One dataset build; the CLI's options map one to one onto these fields.

    Attributes:
        config: ``qa``, ``od`` or ``cls``.
        num: rows in ``train``; ``validation``, ``test`` and ``test_unseen_housing`` get
            ``eval_fraction * num`` rows each (at least one).
        seed: the same seed gives the same rows, whatever ``num_proc``.
        size: composite side in pixels (``cls`` images are the lower connector of it).
        variant: ``plain`` or ``nsoart``.
        unlabelled_fraction: share of ``qa``/``od`` composites drawn without coordinate labels.
        nuisances: lighting, noise, blur, shift, rotation and JPEG settings.
        housings: housing variants of ``train``, ``validation`` and ``test``.
        unseen_housing: the one housing of ``test_unseen_housing`` (not among ``housings``).
        train_positions: ``held-out`` (train defects avoid the validation/test positions) or
            ``all`` (a pre-training set with defects anywhere).
        kinds: the defect kinds drawn (names, labels or keywords such as ``short``; kept in
            canonical order): ``bent pin`` and ``missing pin`` by default, ``short pin`` opt-in.
        looks: look families (:mod:`dataset_tools.looks`) the rows are drawn in, each row one of
            them (``classic``, the default: the first renderer, rows unchanged); also ``all``,
            ``train``, ``held-out`` or a comma list (resolved here). A build on looks without a
            held-out family also writes :data:`~dataset_tools.sampling.HELD_OUT_LOOKS_SPLIT`.
        num_proc: worker processes.
        png_level: ISA-L deflate level (1 to 3) of each image's own rows
            (:func:`~dataset_tools.png.encode_png`; a composite's top, shared across rows, is
            compressed once by zlib), 2 by default, or 0 to store them: PNGs about 1.5 x
            larger for about 1 ms less CPU a composite (``benchmarks/RESULTS_dataset.md``).
            The pixels are the same either way.
    """

    config: Config
    num: int
    seed: int = 0
    size: int = 448
    eval_fraction: float = 0.1
    variant: str = "plain"
    unlabelled_fraction: float = 0.15
    nuisances: Nuisances = field(default_factory=Nuisances)
    housings: tuple[str, ...] = SEEN_HOUSINGS
    unseen_housing: str = UNSEEN_HOUSING
    train_positions: str = "held-out"
    kinds: tuple[DefectKind, ...] = DEFAULT_KINDS
    looks: tuple[str, ...] | str = (CLASSIC,)
    num_proc: int = 1
    png_level: int = LEVEL

    def __post_init__(self) -> None:
        looks = self.looks if isinstance(self.looks, str) else ",".join(self.looks)
        try:
            object.__setattr__(self, "looks", resolve_looks(looks))
        except ValueError as e:
            raise ValueError(f"--looks: {e}") from None
        try:
            object.__setattr__(self, "kinds", kinds_in_order(self.kinds))
        except ValueError as e:
            choices = " ".join(k.keyword for k in DefectKind)
            raise ValueError(f"--kinds: {e} (choose from {choices})") from None
        if self.config not in CONFIGS:
            raise ValueError(f"unknown config {self.config!r}; choose one of {', '.join(CONFIGS)}")
        if self.num < 1:
            raise ValueError(f"--num must be at least 1 (rows in the train split), got {self.num}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {list(VARIANTS)}")
        if self.variant != "plain" and self.config == "cls":
            raise ValueError("cls rows are single connectors: only the plain variant applies")
        if not 0 < self.eval_fraction <= 1:
            raise ValueError(f"eval_fraction must be in (0, 1], got {self.eval_fraction}")
        if not 0 <= self.unlabelled_fraction <= 1:
            raise ValueError(
                f"unlabelled_fraction must be in [0, 1], got {self.unlabelled_fraction}"
            )
        unknown = [h for h in (*self.housings, self.unseen_housing) if h not in HOUSINGS]
        if unknown or not self.housings:
            raise ValueError(
                f"housings must be some of {', '.join(HOUSINGS)}; got {unknown or 'none'}"
            )
        if self.unseen_housing in self.housings:
            raise ValueError(
                f"the unseen housing {self.unseen_housing!r} must not be among --housings"
            )
        if self.train_positions not in TRAIN_POSITION_CHOICES:
            raise ValueError(
                f"--train-positions must be one of {', '.join(TRAIN_POSITION_CHOICES)}, "
                f"got {self.train_positions!r}"
            )
        if self.num_proc < 1:
            raise ValueError(f"--num-proc must be at least 1, got {self.num_proc}")
        if self.png_level not in range(4):
            raise ValueError(
                f"--png-level must be 0 (stored) or a deflate level 1 to 3, got {self.png_level}"
            )
        CompositeLayout(self.size)  # validates the size
        if self.size < MIN_COMPOSITE:
            raise ValueError(
                f"--size must be at least {MIN_COMPOSITE}: every model reads the registered frame, "
                f"and registration needs pins of a few pixels (got {self.size})"
            )

    @property
    def held_out_looks(self) -> bool:
        """Whether :data:`~dataset_tools.sampling.HELD_OUT_LOOKS_SPLIT` is written: the rows are
        drawn in looks (not only ``classic``) and none of them is held out."""
        return set(self.looks) != {CLASSIC} and not set(self.looks) & set(HELD_OUT_FAMILIES)

    @property
    def split_sizes(self) -> dict[Split, int]:
        held_out = max(1, math.ceil(self.num * self.eval_fraction))
        splits = (*SPLITS, HELD_OUT_LOOKS_SPLIT) if self.held_out_looks else SPLITS
        return {s: (self.num if s == "train" else held_out) for s in splits}

    def split_looks(self, split: Split) -> tuple[str, ...]:
        """The look families of ``split``'s rows."""
        return HELD_OUT_FAMILIES if split == HELD_OUT_LOOKS_SPLIT else self.looks


def _png(image: Image.Image | np.ndarray, shared_rows: int = 0, level: int = LEVEL) -> dict:
    """The ``Image()`` feature's storage form, PNG-encoded by :func:`~dataset_tools.png.encode_png`.

    ``shared_rows``: the top rows that repeat across rows (a composite's reference half),
    compressed once at :data:`~dataset_tools.png.TOP_LEVEL`; ``level``: that of the others.
    """
    data = encode_png(np.asarray(image), shared_rows=shared_rows, level=level)
    return {"bytes": data, "path": None}


def _common(sample: Sample, image: dict, variant: str) -> dict:
    return {
        "id": sample.id,
        "image": image,
        "housing": sample.housing,
        "pins": sample.pins,
        "labels_drawn": sample.labels_drawn,
        "variant": variant,
        "look": sample.look,
    }


def _composite_png(
    sample: Sample, variant: str, level: int = LEVEL
) -> tuple[dict, tuple[int, int]]:
    """The composite of ``variant`` as PNG, and its size; rows above the test panel are shared.

    A plain composite is composed again, straight into the PNG encoder's scanline buffer
    (``sample.image`` is the same pixels; reading them back out of PIL costs more than placing
    the two products once more).
    """
    layout = sample.layout
    top = layout.origin("test")[1]
    if variant != "plain":
        image = np.asarray(VARIANTS[variant](sample))
        return _png(image, top, level), (image.shape[1], image.shape[0])
    # composed straight into the encoder's scanlines (no composite array, no copy into rows)
    raw, view = scanlines(layout.size, layout.size)
    compose_into(view, sample.reference, sample.test, layout, sample.labels_drawn)
    data = encode_scanlines(raw, shared_rows=top, level=level)
    png = {"bytes": data, "path": None}
    return png, (layout.size, layout.size)


def chat_messages(question: str, answer: str) -> list[dict]:
    """The conversation TRL's VLM SFT reads beside ``images``: the user's image and question, the
    assistant's answer (``content`` as typed blocks; an image block is a placeholder for
    ``images[0]``).

    Example:
        >>> [m["role"] for m in chat_messages("Any defect?", "Passed. No defects found.")]
        ['user', 'assistant']
    """
    return [
        {
            "role": "user",
            "content": [{"type": "image", "text": None}, {"type": "text", "text": question}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def qa_columns(image: dict, findings) -> dict:
    """The ``qa`` columns of one composite (PNG storage form) with its truth ``findings``."""
    answer = format_answer(findings)
    return {
        "question": INSPECTION_QUESTION,
        "answer": answer,
        "findings": [f.to_dict() for f in findings],
        "verdict": verdict_of(findings),
        "images": [image],
        "messages": chat_messages(INSPECTION_QUESTION, answer),
    }


def qa_row(sample: Sample, variant: str = "plain", png_level: int = LEVEL) -> dict:
    image, _ = _composite_png(sample, variant, png_level)
    return {**_common(sample, image, variant), **qa_columns(image, sample.findings)}


def od_row(
    sample: Sample,
    variant: str = "plain",
    categories: tuple[str, ...] = OD_CATEGORIES,
    png_level: int = LEVEL,
) -> dict:
    """One composite with its ``bbox_str`` and ``objects`` (categories: indices of
    ``categories``, the kinds the build draws)."""
    image, size = _composite_png(sample, variant, png_level)
    boxes = [f.box for f in sample.findings]
    return {
        **_common(sample, image, variant),
        "prompt": OD_PROMPT,
        "bbox_str": format_bbox_str(sample.findings, size),
        "objects": {
            "bbox": [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in boxes],
            "category": [categories.index(f.kind.value) for f in sample.findings],
        },
    }


def cls_row(
    sample: Sample,
    variant: str = "plain",
    labels: tuple[str, ...] = CLASS_LABELS,
    png_level: int = LEVEL,
) -> dict:
    """One connector (the lower product) and its label (an index of ``labels``); findings in that
    image's pixels."""
    ox, oy = sample.layout.origin("test")
    findings = [f.to_dict() for f in sample.findings]
    for f in findings:
        x1, y1, x2, y2 = f["box"]
        f["box"] = [x1 - ox, y1 - oy, x2 - ox, y2 - oy]
    return {
        **_common(sample, _png(sample.test, level=png_level), variant),
        "label": labels.index(class_label_of(sample.findings)),
        "findings": findings,
    }


ROW_BUILDERS: dict[Config, Callable[[Sample, str], dict]] = {
    "qa": qa_row,
    "od": od_row,
    "cls": cls_row,
}


def make_row(cfg: BuildConfig, split: Split, index: int) -> dict:
    """Row ``index`` of ``split``, in the features' storage form (images as PNG bytes): a pure
    function of ``(cfg, split, index)``."""
    rng = row_rng(cfg.seed, split, index)
    spec = draw_spec(
        cfg.config,
        split,
        index,
        rng,
        unlabelled_fraction=cfg.unlabelled_fraction,
        housings=cfg.housings,
        unseen_housing=cfg.unseen_housing,
        train_positions=cfg.train_positions,
        kinds=cfg.kinds,
    )
    looks = cfg.split_looks(split)
    # one family: no draw (a classic build's rows stay what they were); several: one per row
    look = looks[0] if len(looks) == 1 else looks[int(rng.integers(len(looks)))]
    layout = CompositeLayout(cfg.size)
    sample = make_sample(spec, rng, layout=layout, nuisances=cfg.nuisances, look=look)
    if cfg.config == "cls":
        return cls_row(sample, cfg.variant, class_labels(cfg.kinds), cfg.png_level)
    if cfg.config == "od":
        return od_row(sample, cfg.variant, od_categories(cfg.kinds), cfg.png_level)
    return qa_row(sample, cfg.variant, cfg.png_level)


# --------------------------------------------------------------------------- building many rows

ROWS_PER_TASK = 20
"""Rows one worker makes at a time: small enough to share 2 x 40 held-out rows out, large enough
that handing them over costs little."""
ROWS_PER_GROUP = 100
"""Parquet row group size (5 tasks): a reader fetches at most 100 images for one row."""
MAX_ROWS_PER_SHARD = 5000


@dataclass(frozen=True)
class Task:
    """Rows ``start`` to ``stop - 1`` of ``split``, all in parquet shard ``shard`` of ``shards``."""

    split: Split
    start: int
    stop: int
    shard: int
    shards: int


def shard_bounds(rows: int, max_rows: int = MAX_ROWS_PER_SHARD) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` of each shard, as even as ``Dataset.shard(contiguous=True)``."""
    n = max(1, math.ceil(rows / max_rows))
    div, mod = divmod(rows, n)
    starts = [div * i + min(i, mod) for i in range(n + 1)]
    return list(zip(starts[:-1], starts[1:], strict=True))


def plan_tasks(cfg: BuildConfig) -> list[Task]:
    """Every row of every split, in order, cut into tasks that never straddle a shard."""
    tasks = []
    for split, rows in cfg.split_sizes.items():
        bounds = shard_bounds(rows)
        for shard, (lo, hi) in enumerate(bounds):
            for start in range(lo, hi, ROWS_PER_TASK):
                tasks.append(Task(split, start, min(start + ROWS_PER_TASK, hi), shard, len(bounds)))
    return tasks


def _run_task(cfg: BuildConfig, task: Task, schema: pa.Schema) -> pa.RecordBatch:
    """The task's rows as Arrow in ``schema`` (see :func:`_to_batch`)."""
    return _to_batch([make_row(cfg, task.split, i) for i in range(task.start, task.stop)], schema)


def _to_batch(rows: list[dict], schema: pa.Schema) -> pa.RecordBatch:
    """Rows as Arrow in ``schema`` (the config's features' schema); a ``qa`` batch comes without
    ``images`` (see :func:`_complete`)."""
    if "images" in schema.names:
        schema = schema.remove(schema.get_field_index("images"))
        for row in rows:
            del row["images"]
    images = _image_column([row.pop("image") for row in rows], schema.field("image").type)
    rest = schema.remove(schema.get_field_index("image"))
    batch = pa.RecordBatch.from_pylist(rows, schema=rest)
    columns = dict(zip(rest.names, batch.columns, strict=True))
    columns["image"] = images
    return pa.RecordBatch.from_arrays([columns[name] for name in schema.names], schema=schema)


def _image_column(images: list[dict], storage: pa.DataType) -> pa.StructArray:
    """``Image()`` storage of PNG-bytes rows from one joined buffer: Arrow's builder would grow
    its buffer by copies, each on fresh memory, which costs more per row than the PNG's header."""
    data = [image["bytes"] for image in images]
    kind = storage.field("bytes").type
    offsets = np.zeros(len(data) + 1, np.int64 if kind == pa.large_binary() else np.int32)
    np.cumsum([len(b) for b in data], out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
    binary = pa.Array.from_buffers(kind, len(data), buffers)
    paths = pa.array([image["path"] for image in images], storage.field("path").type)
    return pa.StructArray.from_arrays([binary, paths], fields=list(storage))


def _complete(schema: pa.Schema, batch: pa.RecordBatch) -> pa.RecordBatch:
    """Add ``qa``'s ``images`` (``[image]``) as a list view of the ``image`` column: no copy is
    made or sent between processes (parquet still stores both columns)."""
    if "images" not in schema.names or "images" in batch.schema.names:
        return batch
    image = batch.column("image")
    offsets = pa.array(np.arange(len(image) + 1, dtype=np.int32))
    images = pa.ListArray.from_arrays(offsets, image, type=schema.field("images").type)
    columns = {**dict(zip(batch.schema.names, batch.columns, strict=True)), "images": images}
    return pa.RecordBatch.from_arrays([columns[name] for name in schema.names], schema=schema)


def _worker_task(job: tuple[BuildConfig, Task, str]) -> str:
    """Run a task in a worker; the batch goes to an Arrow file in ``folder`` that the parent
    maps: no pickling, and no copy through a pipe (which cost the parent ~1 ms a row)."""
    cfg, task, folder = job
    rows = [make_row(cfg, task.split, i) for i in range(task.start, task.stop)]
    batch = _to_batch(rows, _shared_schema(folder))
    path = os.path.join(folder, f"{task.split}-{task.start:08d}.arrow")
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return path


_SCHEMA_FILE = "schema.arrow"
_READY: multiprocessing.synchronize.Event | None = None
"""Set in a worker by the pool's initializer: the parent sets it once the schema file is written."""
_schemas: dict[str, pa.Schema] = {}


def _init_worker(ready: multiprocessing.synchronize.Event) -> None:
    global _READY
    _READY = ready


def _publish_schema(
    folder: str, schema: pa.Schema, ready: multiprocessing.synchronize.Event
) -> None:
    """Write the features' schema where the workers read it, then wake them: the workers start
    rendering before the parent has it (its ``datasets`` import, ~1.2 CPU s, overlaps their
    first rows instead of delaying them)."""
    staging = os.path.join(folder, _SCHEMA_FILE + ".tmp")
    with open(staging, "wb") as sink:
        sink.write(schema.serialize().to_pybytes())
    os.replace(staging, os.path.join(folder, _SCHEMA_FILE))
    ready.set()


def _shared_schema(folder: str) -> pa.Schema:
    """The schema the parent published (waiting for it the first time in this worker)."""
    if folder not in _schemas:
        if _READY is not None:
            _READY.wait()
        with open(os.path.join(folder, _SCHEMA_FILE), "rb") as source:
            _schemas[folder] = pa.ipc.read_schema(pa.py_buffer(source.read()))
    return _schemas[folder]


def _mapped(path: str) -> pa.RecordBatch:
    """The batch a worker wrote, memory-mapped (the file can go; the mapping stays valid)."""
    with pa.memory_map(path) as source:
        batch = pa.ipc.open_file(source).get_batch(0)
    os.unlink(path)
    return batch


@contextlib.contextmanager
def _opencv_on_one_thread() -> Iterator[None]:
    """The workers' OpenCV (the looks renderer's warps) runs on one thread: the workers already
    share the cores, and OpenCV's own pool would oversubscribe them. Set in the parent around
    the fork, never in a forked child: the child has no threads of the parent's OpenCV pool, and
    ``cv2.setNumThreads`` there waits for them forever (a deadlock seen in the test suite)."""
    import cv2

    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def _warm_up(cfg: BuildConfig, task: Task) -> None:
    """Make (and drop) the task's first row before the workers fork, so that they inherit what a
    first row loads: numba's compiled kernels (its cache load costs about 1.5 CPU seconds,
    which each worker paid again), the noise bank, the canvas and a reference. (Forking before
    this, so that each worker loads them itself, measured no faster:
    benchmarks/RESULTS_dataset.md; the parent's ``datasets`` import comes after the fork.)"""
    make_row(cfg, task.split, task.start)


def _pool_context() -> multiprocessing.context.BaseContext:
    """``fork`` where there is one (workers start in milliseconds with the renderer loaded)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def iter_batches(
    cfg: BuildConfig, *, progress: bool = False
) -> Iterator[tuple[Task, pa.RecordBatch]]:
    """Every task of :func:`plan_tasks` with its rows as an Arrow batch, in order.

    With ``cfg.num_proc > 1`` the tasks run in that many worker processes (one pool for all
    splits, so workers start once and keep their caches); each row still depends only on
    ``(seed, split, index)``. They start on the rows as soon as they fork and read the
    features' Arrow schema once the parent, importing ``datasets`` meanwhile, publishes it.
    ``progress`` shows a bar with the total and an ETA.
    """
    from tqdm.auto import tqdm

    tasks = plan_tasks(cfg)
    workers = min(cfg.num_proc, len(tasks))
    folder = tempfile.mkdtemp(prefix="qeu-batches-") if workers > 1 else None
    pool = None
    stack = contextlib.ExitStack()
    try:
        if folder is not None:
            stack.enter_context(_opencv_on_one_thread())
            _warm_up(cfg, tasks[0])
            context = _pool_context()
            ready = context.Event()
            pool = context.Pool(workers, initializer=_init_worker, initargs=(ready,))
            jobs = [(cfg, task, folder) for task in tasks]
            results = (_mapped(path) for path in pool.imap(_worker_task, jobs, chunksize=1))
        from dataset_tools.features import features  # datasets: while the workers render

        schema = features(cfg.config, cfg.kinds).arrow_schema
        if pool is None:
            results = (_run_task(cfg, task, schema) for task in tasks)
        else:
            _publish_schema(folder, schema, ready)
        total = sum(cfg.split_sizes.values())
        with tqdm(total=total, unit="row", desc=f"{cfg.config} rows", disable=not progress) as bar:
            for task, batch in zip(tasks, results, strict=True):
                bar.update(batch.num_rows)
                yield task, _complete(schema, batch)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        stack.close()


def build_dataset(cfg: BuildConfig, *, progress: bool = False) -> datasets.DatasetDict:
    """All four splits in memory (the rows of :func:`iter_batches`, ``cfg.num_proc`` workers)."""
    import datasets

    from dataset_tools.features import features

    batches: dict[str, list[pa.RecordBatch]] = {split: [] for split in cfg.split_sizes}
    for task, batch in iter_batches(cfg, progress=progress):
        batches[task.split].append(batch)
    feats = features(cfg.config, cfg.kinds)
    info = datasets.DatasetInfo(features=feats)
    schema = feats.arrow_schema
    return datasets.DatasetDict(
        {
            split: datasets.Dataset(
                datasets.table.InMemoryTable(pa.Table.from_batches(parts, schema=schema)),
                info=info.copy(),
                split=datasets.NamedSplit(split),
            )
            for split, parts in batches.items()
        }
    )
