"""Feedback from the Space back into training: stored judgements become a ``qa`` split.

Each feedback row teaches one answer: the corrected answer when a person said the model was
wrong, or the rated answer itself when they said it was right. That answer (in canonical form)
and its findings, with boxes from the shared geometry, make a row with exactly the ``qa`` features
of :mod:`dataset_tools.builders`, so the split can be concatenated with a built dataset and fed to
the same training code. Rows whose taught answer says no verdict (a judged-correct answer that
was gibberish) are skipped and counted.

Example:
    >>> rows, report = feedback_rows(FeedbackStore("feedback.sqlite3"))
    >>> write_feedback_split("feedback.sqlite3", Path("data/feedback"), command="...")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from dataset_tools.builders import FEATURES, qa_columns
from dataset_tools.save import check_output_dir
from qeu_space.cli import staged_folder
from qeu_space.feedback import FeedbackStore, StoredFeedback, open_store, png_bytes
from qeu_space.geometry import CompositeLayout
from qeu_space.vocabulary import Finding, parse_answer

UNKNOWN = "unknown"


@dataclass(frozen=True)
class FeedbackReport:
    """What became of the stored rows.

    Attributes:
        stored: rows in the store.
        used: rows written.
        skipped_correct: rows left out because only corrections were asked for.
        unreadable: rows whose taught answer says no verdict.
    """

    stored: int
    used: int
    skipped_correct: int
    unreadable: int


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


def feedback_row(store: FeedbackStore, row: StoredFeedback) -> dict | None:
    """One ``qa`` row, or ``None`` when the taught answer says no verdict."""
    parsed = parse_answer(row.taught_answer)
    if not parsed.understood:
        return None
    image = store.image(row.image_sha256)
    findings = _findings(row.taught_answer, image.size)
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


def feedback_rows(
    store: FeedbackStore, *, only_wrong: bool = False
) -> tuple[list[dict], FeedbackReport]:
    """Every usable row of ``store``, oldest first, and the counts of what was left out."""
    rows, stored, skipped, unreadable = [], 0, 0, 0
    for row in store.rows():
        stored += 1
        if only_wrong and row.correct:
            skipped += 1
            continue
        built = feedback_row(store, row)
        if built is None:
            unreadable += 1
            continue
        rows.append(built)
    return rows, FeedbackReport(stored, len(rows), skipped, unreadable)


def _card(split: str, rows: int, command: str) -> DatasetCard:
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
the synthetic `qa` datasets: the corrected answer where a model was wrong, the model's answer where
it was right. `housing`, `pins` and `look` are `{UNKNOWN}` (uploads carry no render settings).

```bash
{command}
```
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_feedback_split(
    db: str | os.PathLike[str],
    out: Path,
    *,
    split: str = "feedback",
    only_wrong: bool = False,
    overwrite: bool = False,
    command: str = "python -m dataset_tools from-feedback",
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
        rows, report = feedback_rows(store, only_wrong=only_wrong)
    finally:
        store.close()
    if not rows:
        raise ValueError(
            f"no usable feedback in {db}: {report.stored} row(s) stored, "
            f"{report.skipped_correct} judged correct (left out by --only-wrong), "
            f"{report.unreadable} without a readable answer"
        )
    dataset = datasets.Dataset.from_list(rows, features=FEATURES["qa"], split=split)
    with staged_folder(out) as staging:  # all or nothing: swapped in once complete
        (staging / "qa").mkdir()
        dataset.to_parquet(str(staging / "qa" / f"{split}-00000-of-00001.parquet"))
        _card(split, len(rows), command).save(staging / "README.md")
    return report
