"""The models panel: the device, each model's status, and what the loaded adapter is.

The adapter part answers "what did fine-tuning change": its base, rank and alpha, the modules it
adapts, its share of the base's parameters (:func:`qeu_space.hub.adapters.inspect_adapter`) and the
metrics its model card reports (``model-index`` read by ``huggingface_hub.ModelCard``).

Example:
    >>> markdown = adapter_markdown("models/inspection-vlm-lora")
"""

from __future__ import annotations

from pathlib import Path

from qeu_space.ui.models import Models


def _adapter_folder(adapter: str) -> Path | None:
    """A local adapter folder, or the Hub cache's copy of an adapter id (no download)."""
    path = Path(adapter)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(adapter, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: the panel says so
        return None


def card_metrics(folder: Path) -> list[tuple[str, str, str]]:
    """``(dataset / split, metric, value)`` rows from the adapter's model card, if it has one."""
    readme = folder / "README.md"
    if not readme.is_file():
        return []
    from huggingface_hub import ModelCard

    card = ModelCard.load(readme)
    rows = []
    for result in card.data.eval_results or []:
        where = " / ".join(x for x in (result.dataset_name, result.dataset_split) if x)
        name = result.metric_name or result.metric_type
        value = result.metric_value
        shown = f"{value:.4g}" if isinstance(value, int | float) else str(value)
        rows.append((where or result.dataset_type, str(name), shown))
    return rows


def adapter_markdown(adapter: str | None) -> str:
    """What the adapter is, as Markdown; a readable line when it cannot be read."""
    if adapter is None:
        return "No adapter configured (set `QEU_ADAPTER`): only the base model answers."
    from qeu_space.hub.adapters import AdapterFolderError, inspect_adapter

    folder = _adapter_folder(adapter)
    if folder is None:
        return f"Adapter `{adapter}`: not available locally (see README)."
    try:
        summary = inspect_adapter(folder)
    except (AdapterFolderError, OSError, ValueError) as err:
        return f"Adapter `{adapter}`: cannot be read ({err})."
    share = (
        f"{summary.share_of_base:.3%} of the base's {summary.base_params:,}"
        if summary.share_of_base is not None
        else f"share of the base unknown ({summary.base_note})"
    )
    modules = sorted({m.module.rsplit(".", 1)[-1] for m in summary.modules})
    kind = summary.peft_type + (" (DoRA)" if summary.use_dora else "")
    lines = [
        f"**Adapter** `{adapter}`",
        "",
        "| property | value |",
        "|---|---|",
        f"| base model | `{summary.base_model}` |",
        f"| method | {kind} |",
        f"| rank / alpha | {summary.rank} / {summary.alpha} |",
        f"| adapted modules | {len(summary.modules)} ({', '.join(modules)}) |",
        f"| trainable parameters | {summary.trainable_params:,} ({share}) |",
        f"| saved whole | {', '.join(summary.modules_to_save) or 'none'} |",
    ]
    metrics = card_metrics(folder)
    lines.append("")
    if metrics:
        lines += ["**Model card metrics**", "", "| dataset | metric | value |", "|---|---|---:|"]
        lines += [f"| {d} | {m} | {v} |" for d, m, v in metrics]
    else:
        lines.append("The adapter's model card reports no metrics.")
    return "\n".join(lines)


def models_markdown(models: Models) -> str:
    """The device and one status line per model."""
    device = models.device.description if models.device else "unknown"
    lines = [f"**Device**: {device}", ""]
    lines += [f"- {slot.status()}" for slot in (models.vlm, models.vit, models.od)]
    return "\n".join(lines)
