"""Pre-train the inspection VLM's vision tower on what each pin is, before it learns to answer.

Trained on Q/A answers alone, the small from-scratch VLM learned the answer's form and ignored
the image: the same finding for every composite, train rows included, after 250 to 800 steps
(measured twice; its language model attends evenly over 81 image tokens at the start, so one
defective pin is a 1/81 signal it never picks up). This stage gives the vision tower that signal
first: a linear head on each pin's image token is trained to say what that pin is (ok, missing,
bent up / down / left / right, short), from the ``findings`` every Q/A row already has. Then
``python -m qeu_space.train --task qa --full-finetune`` starts from image tokens that already
tell defects apart, as the seeds' plan put it: "train our own pre-trained model, then fine-tune".

Which token holds which pin comes from the model's framing (:mod:`qeu_space.views.framing`) and the
project's geometry, so it stays right if either changes. The head is thrown away; the output
folder is the whole VLM (config, weights, processor), loadable by
:func:`qeu_space.modeling.loading.load_model`.

A short hand-written loop rather than ``Trainer``: the head and the per-token loss live outside
the transformers model, and the loop is 20 lines.

Example:
    python -m qeu_space.vision_pretrain --base runs/inspection-vlm-init --dataset data/qa-base \\
        --out runs/inspection-vlm-vision --steps 600
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from PIL import Image
from tqdm.auto import tqdm

from qeu_space.evaluation.metrics import xywh_to_xyxy
from qeu_space.geometry import CompositeLayout
from qeu_space.modeling.families import chat_vlm, florence2
from qeu_space.modeling.loading import load_model
from qeu_space.training.data import keep_registered
from qeu_space.views.framing import framing_of, grid_box
from qeu_space.views.registration import remember_at_least
from qeu_space.vocabulary import ALL_POSITIONS, DefectKind, Position

PIN_CLASSES: tuple[str, ...] = (
    "ok",
    "missing",
    "bent up",
    "bent down",
    "bent left",
    "bent right",
    "short",
)
"""Per-pin classes, appended to only (``short`` came last), so an index keeps its meaning."""


@dataclass(frozen=True)
class VisionPretrainResult:
    """What a run did and how well the tokens tell pins apart on the validation rows."""

    steps: int
    seconds: float
    final_loss: float
    token_accuracy: float
    defect_recall: float
    """Share of defective pins (validation) whose token is called defective (any defect)."""
    ok_accuracy: float
    """Share of good pins (validation) whose token is called ok."""
    class_recall: dict[str, float]
    """Per class present in the validation pins: share whose token is called that class."""


def pin_tokens(
    model_config: Any, composite_size: int = 448, *, grid: tuple[int, int] | None = None
) -> list[int]:
    """Index of each pin's image token (``ALL_POSITIONS`` order) in the vision tower's output.

    ``grid`` is the ``(columns, rows)`` of tokens out of the vision tower (raster order); by
    default a square ViT grid from the config's ``image_size / patch_size`` (Idefics3). A
    Florence-2's grid depends on its processor's image size (:func:`token_grid`).

    Raises:
        ValueError: the model does not frame the composite's test grid (nothing to align).
    """
    name = framing_of(model_config)
    if name != "composite_test_grid":
        raise ValueError(
            f"vision pre-training needs a model that reads the test pin grid (qeu_framing "
            f"'composite_test_grid'), this one has {name!r}; build it with "
            "`python -m qeu_space.inspection_vlm` or `python -m qeu_space.inspection_od`"
        )
    if grid is None:
        vision = model_config.vision_config
        side = vision.image_size // vision.patch_size
        grid = (side, side)
    columns, rows = grid
    layout = CompositeLayout(composite_size)
    x1, y1, x2, y2 = grid_box((composite_size, composite_size), name)
    ox, oy = layout.origin("test")
    tokens = []
    for position in ALL_POSITIONS:
        cx, cy = layout.connector.pin_center(position)
        column = int((cx + ox - x1) / (x2 - x1) * columns)
        row = int((cy + oy - y1) / (y2 - y1) * rows)
        tokens.append(row * columns + column)
    return tokens


def token_grid(model_config: Any, processor: Any) -> tuple[int, int]:
    """``(columns, rows)`` of the vision tower's output tokens for the processor's image size."""
    if getattr(model_config, "model_type", "") == "florence2":
        stride = math.prod(model_config.vision_config.patch_stride)
        size = processor.image_processor.size
        return size["width"] // stride, size["height"] // stride
    vision = model_config.vision_config
    side = vision.image_size // vision.patch_size
    return side, side


def pin_labels(findings: Sequence[Mapping[str, Any]]) -> list[int]:
    """Class of every pin (``ALL_POSITIONS`` order, indices into :data:`PIN_CLASSES`)."""
    labels = [0] * len(ALL_POSITIONS)
    for finding in findings:
        index = ALL_POSITIONS.index(Position.parse(finding["position"]))
        kind = DefectKind.parse(finding["kind"])
        if kind is DefectKind.BENT:
            labels[index] = PIN_CLASSES.index(f"bent {finding['direction']}")
        else:
            labels[index] = PIN_CLASSES.index(kind.keyword)
    return labels


def row_pin_labels(row: Mapping[str, Any]) -> list[int]:
    """:func:`pin_labels` of a ``qa`` row (its ``findings``) or an ``od`` row, whose pins are
    read from its ``objects`` boxes on the registered grid (kind from the category, bend
    direction from where the box lies around the pin)."""
    if "findings" in row:
        return pin_labels(row["findings"])
    boxes = [(name, xywh_to_xyxy(box)) for name, box in _objects(row["objects"])]
    found = florence2.findings_in_image(boxes, row["image"].convert("RGB"), directions=True)
    return pin_labels([f.to_dict() for f in found])


def _objects(objects: Any) -> list[tuple[str, Sequence[float]]]:
    if isinstance(objects, Mapping):
        return list(zip(objects["category"], objects["bbox"], strict=True))
    return [(o["category"], o["bbox"]) for o in objects]


def _pixels(
    processor: Any, images: Sequence[Image.Image], framing: str, florence: bool
) -> torch.Tensor:
    if florence:
        views = [florence2.view(image, framing).image for image in images]
        return processor.image_processor(views, return_tensors="pt")["pixel_values"]
    views = [[chat_vlm.view(image, framing)] for image in images]
    pixels = processor.image_processor(views, return_tensors="pt")["pixel_values"]
    return pixels.flatten(0, 1)  # (batch, 1 image, C, H, W) -> (batch, C, H, W)


def _tokens(vision: Any, pixels: torch.Tensor, florence: bool) -> torch.Tensor:
    if florence:  # DaViT gives a (batch, C, H, W) map: tokens in raster order
        return vision(pixels).last_hidden_state.flatten(2).transpose(1, 2)
    return vision(pixel_values=pixels).last_hidden_state


def pretrain_vision(
    base: str | Path,
    dataset: str | Path,
    out: str | Path,
    *,
    steps: int = 600,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    seed: int = 0,
    eval_rows: int = 200,
    position_heads: bool = False,
    progress: bool = True,
) -> VisionPretrainResult:
    """Train ``base``'s vision tower on per-pin classes of ``dataset``; save the VLM to ``out``.

    The base is the inspection VLM (Idefics3: labels from a ``qa`` dataset's ``findings``) or
    the ``<OD>`` model (Florence-2: a ``qa`` or an ``od`` dataset, whose pins are read from its
    boxes, :func:`row_pin_labels`).

    Raises:
        ValueError: the base does not frame the test grid, or the dataset has neither
            ``findings`` nor ``objects``.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    loaded = load_model(base, device="cpu", dtype=torch.float32)
    model, processor = loaded.model, loaded.processor
    name = framing_of(model.config)
    florence = loaded.family == florence2.NAME
    tokens = torch.tensor(pin_tokens(model.config, grid=token_grid(model.config, processor)))
    data = datasets.load_dataset(str(dataset)) if Path(dataset).is_dir() else None
    columns = data["train"].column_names if data is not None and "train" in data else []
    if "findings" not in columns and "objects" not in columns:
        raise ValueError(
            f"{dataset} is not a qa or od dataset folder (findings or objects; dataset_tools build)"
        )
    train, validation = data["train"], data.get("validation", data["train"])
    # Every row is read many times: register each once (looks: about 1 % are refused, left out).
    remember_at_least(2 * (len(train) + min(eval_rows, len(validation))))
    view = florence2.view if florence else chat_vlm.view
    train = keep_registered(train, view, name)
    validation = keep_registered(
        validation.select(range(min(eval_rows, len(validation)))), view, name, name="validation"
    )
    if florence:
        vision = model.model.vision_tower
        hidden = model.config.vision_config.embed_dim[-1]
    else:
        vision = model.model.vision_model
        hidden = vision.config.hidden_size
    head = torch.nn.Linear(hidden, len(PIN_CLASSES))
    # Where each pin is, read off its token: the answer names it, so the code must be clean.
    row_head, column_head = torch.nn.Linear(hidden, 3), torch.nn.Linear(hidden, 9)
    rows_of = torch.tensor([p.row_index for p in ALL_POSITIONS])
    columns_of = torch.tensor([p.column - 1 for p in ALL_POSITIONS])
    heads = [head, *((row_head, column_head) if position_heads else ())]
    params = [*vision.parameters(), *(p for h in heads for p in h.parameters())]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.05
    )
    vision.train()
    start, loss = time.perf_counter(), torch.tensor(0.0)
    bar = tqdm(range(steps), desc="vision pre-training", disable=not progress)
    for _ in bar:
        rows = train.select(rng.sample(range(len(train)), min(batch_size, len(train))))
        pins = _tokens(vision, _pixels(processor, rows["image"], name, florence), florence)
        pins = pins[:, tokens]
        target = torch.tensor([row_pin_labels(row) for row in rows])
        cross_entropy = torch.nn.functional.cross_entropy
        loss = cross_entropy(head(pins).flatten(0, 1), target.flatten())
        if position_heads:
            n = pins.shape[0]
            loss = loss + cross_entropy(row_head(pins).flatten(0, 1), rows_of.repeat(n))
            loss = loss + cross_entropy(column_head(pins).flatten(0, 1), columns_of.repeat(n))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    seconds = time.perf_counter() - start
    vision.eval()
    scores = _score(vision, head, processor, validation, tokens, name, eval_rows, florence)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    result = VisionPretrainResult(steps, round(seconds, 1), float(loss.item()), *scores)
    (Path(out) / "vision_pretrain.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


@torch.no_grad()
def _score(
    vision, head, processor, rows, tokens, name, limit, florence
) -> tuple[float, float, float, dict[str, float]]:
    rows = rows.select(range(min(limit, len(rows))))
    predicted, truth = [], []
    for begin in range(0, len(rows), 32):
        chunk = rows.select(range(begin, min(begin + 32, len(rows))))
        pixels = _pixels(processor, chunk["image"], name, florence)
        logits = head(_tokens(vision, pixels, florence))
        predicted.append(logits[:, tokens].argmax(-1).flatten())
        truth.append(torch.tensor([row_pin_labels(row) for row in chunk]).flatten())
    p, t = torch.cat(predicted), torch.cat(truth)
    defect, good = t > 0, t == 0
    recall = float((p[defect] > 0).float().mean()) if defect.any() else 1.0
    per_class = {
        name: round(float((p[t == c] == c).float().mean()), 4)
        for c, name in enumerate(PIN_CLASSES)
        if (t == c).any()
    }
    return float((p == t).float().mean()), recall, float((p[good] == 0).float().mean()), per_class
