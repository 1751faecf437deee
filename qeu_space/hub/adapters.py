"""Look inside a PEFT adapter folder, and publish one with its model card.

``inspect`` answers what the seeds asked after their Florence-2 LoRA failed ("LoRA changes too
little"): how many parameters the adapter holds, what share of the base that is, and how large
each module's update is. For a LoRA pair the update is ``delta W = scaling * B @ A`` with
``scaling = alpha / r`` (``alpha / sqrt(r)`` under rsLoRA); its Frobenius norm is reported per
module. With DoRA the magnitude vector then rescales the columns of ``W + delta W``; the norm
shown is still that of the low-rank direction update, the part LoRA learns. Modules saved whole
(``modules_to_save``) show the norm of their weights. Tensors are read with ``safetensors`` only.

CLI:
    python -m qeu_space.adapters inspect out/qa-lora --plot norms.png [--json]
    python -m qeu_space.adapters push out/qa-lora --to me/qeu-qa-lora --dataset me/qeu-connectors \\
        --metrics out/eval.json [--private]
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qeu_space.hub.summary import AdapterSummary, ModuleUpdate

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: PEFT's prefix on saved keys (``PeftModel`` -> ``base_model`` (LoraModel) -> ``model``).
_KEY_PREFIX = "base_model.model."
_LORA_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|"
    r"lora_magnitude_vector)(?:\.weight)?$"
)


class AdapterFolderError(ValueError):
    """The folder is not a PEFT adapter saved with safetensors."""


# --------------------------------------------------------------------------- reading


def read_adapter(folder: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The adapter config and its tensors (float32 numpy), read with safetensors.

    Raises:
        AdapterFolderError: no folder, no ``adapter_config.json`` or no
            ``adapter_model.safetensors`` (a ``.bin`` adapter is refused: pickle).
    """
    from safetensors import safe_open

    path = Path(folder)
    if not path.is_dir():
        raise AdapterFolderError(f"adapter folder {str(path)!r} does not exist")
    config_path, weights_path = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not config_path.is_file():
        raise AdapterFolderError(
            f"{str(path)!r} has no {ADAPTER_CONFIG}: not a PEFT adapter folder "
            "(save one with PeftModel.save_pretrained)"
        )
    if not weights_path.is_file():
        pickled = (path / "adapter_model.bin").exists()
        found = "; found adapter_model.bin (a pickle: refused)" if pickled else ""
        raise AdapterFolderError(
            f"{str(path)!r} has no {ADAPTER_WEIGHTS}{found}: "
            "save the adapter with safe_serialization (the default)"
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    tensors = {}
    with safe_open(str(weights_path), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            tensors[key] = handle.get_tensor(key).float().numpy()
    return config, tensors


def count_base_params(base: str | None) -> tuple[int | None, str]:
    """Parameters of a base model kept in a local folder, and how they were counted.

    Reads the safetensors headers (shapes only, no weights) when the folder has them, else
    builds the model from its ``config.json`` on the meta device. A Hub id is not fetched
    (the offline rule): the share then needs the base folder.
    """
    if not base:
        return None, "the adapter config names no base model"
    path = Path(base)
    if not path.is_dir():
        return None, f"base {base!r} is not a local folder; the share of the base needs it locally"
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        from safetensors import safe_open

        total = 0
        for shard in shards:
            with safe_open(str(shard), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118
                    total += math.prod(handle.get_slice(key).get_shape())
        return total, f"counted from {len(shards)} safetensors file(s) of the base"
    if (path / "config.json").is_file():
        return _count_from_config(path)
    return None, f"base folder {base!r} has neither safetensors weights nor a config.json"


def _count_from_config(path: Path) -> tuple[int | None, str]:
    import torch
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
    )

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (ValueError, OSError) as err:
        return None, f"base config unreadable without remote code ({type(err).__name__})"
    for auto in (AutoModelForImageTextToText, AutoModelForCausalLM, AutoModel):
        try:
            with torch.device("meta"):
                model = auto.from_config(config)
        except ValueError:
            continue
        return sum(p.numel() for p in model.parameters()), "counted from the base config"
    return None, f"no transformers class builds {config.model_type!r}"


# --------------------------------------------------------------------------- summary


def summarize_adapter(
    config: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    *,
    path: str = "",
    base_params: int | None = None,
    base_note: str = "",
) -> AdapterSummary:
    """Per-module updates and parameter counts of an adapter (pure: no disk access)."""
    peft_type = str(config.get("peft_type", "UNKNOWN"))
    modules_to_save = list(config.get("modules_to_save") or [])
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        name = key.removeprefix(_KEY_PREFIX)
        match = _LORA_KEY.match(name)
        if match:
            groups.setdefault(match["module"], {})[match["part"]] = value
        else:
            module, _, part = name.rpartition(".")
            groups.setdefault(module or name, {})[part or name] = value
    updates = [_module_update(module, parts, config) for module, parts in groups.items()]
    trainable = int(sum(v.size for v in tensors.values()))
    share = trainable / base_params if base_params else None
    return AdapterSummary(
        path=path,
        base_model=config.get("base_model_name_or_path"),
        peft_type=peft_type,
        rank=config.get("r"),
        alpha=config.get("lora_alpha"),
        use_dora=bool(config.get("use_dora")),
        use_rslora=bool(config.get("use_rslora")),
        target_modules=config.get("target_modules"),
        modules_to_save=modules_to_save,
        trainable_params=trainable,
        base_params=base_params,
        share_of_base=share,
        base_note=base_note,
        modules=updates,
    )


def _module_update(module: str, parts: dict[str, np.ndarray], config: Mapping) -> ModuleUpdate:
    params = int(sum(v.size for v in parts.values()))
    a = parts.get("lora_A", parts.get("lora_embedding_A"))
    b = parts.get("lora_B", parts.get("lora_embedding_B"))
    if a is not None and b is not None:
        rank = int(a.shape[0])
        scaling = _scaling(module, rank, config)
        norm = float(np.linalg.norm(b.astype(np.float64) @ a.astype(np.float64)) * scaling)
        kind = "dora" if "lora_magnitude_vector" in parts else "lora"
        return ModuleUpdate(module, kind, rank, scaling, params, norm)
    norm = float(np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in parts.values())))
    saved_whole = any(
        module == m or module.endswith("." + m) or f".{m}." in f".{module}."
        for m in config.get("modules_to_save") or []
    )
    return ModuleUpdate(module, "full" if saved_whole else "other", None, None, params, norm)


def _scaling(module: str, rank: int, config: Mapping) -> float:
    """``alpha / r`` with PEFT's own per-module ``alpha_pattern`` lookup (rank from the shape)."""
    from peft.utils.other import get_pattern_key

    alpha = config.get("lora_alpha", rank)
    pattern = config.get("alpha_pattern") or {}
    if pattern:
        key = get_pattern_key(list(pattern), module)
        alpha = pattern.get(key, alpha)
    return float(alpha) / (math.sqrt(rank) if config.get("use_rslora") else rank)


def inspect_adapter(folder: str | Path) -> AdapterSummary:
    """Read ``folder`` and summarize it, counting the base when it is a local folder."""
    config, tensors = read_adapter(folder)
    base_params, note = count_base_params(config.get("base_model_name_or_path"))
    return summarize_adapter(
        config, tensors, path=str(folder), base_params=base_params, base_note=note
    )


def plot_norms(summary: AdapterSummary, out: str | Path) -> Path:
    """A horizontal bar chart of the per-module update norms, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    modules = summary.modules
    if not modules:
        raise ValueError(f"adapter {summary.path!r} holds no tensors to plot")
    colors = {"lora": "tab:blue", "dora": "tab:purple", "full": "tab:orange", "other": "tab:gray"}
    height = max(2.5, 0.28 * len(modules) + 1.2)
    fig, ax = plt.subplots(figsize=(8, height))
    ax.barh(
        range(len(modules)),
        [m.norm for m in modules],
        color=[colors.get(m.kind, "tab:gray") for m in modules],
    )
    ax.set_yticks(range(len(modules)), [m.module for m in modules], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("||scaling * B @ A||_F (LoRA)  /  ||W||_F (saved whole)")
    share = f", {summary.share_of_base:.3%} of base" if summary.share_of_base is not None else ""
    params = f"{summary.trainable_params:,} params"
    ax.set_title(f"{summary.peft_type} r={summary.rank}: {params}{share}")
    handles = [
        matplotlib.patches.Patch(color=color, label=kind)
        for kind, color in colors.items()
        if any(m.kind == kind for m in modules)
    ]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- push


#: Files the training run leaves beside the adapter that the card reads.
TRAINING_ARGS = "training_args.json"
TRAINER_STATE = "trainer_state.json"
LOSS_PLOTS = ("loss.png", "loss_history.png", "loss_curve.png")


@dataclass(frozen=True)
class PushOptions:
    """``adapters push`` settings, one field per flag.

    Attributes:
        folder: the adapter (or, from ``train --full-finetune``, model) folder; never modified.
        repo_id: the model repo to push to.
        private: create the repo private.
        datasets: Hub ids of the datasets for the card (local paths are refused).
        metrics: an evaluation report (``qeu_space.evaluate --report``) for ``model-index``.
        base_model: Hub id of the base, when the adapter's config names a local folder.
    """

    folder: Path
    repo_id: str
    private: bool = False
    datasets: list[str] = field(default_factory=list)
    metrics: Path | None = None
    base_model: str | None = None


def write_model_card(
    options: PushOptions,
    summary: AdapterSummary | None,
    *,
    target: Path | None = None,
    ships_processor: bool = False,
) -> Path:
    """Write ``README.md`` into ``target`` (default: the folder itself) from what the folder
    holds: its training record, loss plot, the report named by ``options.metrics``.

    ``datasets`` are the options' Hub ids, else those an earlier card in the folder named, else
    the training run's dataset when that reads as a Hub id and is no local folder; never a path.
    """
    from huggingface_hub import ModelCard

    from qeu_space.evaluation.evaluate import read_report
    from qeu_space.hub.metadata import local_folder, local_path_reason
    from qeu_space.hub.model_card import CardInputs, build_model_card

    folder = options.folder
    training_args = _read_json(folder / TRAINING_ARGS)
    trainer_state = _read_json(folder / TRAINER_STATE)
    report = read_report(options.metrics) if options.metrics else None
    datasets = list(options.datasets)
    readme = folder / "README.md"
    if not datasets and readme.is_file():  # keep the datasets an earlier card named
        datasets = list(ModelCard.load(readme).data.datasets or [])
    recorded = training_args.get("dataset")
    if not datasets and isinstance(recorded, str):
        if local_path_reason(recorded) is None and local_folder(recorded, folder) is None:
            datasets = [recorded]
    loss_plot = next((name for name in LOSS_PLOTS if (folder / name).is_file()), None)
    if loss_plot is None:
        loss_plot = next((p.name for p in sorted(folder.glob("*loss*.png"))), None)
    command = training_args.get("command")
    base = options.base_model or (summary.base_model if summary else None)
    card = build_model_card(
        CardInputs(
            base_model=base,
            datasets=[d for d in datasets if local_path_reason(d) is None],
            task=training_args.get("task") or (report.task if report else None),
            repo_id=options.repo_id,
            report=report,
            training_args=training_args,
            trainer_state=trainer_state,
            loss_plot=loss_plot,
            reproduce=" ".join(command) if isinstance(command, list) else command,
            adapter=summary,
            ships_processor=ships_processor,
            kind="adapter" if summary is not None else "model",
        )
    )
    path = Path(target or folder) / "README.md"
    if path.is_file():
        path.unlink()  # a staged hard link: never write through it into the source
    card.save(path)
    return path


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err})") from None
    return data if isinstance(data, dict) else {}


def hub_base_model(options: PushOptions, summary: AdapterSummary | None) -> str | None:
    """The Hub id the pushed files name as the base: ``options.base_model``, else the one the
    adapter's config records, when that is a Hub id.

    The decision never depends on the working directory alone: a name is refused when it reads
    as a path, or names a folder seen from here *or* from the adapter folder's parents (where a
    relative ``models/...`` recorded at training time lives).

    Raises:
        ValueError: an adapter whose base is not a Hub id (pass ``--base-model OWNER/NAME``).
    """
    from qeu_space.hub.metadata import local_folder, local_path_reason

    base = options.base_model or (summary.base_model if summary else None)
    if base is None:
        if summary is None:
            return None  # a model trained from scratch has no base
        raise ValueError("the adapter names no base model: pass --base-model OWNER/NAME")
    found = local_folder(base, options.folder)
    reason = local_path_reason(base) or (f"the local folder {found}" if found else None)
    if reason is not None:
        flag = "--base-model" if options.base_model else "the adapter's base model"
        raise ValueError(
            f"{flag} {base!r} is {reason}, not a Hub id; the pushed adapter_config.json and card "
            "must name the base on the Hub: pass --base-model OWNER/NAME"
        )
    return base


def stage_folder(folder: Path, stage: Path) -> list[str]:
    """The top-level files of ``folder`` in ``stage`` (Trainer's ``checkpoints/`` stay local).

    Large files are hard-linked (no second copy of the weights); files a push may rewrite (JSON,
    the card, templates) are copied, so that nothing written in the stage reaches the source.
    """
    names = []
    for item in sorted(Path(folder).iterdir()):
        if not item.is_file():
            continue
        if item.stat().st_size > 2**20 and item.suffix not in (".json", ".md", ".py", ".jinja"):
            _link_or_copy(item, stage / item.name)
        else:
            shutil.copy2(item, stage / item.name)
        names.append(item.name)
    return names


def _ship_processor(stage: Path, source: Path) -> bool:
    """Install the model's view in the staged folder when its family has one (see
    :mod:`qeu_space.hub.processor`); the base is looked up from the *source* folder."""
    from qeu_space.hub.processor import ProcessorInstallError, install_processor

    try:
        install_processor(stage, source=source)
    except ProcessorInstallError:
        return False
    return True


def prepare_push(options: PushOptions, stage: Path) -> dict[str, Any]:
    """Everything the repo will hold, written into ``stage``; the source folder is not touched.

    The adapter config names the base's Hub id, the processor carries the model's view
    (when its family has one), and the card is checked as the Hub checks it.

    Returns:
        What was staged: ``files``, ``base_model``, ``ships_processor``, ``warnings`` (the
        project's card rules the card misses, e.g. no ``model-index`` without ``--metrics``).

    Raises:
        ValueError: a local path where a Hub id must be (base, datasets), or a card the Hub
            would refuse.
    """
    from qeu_space.hub.metadata import card_problems, front_matter, hub_problems, local_path_reason

    folder = Path(options.folder)
    for dataset in options.datasets:
        reason = local_path_reason(dataset)
        if reason is not None:
            raise ValueError(f"--dataset {dataset!r} is {reason}: name the dataset's Hub id")
    is_adapter = (folder / ADAPTER_CONFIG).is_file()
    summary = inspect_adapter(folder) if is_adapter else None
    base = hub_base_model(options, summary)
    files = stage_folder(folder, stage)
    if is_adapter:
        config = _read_json(stage / ADAPTER_CONFIG)
        config["base_model_name_or_path"] = base
        (stage / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    ships = _ship_processor(stage, folder)
    readme = write_model_card(options, summary, target=stage, ships_processor=ships)
    text = readme.read_text(encoding="utf-8")
    problems = hub_problems(front_matter(text))
    if problems:
        raise ValueError("the card's metadata would be refused by the Hub: " + "; ".join(problems))
    kind = "adapter" if is_adapter else "model"
    return {
        "files": sorted({*files, "README.md"}),
        "base_model": base,
        "ships_processor": ships,
        "warnings": card_problems(text, kind=kind),
    }


def push_adapter(options: PushOptions, token: str | None = None) -> str:
    """Check the token, stage the folder with its card, then upload; returns the commit URL.

    Only the files at the top of the folder go up (adapter, processor, card, training record,
    loss plot): Trainer's ``checkpoints/`` stay local. The folder itself is never rewritten
    (:func:`prepare_push` works on a copy).
    """
    from qeu_space.hub.upload import check_repo_id, push_folder, resolve_token

    resolved = resolve_token(token)  # fail before any work when there is no token
    check_repo_id(options.repo_id)
    with tempfile.TemporaryDirectory(prefix="qeu-adapter-push-") as stage:
        staged = prepare_push(options, Path(stage))
        for warning in staged["warnings"]:
            logger.warning("card of %s: %s", options.repo_id, warning)
        return push_folder(
            stage,
            options.repo_id,
            repo_type="model",
            private=options.private,
            token=resolved,
            commit_message=f"Upload adapter {Path(options.folder).resolve().name} with qeu_space",
        )


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
