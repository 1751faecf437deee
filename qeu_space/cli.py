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
import re
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


# --------------------------------------------------------------------------- argument types
# argparse turns the ArgumentTypeError of a ``type=`` callable into "argument --x: <message>",
# one line and exit 2 with :class:`OneLineParser`, before ``main`` imports or loads anything.


def int_at_least(low: int, high: int | None = None) -> Any:
    """An ``int`` argument type that refuses values below ``low`` (``--max-steps``: 1) or above
    ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low and high is None:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its own messages
    return parse


def float_in(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """A finite ``float`` argument type within ``[low, high]`` (``low_open`` / ``high_open``:
    excluding that end); ``None`` leaves an end unbounded."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            left = "any" if low is None else f"{'(' if low_open else '['}{low:g}"
            right = "any" if high is None else f"{high:g}{')' if high_open else ']'}"
            if high is None:
                want = f"greater than {low:g}" if low_open else f"at least {low:g}"
            elif low is None:
                want = f"less than {high:g}" if high_open else f"at most {high:g}"
            else:
                want = f"in {left}, {right}"
            raise argparse.ArgumentTypeError(f"must be {want}, got {value:g}")
        return value

    parse.__name__ = "float"
    return parse


def existing_path(kind: str = "any") -> Any:
    """A ``Path`` argument type for an input that must exist: ``file``, ``folder`` or ``any``."""

    def parse(text: str) -> Path:
        path = Path(text).expanduser()
        if not path.exists():
            raise argparse.ArgumentTypeError(f"{text} does not exist")
        if kind == "file" and not path.is_file():
            raise argparse.ArgumentTypeError(f"{text} is a folder; give a file")
        if kind == "folder" and not path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
        return path

    parse.__name__ = "path"
    return parse


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def looks_like_path(text: str) -> bool:
    """Whether ``text`` can only be a local path, never a Hub id (``OWNER/NAME`` or ``NAME``)."""
    return (
        text.startswith(("/", ".", "~", "\\"))
        or text.endswith(("/", os.sep))
        or not _HUB_ID.fullmatch(text)
    )


def folder_or_hub_id(text: str) -> str:
    """A model or dataset named as a local folder or a Hub id: a path that is not there is
    refused now, not after the imports (a Hub id is checked when it is fetched)."""
    if looks_like_path(text) and not Path(text).expanduser().exists():
        raise argparse.ArgumentTypeError(
            f"{text} does not exist (give a local folder or a Hub id OWNER/NAME)"
        )
    return text


folder_or_hub_id.__name__ = "folder or Hub id"

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


def hub_repo_id(text: str) -> str:
    """A Hub repo to create or push to: ``OWNER/NAME`` (letters, digits, ``-``, ``_``, ``.``)."""
    if not _REPO_ID.fullmatch(text) or "--" in text or ".." in text or text.endswith("."):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Hub repo id: use OWNER/NAME (letters, digits, - _ .), "
            "e.g. me/qeu-connectors"
        )
    return text


hub_repo_id.__name__ = "Hub repo id"


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
    if not re.fullmatch(r"(cpu|cuda|mps)(:\d+)?|[a-z_]+(:\d+)?", device):
        raise CliError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N")
    kind = device.split(":")[0]
    if kind not in ("cuda", "mps", "cpu"):
        raise CliError(f"--device {device}: only cpu, cuda and mps are supported")
    if kind == "cuda" and not _nvidia_driver():  # no driver, no CUDA: no need to load torch
        raise CliError(f"--device {device}: torch sees no CUDA device here; use --device cpu")
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


def _nvidia_driver() -> bool:
    """Whether an NVIDIA driver is loaded (without which torch sees no CUDA device)."""
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


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
    parser.add_argument(
        "--seed", type=int_at_least(0), default=0, help="weight initialisation seed"
    )
    return parser


def write_untrained_model(prog: str, args: argparse.Namespace, load: Any) -> int:
    """Check ``--out``, then build the model into a staged folder swapped in when complete.

    ``load()`` imports the modeling module and returns ``build(folder, config)`` and
    ``make_config(seed=...)``; it runs only after the checks (so neither ``--help`` nor a wrong
    ``--out`` waits for torch). Returns the exit code.
    """
    try:
        check_output_folder(args.out, overwrite=args.overwrite)
    except CliError as err:
        return fail(prog, err)
    build, make_config = load()
    config = make_config(seed=args.seed)
    try:
        with staged_folder(args.out) as staging:
            build(staging, config)
    except OSError as err:
        return fail(prog, f"could not write {args.out}: {err.strerror or err}")
    from dataclasses import asdict

    print(f"wrote {args.out} ({asdict(config)})")
    return 0
