"""``python -m dataset_tools``: build synthetic connector datasets and push them to the Hub.

Every error is one line on stderr with what to do, and exit code 2; nothing half-written is left.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from dataset_tools.looks import HELD_OUT_FAMILIES, LOOK_FAMILIES
from qeu_space.cli import (
    CliError,
    OneLineParser,
    check_output_folder,
    existing_path,
    fail,
    float_in,
    hub_repo_id,
    int_at_least,
)
from qeu_space.vocabulary import DEFAULT_KINDS, DefectKind

# The renderer's and sampler's names, repeated so that a wrong argument (and --help) is answered
# before numba and the renderer load (tests/test_cli_errors.py checks they match
# dataset_tools.render and dataset_tools.sampling).
CONFIGS = ("qa", "od", "cls")
HOUSINGS = ("standard", "ribbed", "stepped", "latched")
SEEN_HOUSINGS = ("standard", "ribbed", "stepped")
UNSEEN_HOUSING = "latched"
TRAIN_POSITION_CHOICES = ("held-out", "all")
VARIANT_NAMES = ("plain", "nsoart")

EXAMPLES = """examples:
  python -m dataset_tools build --config qa --num 1000 --seed 0 --out data/qa
  python -m dataset_tools build --config od --num 2000 --num-proc 2 --out data/od \\
      --push-to me/qeu-connectors-od
  python -m dataset_tools build --config cls --num 3000 --out data/cls --overwrite
  python -m dataset_tools build --config qa --num 2000 --looks train --out data/qa-looks
"""


PLACEHOLDERS = {"--out": "<folder>", "--db": "<feedback.sqlite3>"}
"""Options whose value is a local path: a card shows a placeholder, so its command runs anywhere."""


def reproducible_command(argv: list[str]) -> str:
    """The command line as typed, local paths replaced by :data:`PLACEHOLDERS`.

    Example:
        >>> reproducible_command(["build", "--config", "qa", "--num", "9", "--out", "/home/me/qa"])
        'python -m dataset_tools build --config qa --num 9 --out <folder>'
    """
    words, hide = [], None
    for arg in argv:
        name, eq, _ = arg.partition("=")
        if hide is not None:
            words.append(hide)
            hide = None
        elif arg in PLACEHOLDERS:
            words.append(arg)
            hide = PLACEHOLDERS[arg]
        elif eq and name in PLACEHOLDERS:
            words.append(f"{name}={PLACEHOLDERS[name]}")
        else:
            words.append(shlex.quote(arg))
    return " ".join(["python -m dataset_tools", *words])


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m dataset_tools",
        description="Synthetic connector-inspection datasets for VLMs, Florence-2 and ViTs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    build = sub.add_parser(
        "build",
        help="render, compose and write a dataset (parquet + dataset card)",
        description=(
            "Render connector pairs, compose them and write a DatasetDict with the splits train, "
            "validation, test (defects at held-out pin positions) and test_unseen_housing as "
            "parquet shards under OUT/CONFIG/ plus OUT/README.md, a dataset card that "
            "datasets.load_dataset(OUT) reads. The same command always gives the same rows."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument(
        "--config",
        required=True,
        choices=CONFIGS,
        help="qa: question/answer rows for chat VLMs; od: bbox_str rows for Florence-2 <OD>; "
        "cls: single-connector classification rows (OK, BENDNG, NUKENG) for a ViT",
    )
    build.add_argument(
        "--num",
        required=True,
        type=int_at_least(1),
        help="rows in the train split; validation, test and test_unseen_housing get "
        "--eval-fraction of that each (at least 1)",
    )
    build.add_argument(
        "--seed", type=int_at_least(0), default=0, help="seed of every row (default 0)"
    )
    build.add_argument("--out", required=True, type=Path, help="folder to write (must be empty)")
    build.add_argument(
        "--num-proc",
        type=int_at_least(1),
        default=1,
        help="worker processes sharing the rendering (default 1)",
    )
    build.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out (swapped in only once the new dataset is complete)",
    )
    build.add_argument(
        "--push-to",
        metavar="REPO",
        type=hub_repo_id,
        help="also push to this Hub dataset repo (token from HF_TOKEN or `hf auth login`)",
    )
    build.add_argument("--private", action="store_true", help="create the Hub repo as private")
    build.add_argument(
        "--size", type=int_at_least(224), default=448, help="composite side in pixels (448)"
    )
    build.add_argument(
        "--variant",
        choices=VARIANT_NAMES,
        default="plain",
        help="plain composites, or nsoart: the SOARTC map blended over the lower product",
    )
    build.add_argument(
        "--eval-fraction",
        type=float_in(0, 1, low_open=True),
        default=0.1,
        help="rows of each held-out split as a share of --num (default 0.1)",
    )
    build.add_argument(
        "--unlabelled-fraction",
        type=float_in(0, 1),
        default=0.15,
        help="share of qa/od composites without coordinate labels (default 0.15)",
    )
    build.add_argument(
        "--no-nuisances",
        action="store_true",
        help="clean renders: no camera placement (on by default: shift, turn and scale of the "
        "product), lighting change, noise, blur, jitter or JPEG",
    )
    build.add_argument(
        "--housings",
        nargs="+",
        choices=HOUSINGS,
        default=list(SEEN_HOUSINGS),
        metavar="HOUSING",
        help=f"housing variants of train/validation/test (default: {' '.join(SEEN_HOUSINGS)}; "
        f"choices: {', '.join(HOUSINGS)})",
    )
    build.add_argument(
        "--unseen-housing",
        choices=HOUSINGS,
        default=UNSEEN_HOUSING,
        help=f"the housing of test_unseen_housing, not among --housings (default {UNSEEN_HOUSING})",
    )
    build.add_argument(
        "--train-positions",
        choices=TRAIN_POSITION_CHOICES,
        default="held-out",
        help="where train defects sit: held-out (default: never at a validation/test position) "
        "or all (a pre-training set; its validation/test positions are then not held out)",
    )
    build.add_argument(
        "--kinds",
        nargs="+",
        choices=[k.keyword for k in DefectKind],
        default=[k.keyword for k in DEFAULT_KINDS],
        metavar="KIND",
        help="defect kinds drawn (default: bent missing; choices: "
        f"{', '.join(k.keyword for k in DefectKind)}); short adds short pins (pushed into the "
        "housing) and the cls class SHORTNG",
    )
    build.add_argument(
        "--looks",
        default="classic",
        metavar="LOOKS",
        help="look families the rows are drawn in (each row one of them): classic (default: the "
        "first renderer), all, train, held-out, or a comma list of "
        f"{', '.join(LOOK_FAMILIES)}; {' and '.join(HELD_OUT_FAMILIES)} are held out (never "
        "train on them); a build on training looks also writes a test_held_out_looks split",
    )
    build.add_argument(
        "--png-level",
        type=int_at_least(0, 3),
        default=2,
        metavar="LEVEL",
        help="deflate level (ISA-L, 1 to 3) of each image's own rows (default 2; a composite's "
        "top, the same across rows, is compressed once by zlib), or 0 to store them: PNGs "
        "about 1.5 x larger for about 1 ms less CPU a composite, the same pixels",
    )
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_from_feedback(sub)
    return parser


def _add_from_feedback(sub: argparse._SubParsersAction) -> None:
    feedback = sub.add_parser(
        "from-feedback",
        help="turn the Space's stored feedback into a qa split (parquet + dataset card)",
        description=(
            "Read the feedback store of QEU Inspection Space (SQLite) and write its judgements as "
            "qa rows (the corrected answer where a model was wrong, the model's answer where it "
            "was right) under OUT/qa/SPLIT-00000-of-00001.parquet plus OUT/README.md."
        ),
        epilog="example:\n  python -m dataset_tools from-feedback --db feedback.sqlite3 "
        "--out data/feedback",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    feedback.add_argument(
        "--db",
        type=existing_path("file"),
        default=None,
        help="the feedback store (default: $QEU_FEEDBACK_DB, else the Space's default path)",
    )
    feedback.add_argument("--out", required=True, type=Path, help="folder to write (empty)")
    feedback.add_argument("--split", default="feedback", help="split name (default feedback)")
    feedback.add_argument("--only-wrong", action="store_true", help="only rows a person corrected")
    feedback.add_argument(
        "--min-agree",
        type=int,
        default=2,
        help="without a server truth, an answer is used only when this many clients taught it "
        "for the image and none taught another (default 2)",
    )
    feedback.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def _from_feedback(args: argparse.Namespace, prog: str) -> int:
    import os

    try:  # before any import of the store or datasets
        check_output_folder(args.out, overwrite=args.overwrite)
    except CliError as e:
        return fail(prog, e)

    from dataset_tools.from_feedback import write_feedback_split
    from qeu_space.feedback import default_db_path

    db = args.db or Path(os.environ.get("QEU_FEEDBACK_DB") or default_db_path())
    command = reproducible_command(sys.argv[1:] if args.argv is None else args.argv)
    try:
        report = write_feedback_split(
            db,
            args.out,
            split=args.split,
            only_wrong=args.only_wrong,
            overwrite=args.overwrite,
            command=command,
            min_agree=args.min_agree,
        )
    except (FileNotFoundError, ValueError) as e:
        return fail(prog, str(e))
    except OSError as e:
        return fail(prog, f"could not write {args.out}: {e.strerror or e}")
    print(f"wrote {args.out}: {args.split}: {report.summary()}")
    return 0


def _build(args: argparse.Namespace, prog: str) -> int:
    try:  # the checks that need no import: answered at once, before datasets loads
        if args.unseen_housing in args.housings:
            raise CliError(
                f"the unseen housing {args.unseen_housing!r} must not be among --housings"
            )
        check_output_folder(args.out, overwrite=args.overwrite)
    except CliError as e:
        return fail(prog, e)
    from dataset_tools.builders import BuildConfig  # datasets, pyarrow: after --help
    from dataset_tools.render import Nuisances

    try:
        cfg = BuildConfig(
            config=args.config,
            num=args.num,
            seed=args.seed,
            size=args.size,
            eval_fraction=args.eval_fraction,
            variant=args.variant,
            unlabelled_fraction=args.unlabelled_fraction,
            nuisances=Nuisances.off() if args.no_nuisances else Nuisances(),
            housings=tuple(args.housings),
            unseen_housing=args.unseen_housing,
            train_positions=args.train_positions,
            kinds=tuple(args.kinds),
            looks=args.looks,
            num_proc=args.num_proc,
            png_level=args.png_level,
        )
    except ValueError as e:
        return fail(prog, str(e))

    from dataset_tools.save import OutputDirError, build_to_folder, check_output_dir

    token = None
    try:
        check_output_dir(args.out, args.overwrite)
    except OutputDirError as e:
        return fail(prog, str(e))
    if args.push_to:  # before any work, so a missing token loses nothing; the Hub client (and
        # its HTTP stack) loads only for a push: a build's start-up is part of its rows' cost
        from qeu_space.hub.upload import HubError, check_repo_id, push_folder, resolve_token

        try:
            check_repo_id(args.push_to)
            token = resolve_token()
        except (HubError, ValueError) as e:
            return fail(prog, str(e))

    command = reproducible_command(sys.argv[1:] if args.argv is None else args.argv)
    try:
        rows = build_to_folder(
            cfg, args.out, command=command, overwrite=args.overwrite, progress=not args.quiet
        )
    except OutputDirError as e:
        return fail(prog, str(e))
    except OSError as e:
        return fail(prog, f"could not write {args.out}: {e.strerror or e}")
    print(f"wrote {args.out}: " + ", ".join(f"{s} {n}" for s, n in rows.items()))
    if args.push_to:
        try:
            url = push_folder(
                args.out,
                args.push_to,
                repo_type="dataset",
                private=args.private,
                token=token,
                commit_message=f"Upload {cfg.config} dataset ({command})",
            )
        except HubError as e:
            return fail(prog, f"{e} (the dataset is saved in {args.out}; push again later)")
        print(f"pushed to {url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command == "build":
        return _build(args, f"{parser.prog} build")
    if args.command == "from-feedback":
        return _from_feedback(args, f"{parser.prog} from-feedback")
    return parser.error(f"unknown command {args.command}")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
