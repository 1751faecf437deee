"""One training run, from a :class:`TrainConfig` to an adapter folder (and a Hub repo).

Order matters for not losing work: everything that can fail cheaply (task vs model family,
GPU-only options, the Hub token and repo id, the dataset's columns) is checked before the model
is loaded, and the loss history is written at every validation.

Output folder ``out``::

    adapter_config.json, adapter_model.safetensors   (or config.json + model.safetensors)
    processor / tokenizer files                      (the base's, so the folder is complete)
    training_args.json, trainer_state.json           (what was run; read by the model card)
    loss_history.json, loss_history.png              (train/validation loss, task metric)
    checkpoints/checkpoint-N/                        (Trainer checkpoints; not pushed)
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from transformers import PrinterCallback, TrainerCallback, TrainingArguments, set_seed

from qeu_space.modeling.families import family_for, scratch_base
from qeu_space.modeling.loading import load_model, read_config
from qeu_space.training.callbacks import LossHistoryCallback
from qeu_space.training.config import TrainConfig
from qeu_space.training.data import collators, keep_registered, load_splits
from qeu_space.training.history import LossHistory
from qeu_space.training.trainer import InspectionTrainer
from qeu_space.views.registration import remember_at_least

CHECKPOINTS = "checkpoints"
#: Parameters of a vision tower (Florence-2 ``vision_tower``, Idefics3 ``vision_model``, Qwen's
#: ``visual`` less its ``merger``), not of the projector that feeds the language model.
VISION_TOWER = re.compile(r"(^|\.)(vision_tower|vision_model|visual\.(?!merger\.))")
TRAINING_ARGS = "training_args.json"
TRAINER_STATE = "trainer_state.json"


@dataclass(frozen=True)
class TrainResult:
    """What a run left behind.

    Attributes:
        out: the output folder (adapter or full model, processor, history).
        global_step: optimizer steps done (counting those before a resume).
        best_checkpoint: checkpoint whose weights were kept (``load_best_model_at_end``).
        best_metric: its value of ``history.best_metric``.
        history: the loss history.
        model: the trained model in memory (a ``PeftModel`` unless full fine-tuning), holding
            the weights saved in ``out``.
        pushed: commit URL when ``push_to`` was set.
    """

    out: Path
    global_step: int
    best_checkpoint: str | None
    best_metric: float | None
    history: LossHistory
    model: Any = None
    pushed: str | None = None


def train(
    config: TrainConfig,
    *,
    command: Sequence[str] | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Train an adapter (or the whole model) on ``config.task`` rows and save it to ``config.out``.

    Args:
        config: the run.
        command: the command line, recorded in ``training_args.json`` for the model card.
        callbacks: extra ``TrainerCallback`` objects.

    Raises:
        ValueError: task / family mismatch, GPU-only options without a GPU, bad dataset.
        qeu_space.hub.upload.MissingTokenError: ``push_to`` without a token (before any training).
    """
    scratch = scratch_base(config.base)
    family = (
        scratch[0]
        if scratch
        else family_for(read_config(config.base, trust_remote_code=config.trust_remote_code))
    )
    if config.task not in family.TASKS:
        raise ValueError(
            f"--task {config.task} does not fit {config.base} (a {family.NAME} model, which "
            f"trains on --task {'/'.join(family.TASKS)})"
        )
    _check_gpu_options(config)
    _check_fresh_output(config)
    token = _hub_token(config)
    splits = load_splits(
        config.dataset, config.task, config_name=config.dataset_config, seed=config.seed
    )

    # Both products of every composite are registered each epoch; remember them all.
    remember_at_least(2 * sum(len(split) for split in splits.values()))
    out = Path(config.out)
    args = training_arguments(config, best_metric=family.BEST_METRIC)
    set_seed(config.seed)
    if scratch:  # a config without weights (the ViT classifier): random initial weights
        loaded = family.new_model(scratch[1], device=str(args.device))
    else:
        loaded = load_model(
            config.base,
            trust_remote_code=config.trust_remote_code,
            device=str(args.device),
            dtype=torch.float32,
        )
    model = _trainable(loaded.model, config, family, loaded.processor)
    eval_collator, train_collator = collators(
        family, loaded.processor, loaded.model.config, config.seed, photometric=config.photometric
    )
    if hasattr(family, "view") and config.task in ("qa", "od"):  # composites: registered first
        framing = eval_collator.options.get("framing")
        for name in ("train", "validation"):
            splits[name] = keep_registered(splits[name], family.view, framing, name=name)
    history_callback = LossHistoryCallback(out, title=f"{config.task}: {config.base}")
    trainer = InspectionTrainer(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        data_collator=eval_collator,
        train_collator=train_collator,
        processing_class=loaded.processor,
        callbacks=[history_callback, *callbacks],
        family=family,
        task=config.task,
        eval_samples=config.eval_samples,
        max_new_tokens=config.max_new_tokens,
    )
    if not config.progress:  # quiet: no bar, and not the log lines Trainer prints instead
        trainer.remove_callback(PrinterCallback)
    resume: str | bool | None = config.resume_from_checkpoint
    if resume == "latest":
        resume = True
    trainer.train(resume_from_checkpoint=resume)

    trainer.save_model(str(out))
    history = LossHistory.from_log(
        trainer.state.log_history,
        best_metric=args.metric_for_best_model,
        best_checkpoint=trainer.state.best_model_checkpoint,
    )
    pushed = None
    if trainer.is_world_process_zero():
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; the JSON below says it
        record = config.training_args(list(command) if command is not None else None)
        _write_json(out / TRAINING_ARGS, record)
        trainer.state.save_to_json(str(out / TRAINER_STATE))
        if config.push_to:
            pushed = _push(out, config, token)
    return TrainResult(
        out=out,
        global_step=trainer.state.global_step,
        best_checkpoint=trainer.state.best_model_checkpoint,
        best_metric=trainer.state.best_metric,
        history=history,
        model=trainer.model,
        pushed=pushed,
    )


def training_arguments(config: TrainConfig, *, best_metric: str) -> TrainingArguments:
    """``TrainingArguments`` for a run: validation + checkpoint per epoch (or every N steps)."""
    strategy = "steps" if config.eval_steps else "epoch"
    scored = config.eval_samples > 0
    return TrainingArguments(
        output_dir=str(Path(config.out) / CHECKPOINTS),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.grad_accum,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of all steps
        weight_decay=config.weight_decay,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=config.eval_steps,
        save_steps=config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_{best_metric}" if scored else "eval_loss",
        greater_is_better=scored,
        logging_steps=config.logging_steps,
        seed=config.seed,
        bf16=config.bf16,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False,  # the collator needs image/question/answer
        label_names=["labels"],
        prediction_loss_only=True,  # the task metric comes from generation, not logits
        # Without CUDA, CPU processes started by `accelerate launch --multi_gpu` / torchrun
        # (LOCAL_RANK set) form a gloo group only when the arguments say CPU.
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=torch.cuda.is_available(),
        dataloader_num_workers=config.dataloader_workers,
        ddp_find_unused_parameters=config.adapter.full_finetune,
        report_to="none",
        disable_tqdm=not config.progress,
    )


def word_token_ids(processor: Any, words: tuple[str, ...]) -> tuple[int, ...]:
    """The token ids of ``words`` as they are written inside an answer (after a space) and at
    its start; a word the tokenizer cannot write raises a ``ValueError``."""
    tokenizer = getattr(processor, "tokenizer", processor)
    ids: set[int] = set()
    for word in words:
        for text in (f" {word}", word):
            found = tokenizer(text, add_special_tokens=False)["input_ids"]
            if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in found:
                raise ValueError(f"--new-words {word!r}: the tokenizer has no tokens for it")
            ids.update(found)
    return tuple(sorted(ids))


def _trainable(model: Any, config: TrainConfig, family: Any, processor: Any = None) -> Any:
    """Wrap the base in a LoRA/DoRA ``PeftModel``, or make every weight trainable."""
    model.train()
    token_ids = (
        word_token_ids(processor, config.adapter.new_words) if config.adapter.new_words else ()
    )
    lora = config.adapter.lora_config(_targets(model, config, family), token_ids)
    if lora is None:
        model.requires_grad_(True)
        if config.adapter.freeze_vision:
            frozen = [p for n, p in model.named_parameters() if VISION_TOWER.search(n)]
            if not frozen:
                raise ValueError(f"--freeze-vision: {config.base} has no vision tower to freeze")
            for param in frozen:
                param.requires_grad_(False)
        return model
    if config.gradient_checkpointing:
        model.enable_input_require_grads()
    try:
        return get_peft_model(model, lora)
    except ValueError as err:
        raise ValueError(
            f"--scope {config.adapter.scope} / --modules-to-save match nothing in "
            f"{config.base}: {str(err).splitlines()[0]}"
        ) from None


def _targets(model: Any, config: TrainConfig, family: Any) -> str | list[str]:
    """The scope as module names of this model (families that resolve it on the model, and
    print what it adapts and what it leaves out), else the family's name regex."""
    scope = config.adapter.scope
    resolve = getattr(family, "scope_targets", None)
    if resolve is None or config.adapter.full_finetune:
        return family.lora_target_modules(scope)
    names, excluded = resolve(model, scope)
    if not names:
        raise ValueError(f"--scope {scope} matches no linear layer in {config.base}")
    print(f"--scope {scope} adapts:\n{family.describe_targets(names, excluded)}", file=sys.stderr)
    try:
        return family.targets_regex(model, names)
    except ValueError:
        return list(names)


def _check_gpu_options(config: TrainConfig) -> None:
    wanted = [f for f, on in (("--bf16", config.bf16), ("--gradient-checkpointing",
              config.gradient_checkpointing)) if on]  # fmt: skip
    if wanted and not torch.cuda.is_available():
        raise ValueError(f"{' and '.join(wanted)} need a CUDA GPU; none is available here")


def _check_fresh_output(config: TrainConfig) -> None:
    """A new run must not mix its checkpoints with an earlier run's ("latest" would pick theirs)."""
    folder = Path(config.out) / CHECKPOINTS
    if config.resume_from_checkpoint is None and any(folder.glob("checkpoint-*")):
        raise ValueError(
            f"{config.out} already holds a run ({folder}); pass --resume-from-checkpoint to "
            "continue it, or choose another --out"
        )


def _hub_token(config: TrainConfig) -> str | None:
    """Check the push target, the Hub ids the pushed files will name, and the token now, so
    that no training is lost to a late failure."""
    if not config.push_to:
        return None
    from qeu_space.hub.metadata import local_folder, local_path_reason
    from qeu_space.hub.upload import check_repo_id, resolve_token

    check_repo_id(config.push_to)
    token = resolve_token()
    for flag, name in (("--base-model", config.base_model_id), ("--dataset-id", config.dataset_id)):
        reason = local_path_reason(name) if name else None
        if reason is not None:
            raise ValueError(f"{flag} {name!r} is {reason}: give the Hub id (OWNER/NAME)")
    if (
        not config.adapter.full_finetune
        and config.base_model_id is None
        and (local_path_reason(config.base) or local_folder(config.base))
    ):
        raise ValueError(
            f"--base {config.base} is a local folder; the pushed adapter must name its base on "
            "the Hub: pass --base-model OWNER/NAME"
        )
    return token


def _push(out: Path, config: TrainConfig, token: str | None) -> str:
    """Stage the output folder (not its checkpoints) with its card and upload it.

    The folder itself is left as training wrote it (:func:`qeu_space.hub.adapters.prepare_push`
    works on a copy): the pushed ``adapter_config.json`` and card name the base's Hub id, the
    card names the dataset only by a Hub id, and the model's view ships with it.
    """
    from qeu_space.hub.adapters import PushOptions, prepare_push
    from qeu_space.hub.metadata import local_folder, local_path_reason
    from qeu_space.hub.upload import push_folder

    def hub_id(name: str | None) -> str | None:
        ok = name and local_path_reason(name) is None and local_folder(name) is None
        return name if ok else None

    dataset = config.dataset_id or hub_id(config.dataset)
    options = PushOptions(
        folder=out,
        repo_id=config.push_to or "",
        private=config.private,
        datasets=[dataset] if dataset else [],
        base_model=config.base_model_id or hub_id(config.base),
    )
    with tempfile.TemporaryDirectory(prefix="qeu-push-") as stage:
        staged = prepare_push(options, Path(stage))
        for warning in staged["warnings"]:
            print(f"card of {config.push_to}: {warning}", file=sys.stderr)
        return push_folder(
            stage,
            config.push_to,
            repo_type="model",
            private=config.private,
            token=token,
            commit_message=f"Train {config.task} model with qeu_space",
        )


def _write_json(path: Path, data: dict) -> None:
    import json

    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def default_command() -> list[str]:
    return [Path(sys.executable).name, "-m", "qeu_space.train", *sys.argv[1:]]
