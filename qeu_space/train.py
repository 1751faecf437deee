"""``python -m qeu_space.train``: LoRA / DoRA / full fine-tuning for ``qa`` (chat VLM) or ``od``.

``--task cls`` trains a ViT classifier in full, from random weights when ``--base`` is a preset.

Builds a :class:`~qeu_space.training.TrainConfig` from the flags and calls
:func:`~qeu_space.training.train`. Runs as it is on one device, and under
``accelerate launch --multi_gpu --num_processes N`` (torchrun underneath) for several: one process
per GPU, or, on a machine without CUDA, N CPU processes in a gloo group. (accelerate's ``--cpu``
flag alone starts a single process: its multi-CPU mode needs MPI.) Errors are one line with what
to do, exit code 2; nothing is trained when a check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import fields

from qeu_space.cli import (
    CliError,
    OneLineParser,
    check_output_folder,
    fail,
    float_in,
    folder_or_hub_id,
    hub_repo_id,
    int_at_least,
)
from qeu_space.modeling.catalog import SCOPES, VIT_PRESETS
from qeu_space.training.config import TASKS, AdapterOptions, TrainConfig

PROG = "python -m qeu_space.train"
EXAMPLES = """examples:
  python -m qeu_space.train --task od --base florence-community/Florence-2-base \\
      --dataset data/od --out runs/od-lora --scope all --epochs 10
  python -m qeu_space.train --task qa --base HuggingFaceTB/SmolVLM-256M-Instruct \\
      --dataset data/qa --out runs/qa-dora --dora --rank 32 --push-to me/qeu-smolvlm-qa
  python -m qeu_space.train --task od --base florence-community/Florence-2-base \\
      --dataset data/od --out runs/od-full --full-finetune --learning-rate 1e-5
  python -m qeu_space.train --task cls --base vit-pins-scratch --dataset data/cls \\
      --out runs/vit --epochs 4 --batch-size 32 --eval-samples 1000
  accelerate launch --multi_gpu --num_processes 2 -m qeu_space.train --task qa \\
      --base HuggingFaceTB/SmolVLM-256M-Instruct --dataset data/qa --out runs/qa-ddp
"""


def _help(name: str) -> str:
    return next(f.metadata["help"] for f in fields(AdapterOptions) if f.name == name)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Fine-tune Florence-2 (<OD>, --task od) or a chat VLM (Q/A, --task qa), or "
        "train a ViT classifier (OK/BENDNG/NUKENG, --task cls), on "
        "a dataset built by `python -m dataset_tools build`, with validation by generation "
        "every epoch, the best checkpoint kept, and the loss history as JSON + PNG.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--task", required=True, choices=TASKS,
        help="qa: chat VLM; od: Florence-2; cls: ViT classifier (full training)",
    )  # fmt: skip
    p.add_argument(
        "--base", required=True, type=folder_or_hub_id,
        help="base model: Hub id or folder; for cls also a ViT preset "
        f"({', '.join(VIT_PRESETS)}) or a config-only folder (random weights)",
    )  # fmt: skip
    p.add_argument(
        "--dataset", required=True, type=folder_or_hub_id, help="dataset folder or Hub dataset id"
    )
    p.add_argument("--dataset-config", help="config name of a Hub dataset with several")
    p.add_argument("--out", required=True, help="output folder (adapter, history, checkpoints)")
    p.add_argument(
        "--epochs",
        type=float_in(0, low_open=True),
        default=3.0,
        help="passes over train (default 3)",
    )
    p.add_argument(
        "--max-steps", type=int_at_least(1), help="stop after N optimizer steps (overrides epochs)"
    )
    p.add_argument(
        "--push-to", metavar="REPO", type=hub_repo_id, help="push the result to this model repo"
    )
    p.add_argument("--private", action="store_true", help="create the pushed repo private")
    p.add_argument(
        "--base-model", metavar="OWNER/NAME",
        help="with --push-to: the Hub id of --base, when --base is a local folder",
    )  # fmt: skip
    p.add_argument(
        "--dataset-id", metavar="OWNER/NAME",
        help="with --push-to: the Hub id of --dataset for the card, when it is a local folder",
    )  # fmt: skip
    p.add_argument("--trust-remote-code", action="store_true", help="allow the base's own code")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    a = p.add_argument_group("adapter")
    a.add_argument("--rank", type=int_at_least(1), default=16, help=_help("rank") + " (default 16)")
    a.add_argument(
        "--alpha", type=int_at_least(1), default=32, help=_help("alpha") + " (default 32)"
    )
    a.add_argument(
        "--dropout",
        type=float_in(0, 1, high_open=True),
        default=0.05,
        help=_help("dropout") + " (0.05)",
    )
    a.add_argument("--scope", choices=SCOPES, default="language", help=_help("scope"))
    a.add_argument("--dora", action="store_true", help=_help("dora"))
    a.add_argument("--modules-to-save", nargs="+", default=[], metavar="MODULE",
                   help=_help("modules_to_save"))  # fmt: skip
    a.add_argument("--full-finetune", action="store_true", help=_help("full_finetune"))
    a.add_argument("--freeze-vision", action="store_true", help=_help("freeze_vision"))
    a.add_argument("--new-words", nargs="+", default=[], metavar="WORD", help=_help("new_words"))

    o = p.add_argument_group("optimisation")
    o.add_argument("--learning-rate", "--lr", type=float_in(0, low_open=True),
                   help="default 2e-4 (adapters), 2e-5 (--full-finetune), 1e-3 (cls)")  # fmt: skip
    o.add_argument("--batch-size", type=int_at_least(1), default=2, help="per device (default 2)")
    o.add_argument(
        "--eval-batch-size", type=int_at_least(1), default=4, help="per device (default 4)"
    )
    o.add_argument(
        "--grad-accum", type=int_at_least(1), default=1, help="batches per optimizer step"
    )
    o.add_argument(
        "--warmup-ratio", type=float_in(0, 1), default=0.05, help="share of steps warming up"
    )
    o.add_argument("--weight-decay", type=float_in(0), default=0.0)
    o.add_argument("--seed", type=int_at_least(0), default=0)
    o.add_argument("--dataloader-workers", type=int_at_least(0), default=0, metavar="N",
                   help="processes making training batches (registration and framing run "
                   "there, beside the model step; default 0: in the training process)")  # fmt: skip
    o.add_argument("--photometric", action="store_true",
                   help="qa: relight every training view with its own seeded gamma (0.5-1.8), "
                   "gain and white balance, so no brightness cue survives "
                   "(qeu_space.training.photometric)")  # fmt: skip
    o.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (CUDA only)")
    o.add_argument("--gradient-checkpointing", action="store_true", help="CUDA only")
    o.add_argument("--resume-from-checkpoint", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue a run (no value: the latest checkpoint in OUT)")  # fmt: skip

    v = p.add_argument_group("validation")
    v.add_argument(
        "--eval-steps", type=int_at_least(1), help="validate every N steps (default: per epoch)"
    )
    v.add_argument("--eval-samples", type=int_at_least(0), default=64,
                   help="rows scored by generation (0: loss only; default 64)")  # fmt: skip
    v.add_argument("--max-new-tokens", type=int_at_least(1), default=64, help="generation length")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    adapter = AdapterOptions(
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        scope=args.scope,
        dora=args.dora,
        modules_to_save=tuple(args.modules_to_save),
        full_finetune=args.full_finetune,
        freeze_vision=args.freeze_vision,
        new_words=tuple(args.new_words),
    )
    return TrainConfig(
        task=args.task,
        base=args.base,
        dataset=args.dataset,
        out=args.out,
        adapter=adapter,
        epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        grad_accum=args.grad_accum,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        eval_steps=args.eval_steps,
        eval_samples=args.eval_samples,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        dataloader_workers=args.dataloader_workers,
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        resume_from_checkpoint=args.resume_from_checkpoint,
        trust_remote_code=args.trust_remote_code,
        push_to=args.push_to,
        private=args.private,
        dataset_config=args.dataset_config,
        base_model_id=args.base_model,
        dataset_id=args.dataset_id,
        progress=not args.quiet,
        photometric=args.photometric,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:  # before any work: an output that cannot be written loses nothing
        check_output_folder(args.out, overwrite=True)  # a run's folder may hold files (resume)
        checkpoint = args.resume_from_checkpoint
        if checkpoint not in (None, "latest") and not os.path.isdir(checkpoint):
            raise CliError(f"--resume-from-checkpoint {checkpoint} does not exist (a folder)")
    except CliError as err:
        return fail(PROG, err)
    from qeu_space.hub.upload import HubError
    from qeu_space.training import train

    try:
        config = config_from_args(args)
        result = train(config, command=[*PROG.split(), *argv])
    except (ValueError, OSError, HubError) as err:  # bad input, unknown base, unwritable output
        return fail(PROG, err)
    if os.environ.get("RANK", "0") == "0":
        best = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
        print(
            f"trained {result.global_step} steps; best {result.history.best_metric} = {best} "
            f"({result.best_checkpoint}); saved to {result.out}"
            + (f"; pushed: {result.pushed}" if result.pushed else "")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
