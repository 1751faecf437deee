"""A ViT classifier (``ViTForImageClassification``) telling ``OK`` / ``BENDNG`` / ``NUKENG``.

Two inputs, told apart by ``config.num_channels``: 3 reads one connector (the first models), 6
reads a **pair**: the reference and the test, each registered and framed the same way, stacked as
channels (reference first). With one pin per 32 x 32 patch, each patch then holds the reference
pin and the test pin together, so "unlike the reference here" is what the patch embedding can
learn, and no look of the good product has to be memorised (issue 19).

The seeds found no model pre-trained for anomaly detection and concluded "train our own", so
this family starts from a config, not from Hub weights: ``--base`` names a preset of
:data:`PRESETS` (or a folder holding only a ``config.json``) and the weights start random. A
trained folder (``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``) loads
through :func:`qeu_space.modeling.loading.load_model` like every other model.

The input is one connector image (the ``cls`` rows: about 423 x 204). The shipped preset
(``vit-pins-scratch``) crops it to the pin grid (:mod:`qeu_space.views.framing`) and resizes that to
3 x 9 patches of 32 pixels, one pin centred in each.

A classifier has no text: :func:`generate` answers with the class label (``"BENDNG"``), which is
what the shared validation path scores (accuracy), and :func:`parse` has no positions to give.

Example:
    >>> loaded = new_model("vit-pins-scratch")
    >>> [label for label, _ in predict(loaded, [image])]
    ['OK']
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageEnhance
from transformers import (
    AutoModelForImageClassification,
    BatchFeature,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
)

from qeu_space.geometry import CompositeLayout
from qeu_space.modeling.families._common import inference, placement, rgb
from qeu_space.modeling.loaded import LoadedModel
from qeu_space.views import framing as views
from qeu_space.vocabulary import CLASS_LABELS, DefectKind, Finding, class_labels

NAME = "vit"
TASKS: tuple[str, ...] = ("cls",)
#: Validation metric (``eval_`` + this) that picks the best checkpoint.
BEST_METRIC = "accuracy"
#: transformers auto class that :func:`qeu_space.modeling.loading.load_model` uses for this family.
AUTO_CLASS = AutoModelForImageClassification
#: ``num_channels`` of a pair classifier (reference RGB, then test RGB) and of a single-image one.
PAIR_CHANNELS = 6
SINGLE_CHANNELS = 3
#: The pair classifier's labels: every kind of the vocabulary (short pins are a third of the look
#: zoo's defects), ``OK`` first; ids 0-2 are the three-class model's.
PAIR_LABELS: tuple[str, ...] = class_labels(tuple(DefectKind))


def _config(
    height: int,
    width: int,
    hidden: int,
    layers: int,
    heads: int,
    patch: int = 16,
    init: float = 0.02,
    framing: str | None = None,
    channels: int = SINGLE_CHANNELS,
    labels: tuple[str, ...] = CLASS_LABELS,
) -> ViTConfig:
    return ViTConfig(
        qeu_framing=framing,
        image_size=(height, width),
        patch_size=patch,
        num_channels=channels,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        initializer_range=init,
    )


#: Preset name -> config builder. ``vit-tiny-scratch`` was the first shipped model (96 x 192
#: whole-image input, 6 x 12 patches of about one pin each, 0.53 M parameters; 84 % on held-out
#: positions); ``vit-test-tiny`` is for tests.
#:
#: ``init=0.2`` (``initializer_range``, ten times ViT's 0.02) matters: one defective pin is one
#: patch in 72, and with the default init the ``[CLS]`` attention starts uniform, the defect is
#: averaged away, and the loss sat at ln 3 (chance) for 600 steps, the stall the seeds saw.
#: Larger initial query/key weights make attention peaked from the start; the loss then fell
#: to 0.65 within 240 steps (measured on 2,000 rows, batch 32, lr 1e-3).
#:
#: ``vit-pins-scratch`` (the shipped model since it measured better) frames the image on the pin
#: grid (:mod:`qeu_space.views.framing`) and uses one 32-pixel patch per pin cell: 3 x 9 patches,
#: each pin centred in its own patch, so a defect looks the same to the patch embedding at every
#: position, a held-out one included, and the housing around the grid (where an unseen housing
#: differs) is cut away.
PRESETS: dict[str, Callable[[], ViTConfig]] = {
    "vit-pins-scratch": lambda: _config(
        96, 288, hidden=96, layers=4, heads=3, patch=32, init=0.2, framing="connector_grid"
    ),
    "vit-tiny-scratch": lambda: _config(96, 192, hidden=96, layers=4, heads=3, init=0.2),
    "vit-test-tiny": lambda: _config(32, 64, hidden=32, layers=2, heads=2),
    "vit-pair-scratch": lambda: _config(
        96,
        288,
        hidden=96,
        layers=4,
        heads=3,
        patch=32,
        init=0.2,
        framing="connector_grid",
        channels=PAIR_CHANNELS,
        labels=PAIR_LABELS,
    ),  # fmt: skip
    "vit-pair-test-tiny": lambda: _config(
        32,
        96,
        hidden=32,
        layers=2,
        heads=2,
        framing="connector_grid",
        channels=PAIR_CHANNELS,
        labels=PAIR_LABELS,
    ),  # fmt: skip
}
"""``vit-pair-scratch`` is ``vit-pins-scratch`` reading the pair (6 channels) and telling the four
labels of :data:`PAIR_LABELS`; ``vit-pair-test-tiny`` is its tests' size."""


@dataclass(frozen=True)
class ScratchBase:
    """A base that is a config without weights: the model starts from random weights."""

    config: ViTConfig


def scratch_config(base: str | Path) -> ScratchBase | None:
    """The config of a preset name, or of a folder with ``config.json`` and no weights; else None.

    Raises:
        ValueError: a weightless folder whose config is not a ViT.
    """
    name = str(base)
    if name in PRESETS:
        return ScratchBase(PRESETS[name]())
    folder = Path(name)
    if not (folder / "config.json").is_file() or any(folder.glob("*.safetensors")):
        return None
    if any(folder.glob("*.bin")):
        return None  # pickled weights: load_model refuses them with its own message
    config = ViTConfig.from_pretrained(folder)
    if config.model_type != "vit":
        return None
    labels = PAIR_LABELS if is_pair(config) else CLASS_LABELS
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    return ScratchBase(config)


def is_pair(config: Any) -> bool:
    """Whether ``config`` reads the (reference, test) pair (6 channels) or one image (3).

    Raises:
        ValueError: any other channel count (neither input this project makes).
    """
    channels = int(getattr(config, "num_channels", SINGLE_CHANNELS))
    if channels not in (SINGLE_CHANNELS, PAIR_CHANNELS):
        raise ValueError(
            f"a ViT with num_channels={channels} reads neither one connector (3) nor a "
            f"reference/test pair (6): retrain it from a preset ({', '.join(PRESETS)})"
        )
    return channels == PAIR_CHANNELS


def split_composite(composite: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The reference and test connector images of a square composite (its layout's panels).

    Raises:
        ValueError: ``composite`` is not square (no composite layout fits it).
    """
    if composite.width != composite.height:
        raise ValueError(
            f"a composite is square (reference above test), got {composite.width} x "
            f"{composite.height}: pass the reference and the test connector images instead"
        )
    layout = CompositeLayout(composite.width)
    image = rgb(composite)
    return image.crop(layout.crop_box("reference")), image.crop(layout.crop_box("test"))


def pair_pixels(processor: Any, references: Sequence[Image.Image], tests: Sequence[Image.Image]):
    """``(batch, 6, H, W)`` pixel values: each framed reference's three channels, then its
    test's, through the model's (3-channel) image processor."""
    if len(references) != len(tests):
        raise ValueError(f"{len(references)} references for {len(tests)} test images")
    refs = processor(images=list(references), return_tensors="pt")["pixel_values"]
    test = processor(images=list(tests), return_tensors="pt")["pixel_values"]
    return torch.cat([refs, test], dim=1)


def image_processor(config: ViTConfig) -> ViTImageProcessorPil:
    """The processor for a config: resize to its input size, scale to [-1, 1] (ViT's default)."""
    height, width = _size(config)
    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": height, "width": width},
        resample=Image.Resampling.BILINEAR,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def new_model(base: str | Path | ScratchBase, *, device: str = "cpu") -> LoadedModel:
    """A randomly initialised classifier and its processor, as a :class:`LoadedModel`.

    Raises:
        ValueError: ``base`` is neither a preset nor a weightless ViT config folder.
    """
    scratch = base if isinstance(base, ScratchBase) else scratch_config(base)
    if scratch is None:
        raise ValueError(
            f"{base} is not a ViT preset ({', '.join(PRESETS)}) nor a folder with a ViT "
            "config.json and no weights"
        )
    model = ViTForImageClassification(scratch.config).to(device)
    processor = image_processor(scratch.config)
    name = str(base) if not isinstance(base, ScratchBase) else "scratch"
    return LoadedModel(model, processor, NAME, name, None, device)


def frame(image: Image.Image, config: ViTConfig) -> views.View:
    """``image`` (one connector) as the model reads it: registered into the canonical frame, then
    framed (:mod:`qeu_space.views.framing`: the pin grid for ``connector_grid``, else whole).

    Raises:
        NoConnectorError: no connector was found in ``image`` (the message says why).
    """
    return views.frame(rgb(image), views.framing_of(config), source="connector")


LAMP_GAIN = 0.45
"""Training batches see the lamp anywhere from ``1 - LAMP_GAIN`` to ``1 + LAMP_GAIN`` of its
brightness: the robustness benchmark's gain 0.6 and 1.4 lie inside, the datasets' own lighting
nuisance (+- 0.15) does not reach them, and a model fine-tuned on it alone called dark good
products bent (0.77 at gain 0.6)."""


def augment(image: Image.Image, rng: random.Random, gain: float = 0.0) -> Image.Image:
    """A random mirror (left-right, top-bottom or both) of a connector: the class is unchanged.

    A bent pin stays bent (its direction mirrors) and a missing pin stays missing, while the
    defect moves to the mirrored position and the housing's asymmetric parts (step, latch) swap
    sides: more positions and housing shapes for the same rows. With ``gain`` the image is also
    scaled by a factor drawn from ``[1 - gain, 1 + gain]`` (a brighter or darker lamp).
    """
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if gain:
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(1 - gain, 1 + gain))
    return image


def _size(config: ViTConfig) -> tuple[int, int]:
    size = config.image_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def matches(model_type: str, config: Mapping[str, Any]) -> bool:
    return model_type == "vit"


def lora_target_modules(scope: str) -> str:
    """ViT trains in full (``--full-finetune``); a LoRA over attention is there for symmetry."""
    return r"vit\.layers\.\d+\.attention\.(q_proj|k_proj|v_proj)"


def collate(
    processor: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    framing: str | None = None,
    rng: random.Random | None = None,
    gain: float = 0.0,
) -> BatchFeature:
    """Pixel values and class ids (``label``: an int of the ``ClassLabel`` or its name).

    Images are framed as the model sees them (``framing``, :mod:`qeu_space.views.framing`); with
    ``rng`` (training batches) each is randomly mirrored, and relit by up to ``gain``
    (:func:`augment`).
    """
    labels = torch.tensor([_label_id(row["label"]) for row in rows], dtype=torch.long)
    images = [views.frame(rgb(row["image"]), framing, source="connector").image for row in rows]
    if rng is not None:
        images = [augment(image, rng, gain) for image in images]
    batch = processor(images=images, return_tensors="pt")
    batch["labels"] = labels
    return batch


def collate_options(config: ViTConfig) -> dict[str, Any]:
    """Every batch is framed as the model sees it (:func:`frame`).

    Raises:
        ValueError: a pair model (its rows are composites: :mod:`qeu_space.training.vit_pair`).
    """
    if is_pair(config):
        raise ValueError(
            "a pair ViT (num_channels=6) trains on qa composites: run python -m "
            "qeu_space.training.vit_pair prepare / train, not qeu_space.train --task cls"
        )
    return {"framing": views.framing_of(config)}


def train_collate_options(seed: int) -> dict[str, Any]:
    """Training batches are also mirrored and relit at random (:func:`augment`), seeded."""
    return {"rng": random.Random(seed), "gain": LAMP_GAIN}


def _label_id(label: int | str) -> int:
    if isinstance(label, str):
        if label not in CLASS_LABELS:
            raise ValueError(f"unknown class label {label!r}; expected one of {CLASS_LABELS}")
        return CLASS_LABELS.index(label)
    if not 0 <= int(label) < len(CLASS_LABELS):
        raise ValueError(f"class id {label} out of range 0..{len(CLASS_LABELS) - 1}")
    return int(label)


def _pixels(loaded: LoadedModel, images: Sequence[Image.Image], references) -> torch.Tensor:
    """The model's input for ``images`` (and, for a pair model, their ``references``)."""
    config, processor = loaded.model.config, loaded.processor
    framed = [frame(image, config).image for image in images]
    if not is_pair(config):
        return processor(images=framed, return_tensors="pt")["pixel_values"]
    refs = [frame(image, config).image for image in references]
    return pair_pixels(processor, refs, framed)


def check_references(config: Any, images: Sequence, references: Sequence | None) -> None:
    """A pair model needs one reference per image; a single-image model ignores references.

    Raises:
        ValueError: a pair model without references, or counts that differ.
    """
    if is_pair(config) and references is None:
        raise ValueError(
            "this ViT compares the test with its reference (num_channels=6): pass "
            "references=[the good product of each pair], or give it composites"
        )
    if references is not None and len(references) != len(images):
        raise ValueError(f"{len(references)} references for {len(images)} test images")


def predict(
    loaded: LoadedModel,
    images: Sequence[Image.Image],
    *,
    references: Sequence[Image.Image] | None = None,
    batch_size: int = 32,
) -> list[tuple[str, dict[str, float]]]:
    """``(label, {label: probability})`` per image, labels from the model's ``id2label``.

    ``images`` are connectors under inspection; a pair model (6 channels) also needs each one's
    ``references`` (the good product it is compared with); a single-image model ignores them.

    Raises:
        ValueError: a pair model without references (see :func:`check_references`).
        NoConnectorError: no connector in an image or a reference.
    """
    model = loaded.model
    check_references(model.config, images, references)
    device, dtype = placement(model)
    id2label = model.config.id2label
    images = list(images)
    refs = list(references) if references is not None else [None] * len(images)
    results: list[tuple[str, dict[str, float]]] = []
    with inference(model):
        for start in range(0, len(images), batch_size):
            chunk, ref_chunk = images[start : start + batch_size], refs[start : start + batch_size]
            pixels = _pixels(loaded, chunk, ref_chunk)
            logits = model(pixel_values=pixels.to(device, dtype)).logits
            for row in logits.float().softmax(-1).cpu():
                probs = {id2label[i]: float(p) for i, p in enumerate(row)}
                results.append((max(probs, key=probs.__getitem__), probs))
    return results


def predict_composites(
    loaded: LoadedModel, composites: Sequence[Image.Image], *, batch_size: int = 32
) -> list[tuple[str, dict[str, float]]]:
    """:func:`predict` on square composites (reference above, test below): a pair model reads
    both panels, a single-image model the test panel."""
    pairs = [split_composite(image) for image in composites]
    return predict(
        loaded,
        [test for _, test in pairs],
        references=[ref for ref, _ in pairs],
        batch_size=batch_size,
    )


def generate(
    loaded: LoadedModel,
    images: Sequence[Image.Image],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
) -> list[str]:
    """The predicted class label per image (the classifier's "answer"; no tokens generated).

    A pair model reads each image as a composite (:func:`predict_composites`): the ``qa`` rows
    it is validated on are composites.
    """
    if is_pair(loaded.model.config):
        return [label for label, _ in predict_composites(loaded, images, batch_size=batch_size)]
    return [label for label, _ in predict(loaded, images, batch_size=batch_size)]


def parse(text: str, image_size: tuple[int, int]) -> list[Finding]:
    """A class label carries no position: no findings (see :mod:`qeu_space.modeling.attention`)."""
    return []
