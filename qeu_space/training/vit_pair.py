"""Train the pair ViT (reference and test as 6 channels) on composites of the training looks.

Issue 19: the single-image ViT learned "looks like our renderer's good grid" and flagged good
products of other looks. The pair model (:data:`qeu_space.modeling.families.vit.PAIR_CHANNELS`)
reads the reference beside the test, pin by pin; this module trains it.

Data are ``qa`` rows (``python -m dataset_tools build --config qa --looks train --kinds bent
missing short``): each composite already holds a reference and a test of one rig, and its
``findings`` give the label, so no new dataset config is needed. ``prepare`` registers and frames
both panels once (the slow part: about 80 ms a pair) and keeps the model-sized crops; ``train``
then runs many cheap epochs over them with augmentation drawn **apart** for the reference and
the test (gain, gamma, white balance, an uneven light field across the panel, blur, and a shift
of up to 2 pixels standing for registration error), so no brightness cue survives, not even a
darker corner, and a kind is learned from the pin's shape.

CLI:
    OMP_NUM_THREADS=1 python -m qeu_space.training.vit_pair prepare --dataset data/qa-pairs \\
        --out data/qa-pairs.npz
    OMP_NUM_THREADS=1 python -m qeu_space.training.vit_pair train --data data/qa-pairs.npz \\
        --init-from models/vit-inspector --out runs/vit-pair --epochs 30
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from qeu_space.modeling.families import vit
from qeu_space.vocabulary import Finding, class_label_of

#: Splits ``prepare`` reads by default: never the held-out looks' split (never trained on, nor
#: used to choose anything).
PREPARE_SPLITS = ("train", "validation")


def label_of(findings: Sequence[dict]) -> int:
    """The pair label id (:data:`vit.PAIR_LABELS`) of a row's ``findings`` column."""
    return vit.PAIR_LABELS.index(class_label_of([Finding.from_dict(f) for f in findings]))


def pair_arrays(
    processor: Any, config: Any, composite: Image.Image
) -> tuple[np.ndarray, np.ndarray]:
    """The reference and test of ``composite`` as the model reads them: ``(3, H, W)`` uint8 each
    (the processor's resize, before normalisation).

    Raises:
        NoConnectorError: a panel holds no connector.
    """
    ref, test = vit.split_composite(composite)
    framed = [vit.frame(image, config).image for image in (ref, test)]
    pixels = processor(images=framed, return_tensors="np")["pixel_values"]  # in [-1, 1]
    values = np.clip(np.round((np.asarray(pixels) * 0.5 + 0.5) * 255.0), 0, 255)
    return values[0].astype(np.uint8), values[1].astype(np.uint8)


def _load(dataset: str, splits: Sequence[str]) -> Any:
    """The ``splits`` of a dataset folder: ``save_to_disk`` output, or parquet shards named
    ``<split>-*.parquet`` anywhere below it (what ``dataset_tools build`` writes)."""
    import datasets

    folder = Path(dataset)
    if (folder / "dataset_dict.json").is_file():
        return datasets.load_from_disk(dataset)
    files = {s: sorted(str(f) for f in folder.rglob(f"{s}-*.parquet")) for s in splits}
    missing = [s for s, found in files.items() if not found]
    if missing:
        raise ValueError(f"{dataset} has no parquet shards of split(s) {missing}")
    return datasets.load_dataset("parquet", data_files=files)


def prepare(
    dataset: str,
    out: Path,
    splits: Sequence[str] = PREPARE_SPLITS,
    shard: int = 0,
    shards: int = 1,
) -> dict[str, int]:
    """Frame every pair of ``splits`` of a ``qa`` dataset folder into ``out`` (``.npz``); with
    ``shards`` > 1 only rows ``i`` with ``i % shards == shard`` (one process each).

    Returns rows kept, refused (no connector found) and failed (registration raised another
    error, e.g. ``math domain error`` in the window search) per split.
    """
    from qeu_space.views.registration import NoConnectorError

    config = vit.PRESETS["vit-pair-scratch"]()
    processor = vit.image_processor(config)
    data = _load(dataset, splits)
    arrays: dict[str, list] = {k: [] for k in ("reference", "test", "label", "split", "look")}
    counts: dict[str, int] = {}
    for split in splits:
        if split not in data:
            raise ValueError(f"{dataset} has no split {split!r} (it has {', '.join(data)})")
        rows = data[split]
        if shards > 1:
            rows = rows.select(range(shard, len(rows), shards))
        missing = {"image", "findings"} - set(rows.column_names)
        if missing:
            raise ValueError(
                f"{dataset} lacks {sorted(missing)}: build qa rows "
                "(python -m dataset_tools build --config qa)"
            )
        kept = refused = failed = 0
        for row in rows:
            try:
                ref, test = pair_arrays(processor, config, row["image"].convert("RGB"))
            except NoConnectorError:
                refused += 1
                continue
            except ValueError as err:  # a registration failure that is not a refusal: skip it
                print(f"{split} row {row.get('id')}: registration failed ({err})", file=sys.stderr)
                failed += 1
                continue
            arrays["reference"].append(ref)
            arrays["test"].append(test)
            arrays["label"].append(label_of(row["findings"]))
            arrays["split"].append(split)
            arrays["look"].append(row.get("look") or "")
            kept += 1
        counts[f"{split}_kept"], counts[f"{split}_refused"] = kept, refused
        counts[f"{split}_failed"] = failed
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        reference=np.stack(arrays["reference"]),
        test=np.stack(arrays["test"]),
        label=np.array(arrays["label"], np.int64),
        split=np.array(arrays["split"]),
        look=np.array(arrays["look"]),
    )
    return counts


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augment:
    """Ranges of the photometric and geometric draws, each made apart for reference and test.

    The light field (``field_*``) is uneven light across one panel: a lamp off-centre, lens
    falloff, a shadow. Uniform gain alone taught the model that any smooth darkening of the
    test's corner pins is "unlike the reference" (28.6 % of good products flagged under strong
    vignetting, issue 19).
    """

    gain: tuple[float, float] = (0.55, 1.5)
    gamma: tuple[float, float] = (0.6, 1.6)
    white_balance: float = 0.15
    blur_p: float = 0.35
    #: Gaussian blur sigma (panel px, log-uniform) of a blurred panel: slight softness to defocus
    blur_sigma: tuple[float, float] = (0.3, 2.2)
    shift_px: int = 2
    #: share of panels under an uneven light field (the rest lit evenly)
    field_p: float = 0.7
    #: radial falloff: most light lost at the panel point farthest from the field's centre
    field_strength: float = 0.65
    #: the field's centre, in panel widths / heights, may lie this far outside the panel
    field_centre_out: float = 0.75
    #: how the falloff grows with distance, ``(r / r_far) ** power`` (1: cone, 4: flat middle)
    field_power: tuple[float, float] = (1.0, 4.0)
    #: a linear gradient in a random direction: gain 1 +- this at the panel's two ends
    field_gradient: float = 0.3


def _log_uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    u = torch.rand(n, generator=g)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def _shift(x: torch.Tensor, g: torch.Generator, most: int) -> torch.Tensor:
    """Each image moved by its own whole-pixel offset up to ``most`` (edges repeated): the
    registration error between two shots, pin parallax."""
    n, _, h, w = x.shape
    dy = torch.randint(-most, most + 1, (n, 1, 1), generator=g)
    dx = torch.randint(-most, most + 1, (n, 1, 1), generator=g)
    rows = (torch.arange(h).view(1, h, 1) + dy).clamp(0, h - 1)
    cols = (torch.arange(w).view(1, 1, w) + dx).clamp(0, w - 1)
    batch = torch.arange(n).view(n, 1, 1)
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def light_field(n: int, h: int, w: int, g: torch.Generator, aug: Augment) -> torch.Tensor:
    """``(n, 1, h, w)`` smooth gains, one field per panel: a radial falloff about a random centre
    (inside or outside the panel) times a linear gradient; a share ``1 - field_p`` stays 1.

    Distances are in pixels (the panel is 1 : 3), so a falloff is round, as a lens's is.
    """
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
    spread = 1 + 2 * aug.field_centre_out
    cy = ((torch.rand(n, generator=g) * spread - aug.field_centre_out) * h).view(n, 1, 1)
    cx = ((torch.rand(n, generator=g) * spread - aug.field_centre_out) * w).view(n, 1, 1)
    r = torch.sqrt((ys - cy) ** 2 + (xs - cx) ** 2)
    r_far = r.flatten(1).amax(1).view(n, 1, 1)
    power = (
        aug.field_power[0] + torch.rand(n, generator=g) * (aug.field_power[1] - aug.field_power[0])
    ).view(n, 1, 1)
    strength = (torch.rand(n, generator=g) * aug.field_strength).view(n, 1, 1)
    field = 1 - strength * (r / r_far) ** power
    angle = (torch.rand(n, generator=g) * 2 * math.pi).view(n, 1, 1)
    slope = ((torch.rand(n, generator=g) * 2 - 1) * aug.field_gradient).view(n, 1, 1)
    along = ((xs / w - 0.5) * torch.cos(angle) + (ys / h - 0.5) * torch.sin(angle)) * 2
    field = field * (1 + slope * along.clamp(-1, 1))
    even = torch.rand(n, generator=g) >= aug.field_p
    field[even] = 1.0
    return field.unsqueeze(1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x`` (``(n, c, H, W)`` float) blurred by a Gaussian of its own ``sigma`` (``(n,)``, px)
    per image: two 1-D passes of one grouped convolution (edges repeated)."""
    n, c, h, w = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps.view(1, -1) / sigma.view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n * c, k)
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"),
                    kernel.view(n * c, 1, 1, -1), groups=n * c)  # fmt: skip
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"),
                    kernel.view(n * c, 1, -1, 1), groups=n * c)  # fmt: skip
    return flat.view(n, c, h, w)


def relight(
    x: torch.Tensor,
    g: torch.Generator,
    *,
    gamma: tuple[float, float],
    gain: tuple[float, float],
    white_balance: float,
) -> torch.Tensor:
    """``x`` (``(n, 3, H, W)`` uint8) under its own light per image, as float in [0, 1]: a gamma
    and a gain (each log-uniform in its range) and a white balance (each channel's gain
    ``1 +- white_balance``), one lookup table per image and channel on the uint8 values.

    The draw shared by the pair ViT's panels (:func:`augment_panel`) and the chat VLM's training
    views (:mod:`qeu_space.training.photometric`)."""
    n = x.shape[0]
    gammas = _log_uniform(g, n, *gamma)[:, None, None]
    gains = _log_uniform(g, n, *gain)[:, None, None]
    balance = 1 + (torch.rand(n, 3, 1, generator=g) * 2 - 1) * white_balance
    levels = torch.linspace(0, 1, 256).view(1, 1, 256)
    lut = (levels**gammas * gains * balance).clamp(0, 1)  # (n, 3, 256)
    return torch.gather(lut, 2, x.reshape(n, 3, -1).long()).view(x.shape)


def augment_panel(x: torch.Tensor, g: torch.Generator, aug: Augment) -> torch.Tensor:
    """One panel batch (``(n, 3, H, W)`` uint8) under its own random imaging, as float in [0, 1].

    Light (gamma, gain, white balance: :func:`relight`) is one lookup table per image and channel
    on the uint8 values (cheap on a shared CPU); then an uneven light field (:func:`light_field`)
    multiplies it, and a Gaussian blur of random width softens a share of the panels (out of focus).
    """
    n, _, h, w = x.shape
    x = _shift(x, g, aug.shift_px) if aug.shift_px else x
    out = relight(x, g, gamma=aug.gamma, gain=aug.gain, white_balance=aug.white_balance)
    if aug.field_p > 0:
        out = (out * light_field(n, h, w, g, aug)).clamp(0, 1)
    blurred = torch.rand(n, generator=g) < aug.blur_p
    if blurred.any():
        sigma = _log_uniform(g, int(blurred.sum()), *aug.blur_sigma)
        out[blurred] = gaussian_blur(out[blurred], sigma).clamp(0, 1)  # float round-off
    return out


def augment_pairs(
    ref: torch.Tensor, test: torch.Tensor, labels: torch.Tensor, g: torch.Generator, aug: Augment
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of pairs (uint8) under augmentation: one mirror for both panels of a pair (the
    pins stay aligned), imaging drawn apart, and good pairs' panels swapped half the time."""
    ref, test = ref.clone(), test.clone()
    n = ref.shape[0]
    for dim in (3, 2):  # left-right, top-bottom: the class is unchanged
        flip = torch.rand(n, generator=g) < 0.5
        ref[flip], test[flip] = ref[flip].flip(dim), test[flip].flip(dim)
    swap = (labels == 0) & (torch.rand(n, generator=g) < 0.5)
    ref[swap], test[swap] = test[swap].clone(), ref[swap].clone()
    return augment_panel(ref, g, aug), augment_panel(test, g, aug)


def model_input(ref: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """``(n, 6, H, W)`` normalised as the processor does (mean 0.5, std 0.5), reference first."""
    return torch.cat([ref, test], dim=1) * 2.0 - 1.0


# --------------------------------------------------------------------------- model


def pair_model_from(folder: str | None, preset: str = "vit-pair-scratch"):
    """A pair ViT: from ``preset`` with random weights, or warm-started from a single-image ViT
    ``folder`` (its weights; the patch embedding's reference channels start at zero, so it
    starts as that model, and the ``SHORTNG`` row of the head starts new)."""
    from transformers import ViTForImageClassification

    config = vit.PRESETS[preset]()
    model = ViTForImageClassification(config)
    if folder is None:
        return model
    single = ViTForImageClassification.from_pretrained(folder)
    if vit.is_pair(single.config):
        return ViTForImageClassification.from_pretrained(folder)
    state = single.state_dict()
    own = model.state_dict()
    for key, value in state.items():
        if key not in own:
            continue
        if key.endswith("patch_embeddings.projection.weight"):
            weight = torch.zeros_like(own[key])
            weight[:, 3:] = value
            own[key] = weight
        elif key.startswith("classifier."):
            own[key][: value.shape[0]] = value
        elif own[key].shape == value.shape:
            own[key] = value
        else:
            raise ValueError(
                f"{folder}: {key} is {tuple(value.shape)}, the preset's is "
                f"{tuple(own[key].shape)}: warm-start from a vit-pins-scratch model"
            )
    model.load_state_dict(own)
    return model


@torch.no_grad()
def evaluate(model, ref: torch.Tensor, test: torch.Tensor, labels: torch.Tensor) -> dict:
    """Loss, 4-class accuracy, verdict accuracy and good-flagged rate of un-augmented pairs."""
    model.eval()
    logits = []
    for start in range(0, len(labels), 128):
        r = ref[start : start + 128].float() / 255.0
        t = test[start : start + 128].float() / 255.0
        logits.append(model(pixel_values=model_input(r, t)).logits)
    out = torch.cat(logits)
    predicted = out.argmax(-1)
    good = labels == 0
    flagged = predicted != 0
    return {
        "loss": float(F.cross_entropy(out, labels)),
        "accuracy": float((predicted == labels).float().mean()),
        "verdict": float((flagged == ~good).float().mean()),
        "good_flagged": float(flagged[good].float().mean()) if good.any() else float("nan"),
    }


def train(args: argparse.Namespace) -> dict:
    """Train, keep the epoch best on validation (verdict, then loss), save a model folder."""
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    parts = [np.load(path) for path in args.data]
    split = np.concatenate([part["split"] for part in parts])
    tensors = {
        k: torch.from_numpy(np.concatenate([part[k] for part in parts]))
        for k in ("reference", "test", "label")
    }
    is_train, is_val = split == "train", split == "validation"
    tr = {k: v[torch.from_numpy(is_train)] for k, v in tensors.items()}
    va = {k: v[torch.from_numpy(is_val)] for k, v in tensors.items()}
    model = pair_model_from(args.init_from, args.preset)
    optim = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(tr["label"]) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = max(1, int(0.05 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))),
    )
    g = torch.Generator().manual_seed(args.seed)
    aug = Augment()
    history: dict[str, list] = {"train": [], "eval": []}
    best: tuple[float, float] | None = None
    best_state = None
    start = time.perf_counter()
    step = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(tr["label"]), generator=g)
        losses = []
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            labels = tr["label"][idx]
            ref, test = augment_pairs(tr["reference"][idx], tr["test"][idx], labels, g, aug)
            loss = F.cross_entropy(model(pixel_values=model_input(ref, test)).logits, labels)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
        history["train"].append({"epoch": epoch, "step": step, "loss": float(np.mean(losses))})
        scores = evaluate(model, va["reference"], va["test"], va["label"])
        history["eval"].append({"epoch": epoch, "step": step, **scores})
        print(f"epoch {epoch}: train loss {np.mean(losses):.4f}, validation "
              + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
        key = (scores["verdict"], -scores["loss"])
        if best is None or key > best:
            best, best_state = key, {k: v.clone() for k, v in model.state_dict().items()}
            history["best_epoch"] = epoch
            save(model, args, history)  # the best so far is on disk: a stopped run keeps it
    model.load_state_dict(best_state)
    save(model, args, history)
    return history


def save(model, args: argparse.Namespace, history: dict) -> None:
    """The model folder: safetensors weights, config, image processor, the run's record."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    vit.image_processor(model.config).save_pretrained(out)
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    record.pop("func", None)
    record["command"] = ["python", "-m", "qeu_space.training.vit_pair", *sys.argv[1:]]
    (out / "training_args.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (out / "loss_history.json").write_text(json.dumps(history, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m qeu_space.training.vit_pair", description=__doc__.splitlines()[0]
    )
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="register and frame the pairs of a qa dataset once")
    prep.add_argument("--dataset", required=True, help="a qa dataset folder (dataset_tools build)")
    prep.add_argument("--out", type=Path, required=True, help=".npz to write")
    prep.add_argument("--splits", nargs="+", default=list(PREPARE_SPLITS))
    prep.add_argument("--shard", type=int, default=0, help="this process's share (0-based)")
    prep.add_argument("--shards", type=int, default=1, help="processes sharing the rows")
    tr = sub.add_parser("train", help="train the pair ViT on prepared pairs")
    tr.add_argument("--data", type=Path, nargs="+", required=True, help="the .npz of `prepare`")
    tr.add_argument("--out", type=Path, required=True, help="model folder to write")
    tr.add_argument("--init-from", help="a single-image ViT folder to warm-start from")
    tr.add_argument("--preset", default="vit-pair-scratch", choices=["vit-pair-scratch"])
    tr.add_argument("--epochs", type=int, default=30)
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--learning-rate", type=float, default=5e-4)
    tr.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.command == "prepare":
        if "test_held_out_looks" in args.splits:
            p.error("--splits: the held-out looks are never trained on nor used to choose")
        if not 0 <= args.shard < args.shards:
            p.error(f"--shard {args.shard} is not in 0..{args.shards - 1}")
        print(prepare(args.dataset, args.out, args.splits, args.shard, args.shards))
        return 0
    for path in args.data:
        if not path.is_file():
            p.error(f"--data {path} does not exist: run `prepare` first")
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
