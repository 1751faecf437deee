"""What the command lines share: one-line errors, former spellings, checks made before any work.

Every CLI of the project (``python -m dataset_tools``, ``python -m qeu_space.train`` ...) answers a
wrong argument, a device it does not have or an output it may not write with one line on stderr
and exit code 2, before it loads a model or renders a row. One idea has one name everywhere:
``--out``, ``--overwrite``, ``--push-to``, ``--quiet``, ``--max-steps``; a former spelling still
works and says, in one line, which name to use now.

This module imports only the standard library, so ``--help`` stays fast.

Example:
    >>> parser = OneLineParser(prog="demo")
    >>> _ = parser.add_argument("--max-steps", type=int)
    >>> deprecated_alias(parser, "--steps", "--max-steps", type=int)
    >>> parser.parse_args(["--steps", "3"]).max_steps  # prints a note on stderr
    3
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (the usage is one ``--help`` away), exit code 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class CliError(ValueError):
    """A check failed before any work: the message is the one line the user sees."""


class _Deprecated(argparse.Action):
    """A former spelling: stores like the current option and notes the new name on stderr."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        print(
            f"{parser.prog}: note: {option_string} is deprecated; use {self.new} (same meaning)",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def deprecated_alias(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    old: str,
    new: str,
    *,
    dest: str | None = None,
    const: Any = None,
    **kwargs: Any,
) -> None:
    """Accept ``old`` as the former spelling of ``new`` (hidden from ``--help``).

    ``dest`` defaults to ``new``'s; ``const`` makes ``old`` a flag that stores it (``--no-progress``
    storing ``quiet=True``); other ``kwargs`` (``type``, ``metavar``) are ``new``'s.
    """
    dest = dest or new.lstrip("-").replace("-", "_")
    flag = const is not None
    parser.add_argument(
        old,
        dest=dest,
        action=_Deprecated,
        new=new,
        nargs=0 if flag else None,
        const=const,
        default=argparse.SUPPRESS,  # the current option's default stands
        help=argparse.SUPPRESS,
        **kwargs,
    )


def _nearest_existing(path: Path) -> Path | None:
    return next((p for p in (path, *path.parents) if p.exists()), None)


def _can_create_in(folder: Path | None) -> bool:
    """Whether a file can be made in ``folder``: tried, since permission bits do not bind root
    and a read-only or virtual file system (``/proc``) only says so when written."""
    if folder is None or not folder.is_dir():
        return False
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_output_file(path: str | os.PathLike[str], flag: str) -> Path:
    """Refuse an output file that cannot be written: a folder, or no writable folder to make it in.

    Raises:
        CliError: with what to do.
    """
    path = Path(path)
    if path.is_dir():
        raise CliError(f"{flag} {path} is a folder; give a file path")
    if path.exists():
        try:
            with open(path, "ab"):  # appends nothing: only asks whether it may
                return path
        except OSError:
            raise CliError(
                f"{flag} {path}: the file is not writable; choose another path"
            ) from None
    folder = _nearest_existing(path.absolute().parent)
    if not _can_create_in(folder):
        raise CliError(
            f"{flag} {path}: cannot write in {folder or path.parent}; choose another path"
        )
    return path


def check_output_folder(
    path: str | os.PathLike[str], flag: str = "--out", *, overwrite: bool = False
) -> Path:
    """Refuse an output folder that is a file, has files (without ``overwrite``) or cannot be made.

    Raises:
        CliError: with what to do.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CliError(f"{flag} {path} is a file; give a folder path")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise CliError(
            f"{flag} {path} is not empty; pass --overwrite to replace it or choose another folder"
        )
    # the folder itself (written into) and where it is made or staged beside it
    for folder in {_nearest_existing(path.absolute()), _nearest_existing(path.absolute().parent)}:
        if not _can_create_in(folder):
            raise CliError(
                f"{flag} {path}: cannot write in {folder or path.parent}; choose a writable folder"
            )
    return path


@contextmanager
def staged_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out``; on success it replaces ``out`` in one rename.

    On any error (Ctrl-C included) the staging folder is removed and ``out`` is left as it was:
    an output is complete or absent, never half written.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        yield staging
        if out.exists():
            out.rename(old)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_device(device: str | None) -> None:
    """Refuse a device torch cannot use here (``cuda`` without CUDA, ``cuda:3`` of two GPUs).

    Raises:
        CliError: naming the devices there are.
    """
    if device is None or device == "cpu":
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise CliError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CliError(f"--device {device}: torch sees no CUDA device here; use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise CliError(
                f"--device {device}: there are {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise CliError(f"--device {device}: MPS is not available here; use --device cpu")
    elif parsed.type not in ("cuda", "mps", "cpu"):
        raise CliError(f"--device {device}: only cpu, cuda and mps are supported")


def fail(prog: str, message: object) -> int:
    """Print ``prog: error: message`` (its first line) on stderr; return exit code 2."""
    line = str(message).strip().splitlines()[0] if str(message).strip() else type(message).__name__
    print(f"{prog}: error: {line}", file=sys.stderr)
    return 2


def untrained_model_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options of a command that writes an untrained model: ``--out``, ``--overwrite``,
    ``--seed``."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--out", required=True, help="folder to write (must be empty)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out (swapped in only once the new model is complete)",
    )
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    return parser


def write_untrained_model(prog: str, args: argparse.Namespace, build: Any, make_config: Any) -> int:
    """Check ``--out``, then build the model into a staged folder swapped in when complete.

    ``build(folder, config)`` and ``make_config(seed=...)`` come from the modeling module, which
    the caller imports after parsing (so ``--help`` never loads torch). Returns the exit code.
    """
    try:
        check_output_folder(args.out, overwrite=args.overwrite)
    except CliError as err:
        return fail(prog, err)
    config = make_config(seed=args.seed)
    try:
        with staged_folder(args.out) as staging:
            build(staging, config)
    except OSError as err:
        return fail(prog, f"could not write {args.out}: {err.strerror or err}")
    from dataclasses import asdict

    print(f"wrote {args.out} ({asdict(config)})")
    return 0
