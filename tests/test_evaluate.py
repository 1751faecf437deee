"""Evaluation end to end on tiny models and tiny datasets, the report format, and bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import datasets
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForImageTextToText

from dataset_tools.builders import BuildConfig
from dataset_tools.save import build_to_folder
from qeu_space.evaluate import main as evaluate_main
from qeu_space.evaluation import evaluate as ev
from qeu_space.evaluation.metrics import findings_scores, od_metrics, qa_metrics
from qeu_space.modeling.families import family_for, florence2
from qeu_space.modeling.loading import load_model
from qeu_space.modeling.tiny_models import make_tiny_florence2, make_tiny_idefics3
from qeu_space.vocabulary import Finding

#: task -> (tiny model builder, LoRA scope): the two families the CLI serves.
MODELS = {"qa": make_tiny_idefics3, "od": make_tiny_florence2}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Parquet folders as ``python -m dataset_tools build`` writes them (2 test rows each)."""
    root = tmp_path_factory.mktemp("data")
    folders = {}
    for task in MODELS:
        cfg = BuildConfig(config=task, num=2, size=224, eval_fraction=1.0)
        build_to_folder(cfg, root / task, command="test")
        folders[task] = root / task
    return folders


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Per task: a tiny base folder and a LoRA adapter on it whose B matrices are non-zero."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for task, make in MODELS.items():
        base = make(root / f"{task}-base")
        model = AutoModelForImageTextToText.from_pretrained(base)
        scope_regex = family_for(model).lora_target_modules("language")
        peft_model = get_peft_model(
            model, LoraConfig(r=4, lora_alpha=8, target_modules=scope_regex)
        )
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator))
        peft_model.save_pretrained(root / f"{task}-lora")
        out[task] = (base, root / f"{task}-lora")
    return out


@pytest.mark.parametrize("task", list(MODELS))
def test_cli_scores_base_and_adapter(task: str, data, models, tmp_path: Path, capsys) -> None:
    base, adapter = models[task]
    report_path = tmp_path / "reports" / f"{task}.json"
    argv = ["--task", task, "--base", str(base), "--adapter", str(adapter)]
    argv += ["--dataset", str(data[task]), "--split", "test", "--report", str(report_path)]
    argv += ["--limit", "2", "--max-new-tokens", "8", "--batch-size", "2", "--quiet"]
    # unconstrained: in 8 tokens the grammar leaves random models only "Passed. No defects found."
    argv += ["--no-grammar"]
    assert evaluate_main(argv) == 0
    assert "| base (" in capsys.readouterr().out

    raw = json.loads(report_path.read_text())
    report = ev.EvalReport.from_dict(raw)
    assert [r.name for r in report.runs] == ["base", "adapter"]
    assert report.n_samples == 2 and report.split == "test" and report.task == task
    markdown = report_path.with_suffix(".md").read_text()
    assert f"| base (`{base}`) |" in markdown and f"| adapter (`{adapter}`) |" in markdown

    # The base row (disable_adapter on the adapted model) says exactly what the base alone says.
    table = ev.load_split(str(data[task]), task, "test")
    alone = ev.evaluate(
        load_model(base, device="cpu"),
        table,
        task=task,
        max_new_tokens=8,
        progress=False,
        grammar=False,
    )
    base_run, adapter_run = report.run("base"), report.run("adapter")
    assert base_run.predictions == alone.runs[0].predictions
    assert [p.text for p in adapter_run.predictions] != [p.text for p in base_run.predictions]

    # The stored metrics are the metrics of the stored predictions.
    for run in report.runs:
        texts = [p.text for p in run.predictions]
        if task == "qa":
            truths = [[Finding.from_dict(f) for f in row["findings"]] for row in table]
            assert run.qa == qa_metrics(truths, texts, references=table["answer"])
        else:
            truths = [ev.boxes_of(row, ev.category_names(table)) for row in table]
            images = [image.convert("RGB") for image in table["image"]]
            pairs = list(zip(texts, images, strict=True))
            preds = [florence2.boxes_in_image(t, image) for t, image in pairs]
            # the report's boxes are those, in each row's image (where the truth boxes are)
            stored = [[(b["label"], tuple(b["box"])) for b in p.boxes] for p in run.predictions]
            assert stored == preds
            boxes = od_metrics(truths, preds)
            truth_findings = [
                florence2.findings_in_image(b, i) for b, i in zip(truths, images, strict=True)
            ]
            found = findings_scores(truth_findings, [florence2.parse(t, i.size) for t, i in pairs])
            assert run.od == dataclasses.replace(
                boxes,
                findings_precision=found.precision,
                findings_recall=found.recall,
                findings_f1=found.f1,
                findings_exact_match=found.exact_match,
                n_unreadable=sum(not florence2.readable(t) for t in texts),
            )
            assert "unreadable_rate" in run.intervals  # defined on every draw
            for low, high in run.intervals.values():
                assert 0.0 <= low <= high <= 1.0


def test_no_adapter_gives_one_base_row(data, models, tmp_path: Path) -> None:
    base, _ = models["qa"]
    options = ev.EvalOptions(
        task="qa",
        base=str(base),
        dataset=str(data["qa"]),
        report=tmp_path / "r.json",
        limit=1,
        max_new_tokens=4,
        progress=False,
    )
    report = ev.run_evaluation(options)
    assert [r.name for r in report.runs] == ["base"] and report.adapter is None
    assert ev.read_report(tmp_path / "r.json") == report


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--split": "nope"}, "has no split 'nope' (splits: train, validation, test"),
        ({"--task": "od"}, "lacks column(s) ['objects'] needed for task 'od'"),
        ({"--dataset": "/no/such/folder"}, "/no/such/folder does not exist"),
        ({"--report": "out.txt"}, "--report must name a .json file"),
        ({"--limit": "0"}, "--limit: must be at least 1"),
    ],
)
def test_cli_bad_input_is_one_line(change, message, data, models, tmp_path, capsys) -> None:
    base, _ = models["qa"]
    args = {
        "--task": "qa",
        "--base": str(base),
        "--dataset": str(data["qa"]),
        "--report": str(tmp_path / "r.json"),
        "--quiet": None,
    }
    args.update(change)
    argv = [item for k, v in args.items() for item in ((k,) if v is None else (k, v))]
    try:  # the parser refuses some (exit 2 by SystemExit), main the others
        code = evaluate_main(argv)
    except SystemExit as exited:
        code = exited.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


def test_task_the_family_cannot_answer(data, models) -> None:
    base, _ = models["od"]  # Florence-2 answers <OD>, not the Q/A question
    table = ev.load_split(str(data["qa"]), "qa", "test")
    with pytest.raises(ValueError, match="florence2 model"):
        ev.evaluate(load_model(base, device="cpu"), table, task="qa", progress=False)


# --------------------------------------------------------------------------- rows and storage


@pytest.mark.parametrize(
    "findings",
    [
        [{"position": "C7", "kind": "missing pin", "direction": None, "box": None}],
        {"position": ["C7"], "kind": ["missing pin"], "direction": [None], "box": [None]},
    ],
    ids=["list of structs", "struct of lists"],
)
def test_findings_of_both_column_forms(findings) -> None:
    assert ev.findings_of({"findings": findings}) == [Finding("C7", "missing pin")]


def test_boxes_of_names_classlabel_indices() -> None:
    row = {"objects": {"bbox": [[1, 2, 3, 4]], "category": [1]}}
    assert ev.boxes_of(row, ["bent pin", "missing pin"]) == [("missing pin", (1.0, 2.0, 4.0, 6.0))]
    with pytest.raises(ev.DatasetFormatError, match="names no categories"):
        ev.boxes_of(row)


def test_category_names_from_classlabel_features() -> None:
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "objects": {
                "bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                "category": datasets.List(datasets.ClassLabel(names=["bent pin", "missing pin"])),
            },
        }
    )
    table = datasets.Dataset.from_dict({"image": [], "objects": []}, features=features)
    assert ev.category_names(table) == ["bent pin", "missing pin"]


@pytest.mark.parametrize("nested", [False, True], ids=["root", "task subfolder"])
def test_load_split_reads_save_to_disk(nested: bool, tmp_path: Path) -> None:
    rows = {"image": ["not decoded here"], "findings": [[]], "answer": ["Passed."]}
    dd = datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)})
    dd.save_to_disk(str(tmp_path / "qa" if nested else tmp_path))
    assert ev.load_split(str(tmp_path), "qa", "test").column_names == list(rows)


def test_report_round_trip_and_bad_reports(tmp_path: Path) -> None:
    truth = [[Finding("C7", "missing pin")]]
    run = ev.ModelRun(
        "base",
        "m",
        1.0,
        1.0,
        qa=qa_metrics(truth, ["C7 missing"]),
        predictions=[ev.Prediction("0", "C7 missing")],
    )
    report = ev.EvalReport("qa", "m", None, "d", "test", 1, "cpu", 8, [run])
    json_path, md_path = ev.write_report(report, tmp_path / "r.json")
    assert ev.read_report(json_path) == report
    assert "| base (`m`) | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | n/a | 0.000 |" in (
        md_path.read_text()
    )
    (tmp_path / "bad.json").write_text(json.dumps({"task": "qa"}))
    with pytest.raises(ValueError, match="not a report written by"):
        ev.read_report(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="does not exist"):
        ev.read_report(tmp_path / "missing.json")
