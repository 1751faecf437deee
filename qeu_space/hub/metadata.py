"""A card's YAML metadata checked the way the Hub checks it, plus what this project requires.

The Hub reads a repo's ``README.md`` front matter and refuses (``/api/validate-yaml``) metadata
it cannot use; the one rule this project has tripped over is a local path under ``datasets:`` or
``base_model:`` (a training run on ``data/qa`` wrote ``datasets: [data/qa]``). :func:`hub_problems`
is that check, run before every push so it fails here, with the file named, not halfway through
an upload. :func:`card_problems` adds the project's own rule for model and adapter cards: licence,
library, pipeline tag, tags, datasets and a ``model-index`` of measured metrics with their 95 %
intervals (``args.ci95``), and ``base_model`` for an adapter.

CLI (the check the embedded cards pass; the tests run it too):
    python -m qeu_space.hub.metadata models/*/README.md README.md
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Licence ids the Hub accepts (its list, the ones a project like this would use) and "other"
#: (which then needs ``license_name`` and ``license_link``).
LICENSES = frozenset({
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0",
    "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "gpl-3.0", "lgpl-3.0", "agpl-3.0", "mpl-2.0",
    "openrail", "creativeml-openrail-m", "bigscience-openrail-m", "llama3", "gemma", "unknown",
    "other",
})  # fmt: skip
#: Pipeline tags the project's models use (a subset of the Hub's task list).
PIPELINE_TAGS = frozenset({
    "image-classification", "image-text-to-text", "object-detection", "image-to-text",
    "visual-question-answering", "zero-shot-image-classification", "image-feature-extraction",
})  # fmt: skip
#: Keys every model or adapter card of this project carries.
REQUIRED = ("license", "library_name", "pipeline_tag", "tags", "datasets", "model-index")
#: A Hub repo id: ``name`` (canonical) or ``owner/name`` (the Hub's own pattern, no ``--``/``..``).
_REPO_ID = re.compile(r"^(?:[\w][\w.-]{0,95}/)?[\w][\w.-]{0,95}$")
_FRONT = re.compile(r"\A---\r?\n(.*?)\r?\n---\s*(?:\r?\n|\Z)", re.S)


def front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata at the top of a card (``{}`` when there is none).

    Raises:
        ValueError: the block is not valid YAML or not a mapping.
    """
    import yaml

    match = _FRONT.match(text)
    if match is None:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        raise ValueError(f"invalid YAML metadata: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("YAML metadata must be a mapping")
    return data


def local_path_reason(name: str) -> str | None:
    """Why ``name`` reads as a local path rather than a Hub id (``None``: a valid Hub id).

    Syntax only, so the answer is the same from every working directory (a folder that happens to
    exist here says nothing about what the name means on the Hub).
    """
    if not isinstance(name, str) or not name:
        return "not a string"
    if name.startswith(("/", "./", "../", "~")) or re.match(r"^[A-Za-z]:[\\/]", name):
        return "a file-system path"
    if "\\" in name:
        return "a Windows path"
    if name.count("/") > 1:
        return "more than one '/' (a path, not owner/name)"
    if "--" in name or ".." in name or not _REPO_ID.match(name):
        return "not a valid repo id"
    return None


def local_folder(name: str, anchor: str | Path | None = None) -> Path | None:
    """The existing folder ``name`` names, seen from the working directory or from the parents
    of ``anchor`` (a relative ``models/...`` recorded inside a repository), else ``None``."""
    if not isinstance(name, str) or not name:
        return None
    path = Path(name).expanduser()
    candidates = [path]
    if anchor is not None and not path.is_absolute():
        candidates += [parent / path for parent in Path(anchor).resolve().parents]
    return next((c for c in candidates if c.is_dir()), None)


def _id_list(meta: Mapping[str, Any], key: str) -> tuple[list[str], list[str]]:
    value = meta.get(key)
    if value is None:
        return [], []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        return [], [f"{key}: must be a string or a list of strings"]
    problems = []
    for item in items:
        reason = local_path_reason(item)
        if reason is not None:
            problems.append(f"{key}: {item!r} is not a Hub id ({reason}); name the repo on the Hub")
    return [i for i in items if isinstance(i, str)], problems


def hub_problems(meta: Mapping[str, Any], *, repo_type: str = "model") -> list[str]:
    """What the Hub's metadata check would refuse in ``meta`` (empty: accepted)."""
    problems = []
    for key in ("datasets", "base_model", *(("models",) if repo_type == "space" else ())):
        problems += _id_list(meta, key)[1]
    license_id = meta.get("license")
    if license_id is not None:
        if not isinstance(license_id, str) or license_id not in LICENSES:
            problems.append(f"license: {license_id!r} is not a Hub licence id")
        elif license_id == "other" and not (meta.get("license_name") and meta.get("license_link")):
            problems.append("license: other needs license_name and license_link")
    tag = meta.get("pipeline_tag")
    if tag is not None and tag not in PIPELINE_TAGS:
        problems.append(f"pipeline_tag: {tag!r} is not a task this project publishes")
    for key in ("tags", "metrics"):
        value = meta.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            problems.append(f"{key}: must be a list of strings")
    problems += _model_index_problems(meta.get("model-index"), require_intervals=False)
    return problems


def _model_index_problems(index: Any, *, require_intervals: bool) -> list[str]:
    if index is None:
        return []
    if not isinstance(index, list) or not index:
        return ["model-index: must be a non-empty list"]
    problems = []
    for entry in index:
        if not isinstance(entry, dict) or not entry.get("name"):
            problems.append("model-index: every entry needs a name")
            continue
        results = entry.get("results")
        if not isinstance(results, list) or not results:
            problems.append(f"model-index {entry['name']}: needs results")
            continue
        for result in results:
            task = result.get("task") if isinstance(result, dict) else None
            dataset = result.get("dataset") if isinstance(result, dict) else None
            metrics = result.get("metrics") if isinstance(result, dict) else None
            if not isinstance(task, dict) or not task.get("type"):
                problems.append("model-index: each result needs task.type")
            if not isinstance(dataset, dict) or not dataset.get("type") or not dataset.get("name"):
                problems.append("model-index: each result needs dataset.type and dataset.name")
            if not isinstance(metrics, list) or not metrics:
                problems.append("model-index: each result needs metrics")
                continue
            for metric in metrics:
                if not isinstance(metric, dict) or not metric.get("type"):
                    problems.append("model-index: each metric needs a type")
                    continue
                if not isinstance(metric.get("value"), int | float):
                    problems.append(f"model-index: metric {metric['type']} needs a numeric value")
                if require_intervals and not _has_interval(metric):
                    problems.append(
                        f"model-index: metric {metric.get('name') or metric['type']} has no 95 % "
                        "interval (args.ci95: [low, high])"
                    )
    return problems


def _has_interval(metric: Mapping[str, Any]) -> bool:
    args = metric.get("args")
    ci = args.get("ci95") if isinstance(args, dict) else None
    return (
        isinstance(ci, list)
        and len(ci) == 2
        and all(isinstance(v, int | float) for v in ci)
        and ci[0] <= metric["value"] <= ci[1]
    )


def card_problems(text: str, *, kind: str | None = None) -> list[str]:
    """The Hub's problems plus this project's rules for a card's text.

    Args:
        text: the card (YAML front matter + page).
        kind: ``model``, ``adapter`` or ``space``; by default an adapter when
            ``library_name: peft``, a Space when ``sdk`` is set, else a model.
    """
    try:
        meta = front_matter(text)
    except ValueError as err:
        return [str(err)]
    if kind is None:
        kind = (
            "space"
            if "sdk" in meta
            else "adapter"
            if meta.get("library_name") == "peft"
            else "model"
        )
    problems = hub_problems(meta, repo_type="space" if kind == "space" else "model")
    if kind == "space":
        return problems
    problems += [f"{key}: missing" for key in REQUIRED if not meta.get(key)]
    if kind == "adapter" and not meta.get("base_model"):
        problems.append("base_model: missing (an adapter names the Hub id of its base)")
    problems += [
        p
        for p in _model_index_problems(meta.get("model-index"), require_intervals=True)
        if "interval" in p
    ]
    return problems


def check_files(paths: Sequence[str | Path]) -> dict[str, list[str]]:
    """``{path: problems}`` for each card file that has any."""
    found = {}
    for path in paths:
        problems = card_problems(Path(path).read_text(encoding="utf-8"))
        if problems:
            found[str(path)] = problems
    return found


def main(argv: Sequence[str] | None = None) -> int:
    from qeu_space.cli import OneLineParser, existing_path

    parser = OneLineParser(
        prog="python -m qeu_space.hub.metadata",
        description="Check cards' YAML metadata as the Hub does, plus the project's required keys "
        "(licence, library, pipeline tag, tags, datasets, model-index with 95 %% intervals; "
        "base_model for adapters). Exit 1 when a card fails.",
    )
    parser.add_argument("cards", nargs="+", type=existing_path("file"), metavar="README.md")
    args = parser.parse_args(argv)
    found = check_files(args.cards)
    for path, problems in found.items():
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
    if not found:
        print(f"{len(args.cards)} card(s) OK")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
