"""Feedback from the Space back into training: stored judgements become a ``qa`` split.

A wrong row teaches a model a wrong answer, so only answers the data can vouch for are written:

- **server truth**: the sample was rendered or recognised by the Space (``truth_source`` =
  ``server``); its row teaches that truth, whatever the judgement said;
- **confirmed**: otherwise (an upload, a typed truth that is only a claim, a row stored before
  provenance was recorded) a judgement's answer (the correction, or the rated answer judged right)
  is used only when at least ``min_agree`` different clients taught the same answer for the same
  image and no judgement of that image taught another.

Every image is written once per answer, as a row with exactly the ``qa`` features of
:mod:`dataset_tools.builders` (boxes from the shared geometry), so the split can be concatenated
with a built dataset and fed to the same training code. The dataset card counts what was left out
and why (:class:`FeedbackReport`).

Example:
    >>> rows, report = feedback_rows(FeedbackStore("feedback.sqlite3"))
    >>> write_feedback_split("feedback.sqlite3", Path("data/feedback"), command="...")
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from dataset_tools.builders import qa_columns
from dataset_tools.features import FEATURES
from dataset_tools.save import check_output_dir
from qeu_space.cli import staged_folder
from qeu_space.feedback import FeedbackStore, StoredFeedback, open_store, png_bytes
from qeu_space.geometry import CompositeLayout
from qeu_space.vocabulary import Finding, format_answer, parse_answer

UNKNOWN = "unknown"


#: Why a stored judgement was left out, as the report and the card word it.
REASONS = {
    "skipped_correct": "judged correct, left out by --only-wrong",
    "unreadable": "its answer says no verdict (unreadable)",
    "unconfirmed": "no server truth, and fewer than --min-agree clients taught its answer",
    "disputed": "no server truth, and judgements of the same image teach different answers",
    "duplicate": "the same image and answer as a row already written",
}


@dataclass(frozen=True)
class FeedbackReport:
    """What became of the stored judgements.

    Attributes:
        stored: judgements standing in the store (replaced ones are history, never read).
        used: rows written (one per image and answer).
        server: judgements whose image has a server truth (the truth is what they teach).
        contradicted: of those, judgements that taught another answer than the truth (stored
            before such corrections were refused; the truth was written, not their answer).
        confirmed: judgements without a server truth whose answer ``min_agree`` clients taught.
        skipped_correct / unreadable / unconfirmed / disputed / duplicate: left out (see
            :data:`REASONS`).
    """

    stored: int
    used: int
    skipped_correct: int
    unreadable: int
    server: int = 0
    contradicted: int = 0
    confirmed: int = 0
    unconfirmed: int = 0
    disputed: int = 0
    duplicate: int = 0

    def left_out(self) -> dict[str, int]:
        """``{reason: count}`` of every reason that left a judgement out."""
        return {k: getattr(self, k) for k in REASONS if getattr(self, k)}

    def summary(self) -> str:
        """One line: used, and what was left out why."""
        out = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in self.left_out().items())
        return (
            f"{self.used} rows from {self.stored} judgements ({self.server} with a server truth, "
            f"{self.confirmed} confirmed by agreeing clients); left out: {out or 'none'}"
        )


def _findings(answer: str, size: tuple[int, int]) -> tuple[Finding, ...]:
    """The answer's findings with boxes on the test panel (when the image is a composite)."""
    findings = parse_answer(answer).findings
    width, height = size
    if width != height or width < 96 or width % 2:
        return findings
    layout = CompositeLayout(width)
    return tuple(
        Finding(
            f.position,
            f.kind,
            f.direction,
            layout.to_composite(
                layout.connector.defect_box(f.position, f.kind, f.direction), "test"
            ),
        )
        for f in findings
    )


def feedback_row(
    store: FeedbackStore, row: StoredFeedback, answer: str | None = None
) -> dict | None:
    """One ``qa`` row teaching ``answer`` (default: the row's taught answer) on the row's image,
    or ``None`` when that answer says no verdict."""
    answer = row.taught_answer if answer is None else answer
    parsed = parse_answer(answer)
    if not parsed.understood:
        return None
    image = store.image(row.image_sha256)
    findings = _findings(format_answer(parsed.findings), image.size)
    stored = {"bytes": png_bytes(image), "path": None}
    return {
        "id": f"feedback-{row.uid}",
        "image": stored,
        "housing": UNKNOWN,
        "pins": UNKNOWN,
        "labels_drawn": True,
        "variant": "plain",
        "look": UNKNOWN,
        **qa_columns(stored, findings),
    }


def _canonical(answer: str | None) -> str | None:
    if not answer:
        return None
    parsed = parse_answer(answer)
    return format_answer(parsed.findings) if parsed.understood else None


def feedback_rows(
    store: FeedbackStore, *, only_wrong: bool = False, min_agree: int = 2
) -> tuple[list[dict], FeedbackReport]:
    """The rows the judgements of ``store`` vouch for (see the module docstring), oldest first,
    and the counts of what was left out."""
    if min_agree < 1:
        raise ValueError(f"--min-agree must be at least 1, got {min_agree}")
    judged = list(store.rows())
    counts = dict.fromkeys(
        ("skipped_correct", "unreadable", "server", "contradicted", "confirmed", "unconfirmed",
         "disputed", "duplicate"), 0,
    )  # fmt: skip
    truths: dict[str, str] = {}  # image -> server truth
    taught: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for row in judged:
        if row.truth_source == "server" and _canonical(row.truth):
            truths[row.image_sha256] = _canonical(row.truth)
        answer = _canonical(row.taught_answer)
        if answer is not None:  # who taught what, per image (a row without client: its own)
            taught[row.image_sha256][answer].add(row.client or f"row-{row.uid}")
    rows, written = [], set()
    for row in judged:
        if only_wrong and row.correct:
            counts["skipped_correct"] += 1
            continue
        answer = _canonical(row.taught_answer)
        truth = truths.get(row.image_sha256)
        if truth is not None:
            counts["server"] += 1
            if answer != truth:
                counts["contradicted"] += 1
            answer = truth
        elif answer is None:
            counts["unreadable"] += 1
            continue
        elif len(taught[row.image_sha256]) > 1:
            counts["disputed"] += 1
            continue
        elif len(taught[row.image_sha256][answer]) < min_agree:
            counts["unconfirmed"] += 1
            continue
        else:
            counts["confirmed"] += 1
        if (row.image_sha256, answer) in written:
            counts["duplicate"] += 1
            continue
        written.add((row.image_sha256, answer))
        rows.append(feedback_row(store, row, answer))
    return rows, FeedbackReport(len(judged), len(rows), **counts)


def _card(split: str, rows: int, command: str, report: FeedbackReport | None = None) -> DatasetCard:
    data = DatasetCardData(
        language=["en"],
        pretty_name="QEU connector inspection: feedback (qa)",
        task_categories=["image-text-to-text", "visual-question-answering"],
        tags=["visual-inspection", "connector", "human-feedback", "qeu-inspection-space"],
        configs=[
            {
                "config_name": "qa",
                "default": True,
                "data_files": [{"split": split, "path": f"qa/{split}-*.parquet"}],
            }
        ],
        dataset_info={
            "config_name": "qa",
            "features": FEATURES["qa"]._to_yaml_list(),
            "splits": [{"name": split, "num_examples": rows}],
        },
    )
    body = f"""
# QEU connector inspection: feedback (`qa`)

Judgements people gave in QEU Inspection Space, as question / answer rows with the same columns as
the synthetic `qa` datasets. Only answers the data vouches for are written: the server's own truth
where the Space rendered or recognised the sample, else an answer (a correction, or a model's
answer judged right) that agreeing clients confirmed; one row per image and answer. `housing`,
`pins` and `look` are `{UNKNOWN}` (uploads carry no render settings).

```bash
{command}
```
{_report_section(report)}"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _report_section(report: FeedbackReport | None) -> str:
    if report is None:
        return ""
    lines = [
        "",
        "## What was used and what was left out",
        "",
        f"{report.stored} judgements stood in the store; {report.used} rows were written.",
        "",
        "| judgements | count |",
        "|---|---:|",
        f"| with a server truth (the truth is written) | {report.server} |",
        f"| ... of which taught another answer (the truth was written instead) "
        f"| {report.contradicted} |",
        f"| without a server truth, confirmed by agreeing clients | {report.confirmed} |",
    ]
    lines += [f"| left out: {REASONS[k]} | {getattr(report, k)} |" for k in REASONS]
    return "\n".join(lines) + "\n"


def write_feedback_split(
    db: str | os.PathLike[str],
    out: Path,
    *,
    split: str = "feedback",
    only_wrong: bool = False,
    overwrite: bool = False,
    command: str = "python -m dataset_tools from-feedback",
    min_agree: int = 2,
) -> FeedbackReport:
    """Write ``out/qa/<split>-00000-of-00001.parquet`` and a card, all or nothing.

    Raises:
        FileNotFoundError: no store at ``db``.
        ValueError: no usable row, a bad split name, or an ``out`` that may not be written.
    """
    if not split.replace("_", "").isalnum():
        raise ValueError(f"split name must be letters, digits and '_', got {split!r}")
    out = Path(out)
    check_output_dir(out, overwrite)
    store = open_store(db)
    try:
        rows, report = feedback_rows(store, only_wrong=only_wrong, min_agree=min_agree)
    finally:
        store.close()
    if not rows:
        left = "; ".join(f"{n} {REASONS[k]}" for k, n in report.left_out().items())
        raise ValueError(
            f"no usable feedback in {db}: {report.stored} judgement(s) stored, none with a "
            f"server truth or a confirmed answer ({left or 'nothing left out'})"
        )
    dataset = datasets.Dataset.from_list(rows, features=FEATURES["qa"], split=split)
    with staged_folder(out) as staging:  # all or nothing: swapped in once complete
        (staging / "qa").mkdir()
        dataset.to_parquet(str(staging / "qa" / f"{split}-00000-of-00001.parquet"))
        _card(split, len(rows), command, report).save(staging / "README.md")
    return report
