"""The models panel: each model's status, and what each configured adapter is.

The adapter part answers "what did fine-tuning change", for every adapter of ``QEU_ADAPTERS``
under its name: its base, rank and alpha, the modules it adapts, its share of the base's
parameters (:func:`qeu_space.hub.adapters.inspect_adapter`) and the metrics its model card reports
(``model-index`` read by ``huggingface_hub.ModelCard``). It says first whether the adapter is in
use (a damaged one is not, and the card's figures are then not what answers), and it never
raises: a file it cannot read is a line saying so. Names, never the server's paths, are shown.

Example:
    >>> markdown = adapter_markdown("models/inspection-vlm-lora", name="latched")
    >>> markdown = adapters_markdown(models.vlm)       # every adapter, in QEU_ADAPTERS order
"""

from __future__ import annotations

from pathlib import Path

from qeu_space.ui.models import AdapterSlot, Models, ModelSlot, display_name, public_text


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


def adapter_markdown(
    adapter: str | None, *, name: str | None = None, unused: str | None = None
) -> str:
    """What the adapter is, as Markdown; a readable line when it cannot be read (never raises).

    ``name`` is its name in the Space (default: its folder's or Hub id's), ``unused`` why it is
    not in use (``None``: it is, or nothing is known).
    """
    if adapter is None:
        return "No adapter configured (set `QEU_ADAPTERS`): only the base model answers."
    shown = display_name(adapter)
    title = f"`{name}` (`{shown}`)" if name else f"`{shown}`"
    note = ""
    if unused is not None:
        note = (
            f"**Adapter {title} is not in use**: {unused}. The fine-tuned panel shows this "
            "reason; what follows describes the file, not what answers.\n\n"
        )
    try:
        return note + _describe(adapter, title)
    except Exception as err:  # noqa: BLE001 - a damaged file is a line in the panel, not a crash
        text = public_text(str(err).strip().splitlines()[0] if str(err).strip() else "")
        return note + f"Adapter {title}: cannot be read ({text or type(err).__name__})."


def adapters_markdown(slot: ModelSlot) -> str:
    """Every adapter of the chat VLM (``QEU_ADAPTERS`` order), each with its card's figures; one
    that is not in use says why first."""
    if not slot.adapters:
        return adapter_markdown(None)
    parts = []
    for adapter in slot.adapters:
        parts.append(
            adapter_markdown(adapter.source, name=adapter.name, unused=_unused(slot, adapter))
        )
    return "\n\n---\n\n".join(parts)


def _unused(slot: ModelSlot, adapter: AdapterSlot) -> str | None:
    if not slot.available:
        return slot.reason or "the base model is not loaded"
    return adapter.reason or None


def _describe(adapter: str, title: str) -> str:
    from qeu_space.hub.adapters import inspect_adapter

    folder = _adapter_folder(adapter)
    if folder is None:
        return f"Adapter {title}: not available locally (see README)."
    summary = inspect_adapter(folder)
    share = (
        f"{summary.share_of_base:.3%} of the base's {summary.base_params:,}"
        if summary.share_of_base is not None
        else f"share of the base unknown ({summary.base_note})"
    )
    modules = sorted({m.module.rsplit(".", 1)[-1] for m in summary.modules})
    kind = summary.peft_type + (" (DoRA)" if summary.use_dora else "")
    lines = [
        f"**Adapter** {title}",
        "",
        "| property | value |",
        "|---|---|",
        f"| base model | `{display_name(summary.base_model)}` |",
        f"| method | {kind} |",
        f"| rank / alpha | {summary.rank} / {summary.alpha} |",
        f"| adapted modules | {len(summary.modules)} ({', '.join(modules)}) |",
        f"| trainable parameters | {summary.trainable_params:,} ({share}) |",
        f"| saved whole | {', '.join(summary.modules_to_save) or 'none'} |",
    ]
    metrics = card_metrics(folder)
    lines.append("")
    if metrics:
        lines += [
            "**Model card metrics** (as the adapter's card reports them, measured when it was "
            "trained; not measured by this app)",
            "",
            "| dataset | metric | value |",
            "|---|---|---:|",
        ]
        lines += [f"| {d} | {m} | {v} |" for d, m, v in metrics]
    else:
        lines.append("The adapter's model card reports no metrics.")
    return "\n".join(lines)


def device_markdown(models: Models) -> str:
    """The device line at the top of the page."""
    line = f"**Device**: {models.device.description if models.device else 'unknown'}"
    return line + (" — models in a worker process" if models.worker else "")


def models_markdown(models: Models) -> str:
    """One status line per model (the device is on the page's first line, not repeated)."""
    return "\n".join(f"- {slot.status()}" for slot in (models.vlm, models.vit, models.od))
