"""What an adapter folder holds: the plain dataclasses the adapter tools fill and the card reads.

:mod:`.adapters` builds them from a folder; :mod:`.model_card` writes them into the card. Both
import this module and neither imports the other's caller, so the imports run one way
(``adapters`` -> ``model_card`` -> ``summary``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModuleUpdate:
    """One adapted (or fully saved) module.

    Attributes:
        module: the module's path in the base model (``model.layers.0.self_attn.q_proj``).
        kind: ``lora``, ``dora`` (LoRA pair + magnitude), ``full`` (``modules_to_save``) or
            ``other`` (tensors of another PEFT method).
        rank: the LoRA pair's rank (``None`` for full / other).
        scaling: ``alpha / r`` (or ``alpha / sqrt(r)``); ``None`` for full / other.
        params: parameters the adapter stores for this module.
        norm: ``||scaling * B @ A||_F`` for LoRA / DoRA, ``||W||_F`` otherwise.
    """

    module: str
    kind: str
    rank: int | None
    scaling: float | None
    params: int
    norm: float


@dataclass(frozen=True)
class AdapterSummary:
    """What an adapter folder holds, and how much of its base model that is.

    Attributes:
        path: the adapter folder.
        base_model: ``base_model_name_or_path`` from the adapter config.
        peft_type: ``LORA``, ``IA3``, ...
        rank, alpha: the config's default ``r`` / ``lora_alpha`` (per-module values may differ
            through ``rank_pattern`` / ``alpha_pattern``: see ``modules``).
        use_dora, use_rslora: variants that change what the update is.
        target_modules: as configured (a list of names or one regex).
        modules_to_save: modules stored whole, e.g. a retrained head.
        trainable_params: every parameter stored in the adapter file.
        base_params: parameters of the base model, when it could be counted locally.
        share_of_base: ``trainable_params / base_params`` (``None`` without the base).
        base_note: how ``base_params`` was found, or why it could not be.
        modules: one :class:`ModuleUpdate` per module, in file order.
    """

    path: str
    base_model: str | None
    peft_type: str
    rank: int | None
    alpha: float | None
    use_dora: bool
    use_rslora: bool
    target_modules: list[str] | str | None
    modules_to_save: list[str]
    trainable_params: int
    base_params: int | None
    share_of_base: float | None
    base_note: str
    modules: list[ModuleUpdate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        """A summary list and a per-module table."""
        if self.share_of_base is not None:
            share = f"{self.share_of_base:.4%} of the base's {self.base_params:,}"
        else:
            share = "share of the base unknown"
        lines = [
            f"adapter: `{self.path}`",
            f"base model: `{self.base_model}` ({self.base_note})",
            f"PEFT type: {self.peft_type}"
            + (" (DoRA)" if self.use_dora else "")
            + (" (rsLoRA)" if self.use_rslora else ""),
            f"rank: {self.rank}, alpha: {self.alpha}",
            f"target modules: {self.target_modules}",
            f"modules saved whole: {', '.join(self.modules_to_save) or 'none'}",
            f"trainable parameters: {self.trainable_params:,} ({share})",
            "",
            "| module | kind | rank | scaling | params | norm |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for m in self.modules:
            scaling = "" if m.scaling is None else f"{m.scaling:g}"
            rank = "" if m.rank is None else str(m.rank)
            lines.append(
                f"| {m.module} | {m.kind} | {rank} | {scaling} | {m.params:,} | {m.norm:.4g} |"
            )
        return "\n".join(lines) + "\n"
