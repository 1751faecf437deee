"""What a training run is: the adapter (a thin wrapper over ``peft.LoraConfig``) and the run.

The CLI builds a :class:`TrainConfig` and calls :func:`qeu_space.training.train`; the config is
also written next to the adapter (``training_args.json``) so that a model card can say how it
was made. Widening beyond LoRA is one field away: ``scope="all"`` adapts the vision tower too,
``modules_to_save`` trains chosen modules in full, and ``full_finetune`` trains every weight (the
seeds concluded that a Florence-2 LoRA "changes too little").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qeu_space.modeling.catalog import SCOPES

if TYPE_CHECKING:
    from peft import LoraConfig

TASKS: tuple[str, ...] = ("qa", "od", "cls")


@dataclass(frozen=True)
class AdapterOptions:
    """What to train: a LoRA (or DoRA) over a scope of the model, or every weight."""

    rank: int = field(default=16, metadata={"help": "LoRA rank r (size of the update)"})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha; the update is scaled alpha/r"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    scope: str = field(
        default="language",
        metadata={"help": "modules to adapt: language model, vision tower + projector, or all"},
    )
    dora: bool = field(default=False, metadata={"help": "weight-decomposed LoRA (DoRA)"})
    modules_to_save: tuple[str, ...] = field(
        default=(), metadata={"help": "module names trained in full beside the LoRA (lm_head...)"}
    )
    full_finetune: bool = field(
        default=False, metadata={"help": "no adapter: train every weight of the model"}
    )
    freeze_vision: bool = field(
        default=False,
        metadata={
            "help": "with --full-finetune: keep the vision tower's weights as they are (the "
            "projector and the language model train); for a pre-trained tower "
            "(python -m qeu_space.vision_pretrain)"
        },
    )
    new_words: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "words the base never learned to write (e.g. short): the embedding rows of "
            "their tokens train beside the LoRA (PEFT trainable tokens; tied output rows too)"
        },
    )

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"--rank must be at least 1, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"--alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.scope not in SCOPES:
            raise ValueError(f"--scope must be one of {SCOPES}, got {self.scope!r}")
        if self.freeze_vision and not self.full_finetune:
            raise ValueError("--freeze-vision needs --full-finetune (an adapter trains no tower)")
        object.__setattr__(self, "modules_to_save", tuple(self.modules_to_save))
        object.__setattr__(self, "new_words", tuple(self.new_words))
        if self.new_words and self.full_finetune:
            raise ValueError("--new-words trains token rows beside a LoRA: drop --full-finetune")

    def lora_config(
        self, target_modules: str, token_ids: tuple[int, ...] = ()
    ) -> LoraConfig | None:
        """The ``peft.LoraConfig`` for a family's ``target_modules`` regex; None for full FT.

        ``token_ids`` (the tokens of :attr:`new_words`) become PEFT ``trainable_token_indices``:
        a base that never wrote a word has untrained rows for its tokens (``short`` is ``s h or t``
        in the inspection VLM's tokenizer), which a LoRA on the layers alone only misspells."""
        if self.full_finetune:
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=target_modules,
            use_dora=self.dora,
            modules_to_save=list(self.modules_to_save) or None,
            trainable_token_indices=sorted(set(token_ids)) or None,
            bias="none",
        )


@dataclass(frozen=True)
class TrainConfig:
    """One training run; the CLI's options map one to one onto these fields.

    Attributes:
        task: ``qa`` (chat VLM), ``od`` (Florence-2) or ``cls`` (ViT classifier, trained in
            full from a config: see :mod:`qeu_space.modeling.families.vit`).
        base: Hub id or folder of the base model.
        dataset: folder (``load_dataset`` / ``save_to_disk`` layout) or Hub dataset id.
        out: output folder: the adapter (or full model), processor, ``loss_history.json/.png``
            and ``training_args.json``; Trainer checkpoints go to ``out/checkpoints``.
        adapter: what to train.
        epochs: passes over ``train`` (ignored when ``max_steps`` is set).
        max_steps: optimizer steps to stop at (``None``: run ``epochs``).
        learning_rate: default 2e-4 for adapters, 2e-5 for full fine-tuning, 1e-3 for ``cls``.
        batch_size: per device; ``grad_accum`` batches make one optimizer step.
        eval_steps: validate (and checkpoint) every N steps instead of every epoch.
        eval_samples: validation rows scored by generation (the loss uses all of them).
        max_new_tokens: generation length for validation.
        seed: data order, LoRA initialisation and dropout.
        dataloader_workers: processes that make training batches (framing registers every
            image: on a spare core this overlaps the model step; 0 = in the training process).
        bf16, gradient_checkpointing: CUDA only.
        resume_from_checkpoint: a checkpoint folder, or ``"latest"`` (in ``out/checkpoints``).
        trust_remote_code: allow code shipped with the base (Phi-3-vision).
        push_to: model repo id to push the result to (token checked before training).
        private: visibility of a newly created repo.
        base_model_id: Hub id of ``base`` for the pushed adapter config and card, when ``base``
            is a local folder (required then: a pushed adapter never names a local path).
        dataset_id: Hub id of ``dataset`` for the pushed card, when ``dataset`` is a folder.
        dataset_config: config name of a Hub dataset with several (default: ``task``).
        progress: show the progress bar (steps with total and ETA); ``--quiet`` turns it off.
        photometric: relight each training view with its own seeded gamma / gain / white
            balance draw (chat VLMs, ``qa``: :mod:`qeu_space.training.photometric`).
    """

    task: str
    base: str
    dataset: str
    out: str
    adapter: AdapterOptions = field(default_factory=AdapterOptions)
    epochs: float = 3.0
    max_steps: int | None = None
    learning_rate: float | None = None
    batch_size: int = 2
    eval_batch_size: int = 4
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    eval_steps: int | None = None
    eval_samples: int = 64
    max_new_tokens: int = 64
    logging_steps: int = 1
    save_total_limit: int = 2
    seed: int = 0
    dataloader_workers: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    resume_from_checkpoint: str | None = None
    trust_remote_code: bool = False
    push_to: str | None = None
    private: bool = False
    dataset_config: str | None = None
    base_model_id: str | None = None
    dataset_id: str | None = None
    progress: bool = True
    photometric: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {TASKS}, got {self.task!r}")
        checks = {
            "--epochs": self.epochs > 0,
            "--max-steps": self.max_steps is None or self.max_steps > 0,
            "--batch-size": self.batch_size > 0,
            "--eval-batch-size": self.eval_batch_size > 0,
            "--grad-accum": self.grad_accum > 0,
            "--eval-steps": self.eval_steps is None or self.eval_steps > 0,
            "--eval-samples": self.eval_samples >= 0,
            "--dataloader-workers": self.dataloader_workers >= 0,
            "--max-new-tokens": self.max_new_tokens > 0,
            "--learning-rate": self.learning_rate is None or self.learning_rate > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be positive")
        if self.task == "cls" and not self.adapter.full_finetune:
            # A classifier trained from random weights has nothing for an adapter to adapt.
            object.__setattr__(self, "adapter", AdapterOptions(full_finetune=True))

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        if self.task == "cls":
            return 1e-3  # from scratch: a small ViT wants a large step
        return 2e-5 if self.adapter.full_finetune else 2e-4

    def training_args(self, command: list[str] | None = None) -> dict[str, Any]:
        """Flat JSON-able record of the run (``training_args.json`` beside the adapter).

        Names follow ``TrainingArguments`` where one exists, so a model card can show them.
        """
        adapter = self.adapter
        record: dict[str, Any] = {
            "task": self.task,
            "base": self.base,
            "dataset": self.dataset,
            "scope": None if adapter.full_finetune else adapter.scope,
            "rank": None if adapter.full_finetune else adapter.rank,
            "alpha": None if adapter.full_finetune else adapter.alpha,
            "dropout": None if adapter.full_finetune else adapter.dropout,
            "use_dora": adapter.dora,
            "modules_to_save": list(adapter.modules_to_save),
            "new_words": list(adapter.new_words),
            "full_finetune": adapter.full_finetune,
            "freeze_vision": adapter.freeze_vision,
            "learning_rate": self.lr,
            "per_device_train_batch_size": self.batch_size,
            "gradient_accumulation_steps": self.grad_accum,
            "num_train_epochs": self.epochs,
            "max_steps": self.max_steps,
            "warmup_ratio": self.warmup_ratio,
            "weight_decay": self.weight_decay,
            "eval_steps": self.eval_steps,
            "eval_samples": self.eval_samples,
            "seed": self.seed,
            "bf16": self.bf16,
            "gradient_checkpointing": self.gradient_checkpointing,
            "photometric": self.photometric,
        }
        if command is not None:
            record["command"] = list(command)
        return record
