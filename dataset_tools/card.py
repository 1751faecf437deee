"""The dataset card: YAML metadata the Hub and ``load_dataset`` read, and a page people read.

The card names the command that regenerates the data (with placeholders for local paths) and
links to the code, so a dataset on the Hub is a recipe as much as a file.
"""

from __future__ import annotations

from collections.abc import Mapping

from huggingface_hub import DatasetCard, DatasetCardData

from dataset_tools.builders import BuildConfig
from dataset_tools.compose import REFERENCE_POOL
from dataset_tools.features import features
from dataset_tools.looks import CLASSIC, HELD_OUT_FAMILIES, LOOK_FAMILIES
from dataset_tools.render import REFERENCE_WIDTH, Nuisances
from dataset_tools.sampling import KIND_SHARES, SPLIT_POSITIONS
from qeu_space import REPOSITORY_URL
from qeu_space.vocabulary import DEFAULT_KINDS, DefectKind, class_labels, od_categories

TASKS = {
    "qa": (["image-text-to-text", "visual-question-answering"], "question / answer"),
    "od": (["object-detection"], "Florence-2 `<OD>` (`bbox_str`)"),
    "cls": (["image-classification"], "classification (`OK`, `BENDNG`, `NUKENG`)"),
}


def dataset_card(
    cfg: BuildConfig,
    split_files: Mapping[str, list[str]],
    split_rows: Mapping[str, int],
    command: str,
    split_bytes: Mapping[str, int] | None = None,
) -> DatasetCard:
    """A card whose YAML lists the config, its split files and features, task and licence."""
    task_categories, task_name = TASKS[cfg.config]
    if cfg.config == "cls":
        task_name = f"classification ({', '.join(f'`{n}`' for n in class_labels(cfg.kinds))})"
    data = DatasetCardData(
        license="cc-by-4.0",
        language=["en"],
        pretty_name=f"QEU connector inspection ({cfg.config})",
        task_categories=task_categories,
        tags=["synthetic", "visual-inspection", "connector", "qeu-inspection-space"],
        size_categories=[_size_category(sum(split_rows.values()))],
        configs=[
            {
                "config_name": cfg.config,
                "default": True,
                "data_files": [
                    {"split": split, "path": f"{cfg.config}/{split}-*.parquet"}
                    for split in split_files
                ],
            }
        ],
        dataset_info={
            "config_name": cfg.config,
            "features": features(cfg.config, cfg.kinds)._to_yaml_list(),
            "splits": [
                {"name": s, "num_bytes": (split_bytes or {}).get(s, 0), "num_examples": n}
                for s, n in split_rows.items()
            ],
        },
    )

    def where(split: str) -> str:
        if split == "train" and cfg.train_positions == "all":
            return "all 27 (`--train-positions all`: a pre-training set)"
        return ", ".join(p.name for p in SPLIT_POSITIONS[split])

    positions = "\n".join(f"| `{s}` | {split_rows[s]} | {where(s)} |" for s in split_rows)
    held_out = (
        "Defects sit at disjoint pin positions per split, so scores on `validation` and `test` "
        "measure\nreading the grid, not remembering where defects were."
        if cfg.train_positions == "held-out"
        else "`train` has defects at every position (a pre-training set): scores on `validation` "
        "and\n`test` measure fit, not reading the grid at positions never seen defective."
    )
    nuisances = "\n".join(f"  - {line}" for line in describe_nuisances(cfg.nuisances))
    defaults = (
        " (the defaults of `build`: `--no-nuisances` turns them all off)"
        if cfg.nuisances == Nuisances()
        else ""
    )
    categories = ", ".join(f"`{c}`" for c in od_categories(cfg.kinds))
    body = f"""
# QEU connector inspection: `{cfg.config}` ({task_name})

Synthetic images of a connector (a housing with a 3 x 9 pin grid: rows U, C, D by columns 1-9)
with {_kinds_text(cfg)} pins, rendered by `dataset_tools` of
[QEU Inspection Space]({REPOSITORY_URL}) (the code, with the renderer and the training scripts).
Q/A and OD images are composites: a good reference on top, the product under inspection below,
coordinate labels on both (left out on a share of rows, so models also learn unlabelled images).

## Regenerate

From a checkout of {REPOSITORY_URL}, with its `requirements.txt` installed:

```bash
{command}
```

`<folder>` is any folder to write to. Same command, same rows (every row depends only on the
seed, the split and its index, whatever `--num-proc`).

## Use

```python
from datasets import load_dataset

ds = load_dataset("<this dataset's Hub id or folder>", "{cfg.config}")
```
{_USE[cfg.config]}
## Splits

{held_out} Housings `{", ".join(cfg.housings)}`
appear in `train`, `validation` and `test`; `test_unseen_housing` shows only `{cfg.unseen_housing}`.
{_looks_text(cfg)}
| split | rows | defect positions |
|---|---|---|
{positions}

## Settings

- composite size: {cfg.size} x {cfg.size}; variant: `{cfg.variant}`; seed: {cfg.seed}
- nuisances{defaults}, each drawn per product from the row's seed (the reference and
  the product under inspection; references come from a pool of {REFERENCE_POOL} per housing and
  pin style):
{nuisances}
- unlabelled share: {cfg.unlabelled_fraction}
- defect kinds: {_kinds_line(cfg)}

## Columns

`id`, `image`, `housing` (housing variant, or the look's housing colour), `pins` (pin style),
`labels_drawn`, `variant`, `look` (the row's look family), and per config:
`qa`: `question`, `answer` (canonical text, e.g. `Defective. 2 defects: U3 bent pin (left); C7
missing pin.`), `findings` (position, kind, direction, box in composite pixels), `verdict`,
`images` (`[image]`) and `messages` (user: the image and the question; assistant: the answer), the
conversational form TRL's `SFTTrainer` reads for vision-language models;
`od`: `prompt` (`<OD>`), `bbox_str` (1000 bins per axis, Florence-2's floor rule), `objects`
(`bbox` as [x, y, w, h], `category` a `ClassLabel`: {categories});
`cls`: `label`, `findings` (boxes in the connector image).
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _looks_text(cfg: BuildConfig) -> str:
    """The looks the rows are drawn in, the held-out families, and the held-out-looks split."""
    lines = ["", "## Looks", ""]
    if cfg.looks == (CLASSIC,):
        lines.append(
            "Every row is drawn in the `classic` look (the first renderer; `--looks` draws rows in "
            "other look families)."
        )
    else:
        lines.append(
            "Each row is drawn in one look family (its `look` column), the reference and the "
            "product under inspection being two shots of one product on one rig (same housing, "
            "pins, light and bench; placement, exposure, white balance, focus, noise and JPEG "
            "drawn per shot):"
        )
        lines.append("")
        for name in cfg.looks:
            lines.append(f"- `{name}`: {LOOK_FAMILIES[name].description}")
    lines.append("")
    held = ", ".join(f"`{n}`" for n in HELD_OUT_FAMILIES)
    if cfg.held_out_looks:
        lines.append(
            f"Held-out look families ({held}) are in no split but `test_held_out_looks` "
            "(defects at every position): never train on it; report figures on it."
        )
    elif set(cfg.looks) & set(HELD_OUT_FAMILIES):
        lines.append(
            f"This build includes held-out look families ({held}): do not train on rows with "
            "those `look` values if figures on them are to be reported as held out."
        )
    else:
        lines.append(f"Held-out look families (never trained on): {held}.")
    return "\n".join(lines) + "\n"


def _kinds_text(cfg: BuildConfig) -> str:
    words = [k.keyword for k in cfg.kinds]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _kinds_line(cfg: BuildConfig) -> str:
    """Which kinds are on (their shares of the qa/od defects), which are off, and ``--kinds``."""
    total = sum(KIND_SHARES[k] for k in cfg.kinds)
    on = ", ".join(f"`{k.value}` ({KIND_SHARES[k] / total:.2f})" for k in cfg.kinds)
    off = [f"`{k.value}`" for k in DefectKind if k not in cfg.kinds]
    flag = " ".join(k.keyword for k in cfg.kinds)
    default = ", the default" if cfg.kinds == DEFAULT_KINDS else ""
    return (
        f"{on} of the qa/od defects, cls rows balanced over `OK` and each kind"
        + (f"; off: {', '.join(off)}" if off else "")
        + f" (`--kinds {flag}`{default})"
    )


_USE = {
    "qa": """
Fine-tune a vision-language model with TRL: `images` + `messages` are its conversational
vision format.

```python
from trl import SFTConfig, SFTTrainer

trainer = SFTTrainer(model=model, processing_class=processor, train_dataset=ds["train"],
                     args=SFTConfig(output_dir="out", max_length=None))
```
""",
    "od": """
`ds["train"].features["objects"]["category"].feature.names` names the categories.
""",
    "cls": """
`ds["train"].features["label"].names` names the classes (`OK` is a product without defect).
""",
}


def describe_nuisances(n: Nuisances) -> list[str]:
    """The nuisances of ``n`` in words, one line each (``none`` when all are off)."""
    lines = []
    p = n.placement
    if p.active:
        low, high = p.scale
        lines.append(
            f"camera placement: shift up to {p.shift:g} px (for a {REFERENCE_WIDTH} px wide "
            f"connector, scaled with it), rotation up to {p.rotation:g} degrees, scale "
            f"{low:g}-{high:g}" + (", every socket kept in view" if p.keep_in_view else "")
        )
    if n.gain or n.gradient:
        lines.append(f"lighting: gain 1 +- {n.gain:g}, linear gradient up to +- {n.gradient:g}")
    if n.noise:
        lines.append(f"sensor noise: sigma {n.noise:g} grey levels")
    if n.blur:
        lines.append(f"blur: Gaussian, sigma up to {n.blur:g} px")
    if n.shift or n.rotation:
        lines.append(
            f"jitter: sub-pixel shift up to {n.shift:g} px, rotation up to {n.rotation:g} degrees"
        )
    if n.jpeg is not None and n.jpeg_probability:
        lines.append(
            f"JPEG: quality {n.jpeg[0]}-{n.jpeg[1]} on {n.jpeg_probability:.0%} of the products"
        )
    return lines or ["none (`--no-nuisances`: clean renders)"]


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"
