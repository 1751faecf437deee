"""The feedback dataset on the Hub: its card, and records that name no server path.

The Space mirrors each judgement to a dataset repo (:class:`qeu_space.feedback.HubMirror`):
``data/<replica>/metadata.jsonl`` beside ``data/<replica>/images/<sha256>.png``, the layout the
Hub's ``imagefolder`` loader reads. Two things belong to publishing rather than to the store:

- :func:`publishable_record`: a record as it may leave the server. ``file_name`` is the image's
  path *relative to the JSONL file*; model fields name a Hub id or the embedded folder's name
  (``models/inspection-vlm-base``), never the absolute path the Space resolved it to.
- :func:`feedback_card` / :func:`push_feedback_card`: the repo's ``README.md`` (licence, task,
  the ``imagefolder`` config over ``data/``, the fields, and how the rows become training data),
  uploaded once to the repo root (the mirror itself only pushes ``data/``).

Example:
    >>> record = publishable_record({"file_name": "/srv/app/feedback/r1/images/ab.png",
    ...                              "base_model": "/srv/app/models/inspection-vlm-base"})
    >>> record["file_name"], record["base_model"]
    ('images/ab.png', 'models/inspection-vlm-base')
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from qeu_space.hub.metadata import local_path_reason

__all__ = [
    "MODEL_FIELDS",
    "feedback_card",
    "public_name",
    "publishable_record",
    "push_feedback_card",
]

#: Record fields that name a model (Hub id or the folder the Space loaded it from).
MODEL_FIELDS = ("base_model", "adapter")
#: Record fields that may name a file (the image; an upload's own name).
FILE_FIELDS = ("file_name", "source")
_LICENSE = "cc-by-4.0"


def _parts(name: str) -> tuple[str, ...]:
    path = PureWindowsPath(name) if "\\" in name else PurePosixPath(name)
    return tuple(p for p in path.parts if p not in ("/", "\\") and not p.endswith(":\\"))


def public_name(name: str | None) -> str | None:
    """A model's name as a published record may show it.

    A Hub id stays as it is; a path becomes ``models/<folder>`` when it lies in a ``models``
    folder (the Space's embedded models), else the folder's own name. ``None`` and ``""`` stay.
    """
    if not name:
        return name
    if local_path_reason(name) is None:
        return name
    parts = _parts(name.rstrip("/\\"))
    if len(parts) >= 2 and parts[-2] == "models":
        return f"models/{parts[-1]}"
    return parts[-1] if parts else ""


def _relative_file(name: str) -> str:
    """``images/<file>`` for an image path however it was written (absolute, ``./``, Windows)."""
    parts = _parts(name)
    if "images" in parts:
        parts = parts[len(parts) - 1 - parts[::-1].index("images") :]
    else:
        parts = parts[-1:]
    return "/".join(parts)


def publishable_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` (one JSONL line of the mirror) with no absolute or server-side path in it.

    ``file_name`` is made relative to the JSONL file (``images/<sha256>.png``, as ``imagefolder``
    resolves it); ``source`` keeps only a file's own name; model fields go through
    :func:`public_name`. Other fields are copied unchanged.
    """
    out = dict(record)
    for key in MODEL_FIELDS:
        if isinstance(out.get(key), str):
            out[key] = public_name(out[key])
    if isinstance(out.get("file_name"), str):
        out["file_name"] = _relative_file(out["file_name"])
    source = out.get("source")
    if isinstance(source, str) and (os.sep in source or "/" in source or "\\" in source):
        out["source"] = _parts(source)[-1] if _parts(source) else ""
    return out


def feedback_card(
    repo_id: str,
    *,
    models: Sequence[str] = (),
    space: str | None = None,
    license: str = _LICENSE,
) -> str:
    """The dataset card of the feedback repo (YAML the Hub reads + a page people read).

    Args:
        repo_id: the dataset repo.
        models: the models whose answers are judged (Hub ids or folders: shown by
            :func:`public_name`).
        space: the Space that collects the feedback (``owner/name``), if known.
        license: the dataset's licence id.
    """
    from huggingface_hub import DatasetCardData

    shown = [m for m in (public_name(m) for m in models) if m]
    data = DatasetCardData(
        license=license,
        language=["en"],
        pretty_name="QEU Inspection Space feedback",
        task_categories=["image-text-to-text", "visual-question-answering"],
        tags=["visual-inspection", "connector", "human-feedback", "qeu-inspection-space"],
        configs=[
            {
                "config_name": "default",
                "default": True,
                "data_files": [{"split": "train", "path": "data/**"}],
            }
        ],
    )
    where = (
        f"the Space [`{space}`](https://huggingface.co/spaces/{space})" if space else "the Space"
    )
    model_list = "\n".join(f"- `{m}`" for m in shown) or "- (the models the Space was set to)"
    body = f"""# {repo_id}

Judgements people gave in {where} on connector-inspection answers: the image (a composite,
the good reference on top, the product under inspection below), the base model's and the
fine-tuned model's answers, which one was rated, whether it was right, and the corrected answer.
It is the next training set of the project (QEU Inspection Space).

Models judged:

{model_list}

## Layout

`data/<replica>/metadata.jsonl` (one JSON object per judgement; each Space replica writes its
own file) beside `data/<replica>/images/<sha256>.png`. `file_name` is the image's path relative
to its `metadata.jsonl`, as the `imagefolder` loader expects:

```python
from datasets import load_dataset

rows = load_dataset("{repo_id}", split="train")  # image + the fields below
```

| field | meaning |
|---|---|
| `file_name` | the image, relative to the JSONL file |
| `uid`, `created_at`, `replica` | the judgement's id, UTC time, and the replica that stored it |
| `base_answer`, `tuned_answer` | what the base and the fine-tuned model answered |
| `rated`, `correct` | which answer was judged (`fine-tuned` / `base`), and whether it was right |
| `corrected_answer` | the right answer, canonical form, when the rated one was wrong |
| `comment` | free text (at most 2000 characters, control and bidirectional marks removed) |
| `truth` | the truth the answers were compared with, else empty |
| `truth_source` | `server` (the Space made or recognised the sample: certain), `user` (typed) |
| `source` | where the image came from (`gallery`, `upload`, `api`, ...) |
| `base_model`, `adapter` | the models: Hub ids, or `models/<name>` (the Space's own folders) |
| `adapter_name` | the Space's name for the adapter that gave `tuned_answer` (`QEU_ADAPTERS`) |
| `inspection_id` | the Space's inspection the answers come from |
| `client` | who judged, a keyed hash (never an address): one judgement per inspection and answer |
| `replaces` | the `uid` of the client's earlier judgement this one replaces (keep the last) |

No record holds a path on the server that stored it, nor a client's address. A server truth is
never replaced by a typed one, and a correction that contradicts it is refused.

## Use as training rows

`python -m dataset_tools from-feedback` (see the project's README) turns judgements into Q/A rows
of the project's `qa` config from server truths, and from answers that agreeing clients confirm
(`--min-agree`, default 2) where there is no server truth; its card counts what it left out and
why.

## Licence

{license}. The images are the ones people uploaded to, or generated in, the Space when they gave
their judgement; report a problem on the repo's Community tab.
"""
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def push_feedback_card(
    repo_id: str,
    *,
    token: str,
    models: Sequence[str] = (),
    space: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload the card as ``README.md`` at the repo's root (the repo must exist).

    The mirror calls this once when it starts: its scheduler pushes ``data/`` only. Returns the
    commit URL.

    Raises:
        ValueError: the card's metadata would be refused by the Hub.
        HubPushError: the Hub refused the upload (the message holds no token).
    """
    from huggingface_hub import HfApi

    from qeu_space.hub.metadata import front_matter, hub_problems
    from qeu_space.hub.upload import HubPushError, check_repo_id, resolve_endpoint

    check_repo_id(repo_id)
    card = feedback_card(repo_id, models=models, space=space)
    problems = hub_problems(front_matter(card), repo_type="dataset")
    if problems:
        raise ValueError("the feedback card would be refused by the Hub: " + "; ".join(problems))
    api = HfApi(endpoint=resolve_endpoint(endpoint), token=token)
    try:
        info = api.upload_file(
            path_or_fileobj=card.encode("utf-8"),
            path_in_repo="README.md",
            repo_id=repo_id,
            repo_type="dataset",
            commit_message="Feedback dataset card",
        )
    except Exception as err:  # noqa: BLE001 - one line, never the token or the request
        status = getattr(getattr(err, "response", None), "status_code", None)
        reason = f"HTTP {status}" if status else type(err).__name__
        raise HubPushError(
            f"cannot upload the card of dataset {repo_id} ({reason}); check QEU_FEEDBACK_REPO and "
            "the token's write access"
        ) from None
    return info.commit_url
