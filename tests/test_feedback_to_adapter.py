"""From feedback to an adapter, end to end, with a tiny model (issue 13, item 4).

A person corrects the model on composites with a defect kind it has no word for (short pins);
``python -m dataset_tools from-feedback`` turns the store into qa rows, ``python -m
qeu_space.train`` trains an adapter on them (``--new-words short``), and ``python -m
qeu_space.evaluate`` scores base and adapter on those rows: the adapter's answers moved toward
the corrections. Every step is the CLI a user runs, in process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import load_dataset

from dataset_tools.__main__ import main as dataset_main
from dataset_tools.builders import BuildConfig, build_dataset
from qeu_space.evaluate import main as evaluate_main
from qeu_space.feedback import FeedbackEntry, FeedbackStore
from qeu_space.modeling.tiny_models import make_tiny_idefics3
from qeu_space.train import main as train_main

ROWS = 8


@pytest.fixture(scope="module")
def corrected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A feedback store: the model said "Passed." on each short-pin composite (rendered: the
    server knows its truth); a person wrote the right answer."""
    root = tmp_path_factory.mktemp("feedback")
    built = build_dataset(BuildConfig("qa", num=6 * ROWS, seed=11, size=224,
                                      kinds=("bent", "missing", "short")))  # fmt: skip
    rows = [r for r in built["train"] if "short pin" in r["answer"]][:ROWS]
    assert len(rows) >= 3
    store = FeedbackStore(root / "fb.sqlite3")
    for row in rows:
        store.add(FeedbackEntry(row["image"], "Passed. No defects found.",
                                "Passed. No defects found.", correct=False,
                                corrected_answer=row["answer"], source="test",
                                adapter_name="latched", truth=row["answer"],
                                truth_source="server"))  # fmt: skip
    return root / "fb.sqlite3", [r["answer"] for r in rows]


@pytest.mark.slow
def test_corrections_become_an_adapter_that_answers_toward_them(corrected, tmp_path):
    torch.set_num_threads(1)
    db, answers = corrected
    data = tmp_path / "data"
    assert dataset_main(["from-feedback", "--db", str(db), "--out", str(data),
                         "--split", "train", "--only-wrong"]) == 0  # fmt: skip
    taught = load_dataset(str(data), "qa", split="train")
    assert sorted(taught["answer"]) == sorted(answers)  # the corrections, not the model's answers

    base = make_tiny_idefics3(tmp_path / "base")
    adapter = tmp_path / "adapter"
    assert train_main(["--task", "qa", "--base", str(base), "--dataset", str(data),
                       "--dataset-config", "qa", "--out", str(adapter), "--scope", "all",
                       "--rank", "16", "--new-words", "short", "--learning-rate", "1e-2",
                       "--batch-size", "4", "--max-steps", "300", "--eval-samples", "0",
                       "--warmup-ratio", "0", "--quiet"]) == 0  # fmt: skip

    report = tmp_path / "report.json"
    assert evaluate_main(["--task", "qa", "--base", str(base), "--adapter", str(adapter),
                          "--dataset", str(data), "--split", "train", "--report", str(report),
                          "--max-new-tokens", "40", "--quiet"]) == 0  # fmt: skip
    runs = {run["name"]: run for run in json.loads(report.read_text())["runs"]}
    said = {name: [p["text"] for p in run["predictions"]] for name, run in runs.items()}
    # the random base answers nothing readable; the adapter answers in the taught form and names
    # some of the corrected pins (a 1 M-parameter random model learns 8 rows only so far)
    assert runs["base"]["qa"]["f1"] == 0.0
    assert all(text.startswith("Defective.") for text in said["adapter"])
    assert runs["adapter"]["qa"]["f1"] >= runs["base"]["qa"]["f1"] + 0.2
