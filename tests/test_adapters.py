"""Adapter inspection against PEFT's own numbers, the model card's YAML, and a push over HTTP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import LlamaConfig, LlamaForCausalLM

from qeu_space import adapters
from qeu_space.evaluation.evaluate import EvalReport, ModelRun, Prediction, write_report
from qeu_space.evaluation.metrics import qa_intervals, qa_metrics
from qeu_space.hub.adapters import (
    PushOptions,
    inspect_adapter,
    plot_norms,
    summarize_adapter,
    write_model_card,
)
from qeu_space.hub.metadata import card_problems, front_matter, hub_problems
from qeu_space.hub.model_card import CardInputs, build_model_card
from qeu_space.vocabulary import Finding
from tests.hub_standin import HubStandin

#: (name, LoraConfig keyword arguments): the table every inspection test runs over.
ADAPTER_CASES = {
    "lora": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "rslora+patterns": dict(
        r=8,
        lora_alpha=4,
        use_rslora=True,
        target_modules=["q_proj", "k_proj", "down_proj"],
        rank_pattern={"layers.1.self_attn.k_proj": 2},
        alpha_pattern={"layers.0.mlp.down_proj": 16},
    ),
    "dora+head": dict(
        r=2, lora_alpha=2, use_dora=True, target_modules=["v_proj"], modules_to_save=["lm_head"]
    ),
}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama built from a config (7k parameters), saved with safetensors."""
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def _make_adapter(base: Path, out: Path, **lora: object) -> PeftModel:
    """A real PEFT adapter whose B matrices are non-zero (PEFT initialises them to zero)."""
    model = get_peft_model(LlamaForCausalLM.from_pretrained(base), LoraConfig(**lora))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    model.save_pretrained(out)
    return model


@pytest.mark.parametrize("case", list(ADAPTER_CASES), ids=list(ADAPTER_CASES))
def test_inspect_agrees_with_peft(case: str, tiny_base: Path, tmp_path: Path) -> None:
    model = _make_adapter(tiny_base, tmp_path / "adapter", **ADAPTER_CASES[case])
    summary = inspect_adapter(tmp_path / "adapter")

    lora_layers = {
        name.removeprefix("base_model.model."): module
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
    }
    by_module = {m.module: m for m in summary.modules}
    lora_rows = {k: m for k, m in by_module.items() if m.kind in ("lora", "dora")}
    assert set(lora_rows) == set(lora_layers)
    for name, layer in lora_layers.items():
        row = lora_rows[name]
        assert row.rank == layer.r["default"]
        assert row.scaling == pytest.approx(layer.scaling["default"])
        delta = layer.get_delta_weight("default").detach()
        assert row.norm == pytest.approx(float(torch.linalg.norm(delta)), rel=1e-5)
        assert row.kind == ("dora" if ADAPTER_CASES[case].get("use_dora") else "lora")

    trainable, _ = model.get_nb_trainable_parameters()
    base_params = sum(p.numel() for p in LlamaForCausalLM.from_pretrained(tiny_base).parameters())
    assert summary.trainable_params == trainable
    assert summary.base_params == base_params
    assert summary.share_of_base == pytest.approx(trainable / base_params)
    assert summary.rank == ADAPTER_CASES[case]["r"]
    assert summary.base_model == str(tiny_base)
    if "modules_to_save" in ADAPTER_CASES[case]:
        head = by_module["lm_head"]
        assert head.kind == "full" and head.params == 64 * 16


def test_rank_pattern_shows_per_module(tiny_base: Path, tmp_path: Path) -> None:
    _make_adapter(tiny_base, tmp_path / "a", **ADAPTER_CASES["rslora+patterns"])
    ranks = {m.module: m.rank for m in inspect_adapter(tmp_path / "a").modules}
    assert ranks["model.layers.1.self_attn.k_proj"] == 2
    assert ranks["model.layers.0.self_attn.k_proj"] == 8
    # alpha_pattern 16 on layer 0's down_proj, rsLoRA: 16 / sqrt(8); elsewhere 4 / sqrt(8)
    scaling = {m.module: m.scaling for m in inspect_adapter(tmp_path / "a").modules}
    assert scaling["model.layers.0.mlp.down_proj"] == pytest.approx(16 / 8**0.5)
    assert scaling["model.layers.1.mlp.down_proj"] == pytest.approx(4 / 8**0.5)


@pytest.mark.parametrize("layout", ["hub id", "config only"])
def test_base_params_without_local_weights(layout: str, tiny_base: Path, tmp_path: Path) -> None:
    _make_adapter(tiny_base, tmp_path / "a", **ADAPTER_CASES["lora"])
    config_path = tmp_path / "a" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    if layout == "hub id":
        config["base_model_name_or_path"] = "someone/tiny-llama"
    else:
        (tmp_path / "base").mkdir()
        shutil.copy(tiny_base / "config.json", tmp_path / "base" / "config.json")
        config["base_model_name_or_path"] = str(tmp_path / "base")
    config_path.write_text(json.dumps(config))
    summary = inspect_adapter(tmp_path / "a")
    if layout == "hub id":
        assert summary.base_params is None and summary.share_of_base is None
        assert "not a local folder" in summary.base_note
        assert "share of the base unknown" in summary.to_markdown()
    else:  # built on the meta device from the config: same count as the weights
        assert summary.base_params == inspect_adapter_base_count(tiny_base)
        assert summary.base_note == "counted from the base config"


def inspect_adapter_base_count(base: Path) -> int:
    return sum(p.numel() for p in LlamaForCausalLM.from_pretrained(base).parameters())


def test_inspect_cli_json_table_and_plot(tiny_base: Path, tmp_path: Path, capsys) -> None:
    _make_adapter(tiny_base, tmp_path / "a", **ADAPTER_CASES["dora+head"])
    png = tmp_path / "plots" / "norms.png"
    assert adapters.main(["inspect", str(tmp_path / "a"), "--json", "--plot", str(png)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["peft_type"] == "LORA" and data["use_dora"] is True
    assert [m["module"] for m in data["modules"]] == [
        "lm_head",
        "model.layers.0.self_attn.v_proj",
        "model.layers.1.self_attn.v_proj",
    ]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert adapters.main(["inspect", str(tmp_path / "a")]) == 0
    table = capsys.readouterr().out
    assert "| model.layers.1.self_attn.v_proj | dora | 2 | 1 |" in table
    assert "modules saved whole: lm_head" in table


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("no config", "has no adapter_config.json"),
        ("pickle only", "adapter_model.bin (a pickle: refused)"),
    ],
)
def test_inspect_rejects_non_adapters(setup: str, message: str, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "a"
    if setup != "missing":
        folder.mkdir()
    if setup == "pickle only":
        (folder / "adapter_config.json").write_text("{}")
        (folder / "adapter_model.bin").write_bytes(b"\x80")
    try:  # a folder that is not there is refused by the parser, before any work
        code = adapters.main(["inspect", str(folder)])
    except SystemExit as exited:
        code = exited.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_plot_refuses_empty_adapter(tmp_path: Path) -> None:
    summary = summarize_adapter({"peft_type": "LORA"}, {}, path="x")
    with pytest.raises(ValueError, match="holds no tensors"):
        plot_norms(summary, tmp_path / "p.png")


# --------------------------------------------------------------------------- model card


def _report(dataset: str = "/data/qeu") -> EvalReport:
    """A Q/A report over two fixed samples: base says nothing useful, adapter gets one right."""
    truth = [[Finding("C7", "missing pin")], []]
    refs = ["Defective. 1 defect: C7 missing pin.", "Passed. No defects found."]
    base_texts = ["hello", "hello"]
    tuned = ["Defective. 1 defect: C7 missing pin.", "Defective. 1 defect: U1 bent pin (up)."]
    runs = [
        ModelRun(
            name,
            model,
            1.0,
            2.0,
            qa=qa_metrics(truth, texts, refs),
            predictions=[Prediction(str(i), t) for i, t in enumerate(texts)],
            intervals=qa_intervals(truth, texts),
        )
        for name, model, texts in (("base", "org/base", base_texts), ("adapter", "out/a", tuned))
    ]
    return EvalReport("qa", "org/base", "out/a", dataset, "test", 2, "cpu", 64, runs)


def test_model_card_yaml_fields() -> None:
    report = _report()
    card = build_model_card(
        CardInputs(
            base_model="HuggingFaceTB/SmolVLM-256M-Instruct",
            datasets=["me/qeu-connectors"],
            repo_id="me/qeu-qa-lora",
            report=report,
            training_args={"rank": 16, "learning_rate": 2e-4, "task": "qa"},
            trainer_state={"global_step": 30, "log_history": [{"loss": 2.5}, {"loss": 0.5}]},
            loss_plot="loss.png",
            reproduce="python -m qeu_space.train --task qa --base X --dataset Y --out Z",
        )
    )
    # Read back the way the Hub does: YAML front matter of the saved text.
    meta = yaml.safe_load(str(card).split("---\n")[1])
    assert meta["base_model"] == "HuggingFaceTB/SmolVLM-256M-Instruct"
    assert meta["datasets"] == ["me/qeu-connectors"]
    assert meta["library_name"] == "peft"
    results = meta["model-index"][0]["results"]
    by_name = {m["name"]: m for r in results for m in r["metrics"]}
    # adapter run: verdict 1/2 right; findings tp=1 fp=1 fn=0 -> precision 0.5, recall 1,
    # F1 2/3; exact match 1/2
    assert by_name["verdict acc"]["value"] == 0.5
    assert by_name["precision"]["value"] == 0.5
    assert by_name["recall"]["value"] == 1.0
    assert by_name["F1"]["value"] == pytest.approx(0.6667)
    assert results[0]["dataset"]["name"] == "me/qeu-connectors"
    assert results[0]["dataset"]["split"] == "test"
    reloaded = ModelCard(str(card))
    assert reloaded.data.eval_results[0].dataset_config == "qa"
    text = card.text
    assert "![training and validation loss](loss.png)" in text
    assert "python -m qeu_space.train --task qa" in text
    assert "| base (`org/base`) |" in text and "| adapter (`out/a`) |" in text
    assert "training loss 2.5000 -> 0.5000" in text and "`learning_rate` | `0.0002`" in text


def test_model_card_without_metrics_has_no_model_index() -> None:
    card = build_model_card(CardInputs(base_model="org/base", datasets=[]))
    meta = yaml.safe_load(str(card).split("---\n")[1])
    assert meta["base_model"] == "org/base"
    assert "model-index" not in meta and "datasets" not in meta


# --------------------------------------------------------------------------- push


@pytest.fixture
def trained_folder(tiny_base: Path, tmp_path: Path) -> Path:
    """An adapter folder as training leaves it: adapter, args, state, loss plot."""
    folder = tmp_path / "run"
    _make_adapter(tiny_base, folder, **ADAPTER_CASES["lora"])
    command = ["python", "-m", "qeu_space.train", "--task", "qa", "--out", "run"]
    (folder / "training_args.json").write_text(
        json.dumps({"task": "qa", "rank": 4, "command": command})
    )
    (folder / "trainer_state.json").write_text(
        json.dumps({"global_step": 7, "epoch": 1.0, "log_history": [{"loss": 1.0}]})
    )
    (folder / "loss_history.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "checkpoints" / "checkpoint-7").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-7" / "optimizer.pt").write_bytes(b"local only")
    return folder


def test_write_model_card_reads_the_folder(trained_folder: Path, tmp_path: Path) -> None:
    json_path, _ = write_report(_report(), tmp_path / "eval.json")
    summary = inspect_adapter(trained_folder)
    options = PushOptions(
        trained_folder,
        "me/qeu-qa-lora",
        datasets=["me/qeu"],
        metrics=json_path,
        base_model="org/tiny-llama",
    )
    card = ModelCard.load(write_model_card(options, summary))
    assert card.data.base_model == "org/tiny-llama"
    assert card.data.datasets == ["me/qeu"]
    assert "python -m qeu_space.train --task qa --out run" in card.text
    assert "![training and validation loss](loss_history.png)" in card.text
    assert "Trained for 7 optimizer steps, 1.00 epochs" in card.text
    assert f"adapter parameters | {summary.trainable_params:,}" in card.text
    # a second write without --dataset keeps the datasets the card already names
    again = PushOptions(trained_folder, "me/qeu-qa-lora", base_model="org/tiny-llama")
    assert ModelCard.load(write_model_card(again, summary)).data.datasets == ["me/qeu"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_push_over_the_hub_standin(
    hub_standin: HubStandin, trained_folder: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("HF_TOKEN", hub_standin.token)
    before = _snapshot(trained_folder)
    json_path, _ = write_report(_report(), tmp_path / "eval.json")
    argv = ["push", str(trained_folder), "--push-to", "me/qeu-qa-lora", "--dataset", "me/qeu"]
    argv += ["--metrics", str(json_path), "--base-model", "org/tiny-llama", "--private"]
    assert adapters.main(argv) == 0
    out = capsys.readouterr()
    assert hub_standin.token not in out.out + out.err
    assert _snapshot(trained_folder) == before  # the push never rewrites the source folder
    repo = hub_standin.repo_path("me/qeu-qa-lora", "model")
    pushed = {p.name for p in repo.iterdir()}
    assert pushed == {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "loss_history.png",
        "training_args.json",
        "trainer_state.json",
    }  # checkpoints/ stays local; a Llama base ships no view (no processing_qeu.py)
    config = json.loads((repo / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "org/tiny-llama"  # was the local base folder
    text = (repo / "README.md").read_text()
    meta = front_matter(text)
    assert meta["base_model"] == "org/tiny-llama" and meta["datasets"] == ["me/qeu"]
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "peft"
    assert meta["pipeline_tag"] == "image-text-to-text" and "qeu-inspection-space" in meta["tags"]
    assert hub_problems(meta) == [] and card_problems(text) == []
    f1 = next(
        m for r in meta["model-index"][0]["results"] for m in r["metrics"] if m["name"] == "F1"
    )
    low, high = f1["args"]["ci95"]
    assert low <= f1["value"] <= high
    assert "commit" in hub_standin.routes()
    assert "validate_yaml" in hub_standin.routes()  # the stand-in ran the Hub's metadata check


@pytest.mark.parametrize(
    ("recorded", "argv_extra", "message"),
    [
        ("models/tiny-base", [], "the local folder"),  # relative, found from the adapter's parents
        ("/abs/tiny-base", [], "a file-system path"),
        ("org/tiny-llama", ["--base-model", "./tiny-base"], "a file-system path"),
        ("org/tiny-llama", ["--dataset", "data/qa/train"], "more than one '/'"),
        ("org/tiny-llama", ["--dataset", "/data/qa"], "a file-system path"),
    ],
)
def test_push_refuses_local_paths_whatever_the_current_folder(
    recorded, argv_extra, message, trained_folder: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The adapter lives in ``repo/runs/x`` and records ``models/tiny-base`` (the layout of the
    embedded models); the push runs from an unrelated folder and must still refuse it."""
    repo = tmp_path / "repo"
    adapter = repo / "runs" / "x"
    shutil.copytree(trained_folder, adapter)
    (repo / "models" / "tiny-base").mkdir(parents=True)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = recorded
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HF_TOKEN", "hf_unused")
    before = _snapshot(adapter)
    assert adapters.main(["push", str(adapter), "--to", "me/x", *argv_extra]) == 2
    assert message in capsys.readouterr().err
    assert _snapshot(adapter) == before


def test_prepare_push_ships_the_view_and_the_hub_base(tmp_path: Path, monkeypatch) -> None:
    """The embedded adapter, staged: Hub base in its config, the processor, a card that opens
    with the notice and shows the transformers-only snippet; the source folder untouched."""
    from qeu_space.hub.adapters import prepare_push
    from qeu_space.hub.model_card import VIEW_NOTICE

    models = Path(__file__).resolve().parents[1] / "models"
    monkeypatch.chdir(tmp_path)  # the recorded models/inspection-vlm-base is found from the folder
    before = _snapshot(models / "inspection-vlm-lora")
    stage = tmp_path / "stage"
    stage.mkdir()
    options = PushOptions(
        models / "inspection-vlm-lora",
        "me/lora",
        datasets=["me/qeu-connectors-qa-latched"],
        base_model="me/inspection-vlm-base",
    )
    staged = prepare_push(options, stage)
    assert staged["ships_processor"] and staged["base_model"] == "me/inspection-vlm-base"
    config = json.loads((stage / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "me/inspection-vlm-base"
    assert (stage / "processing_qeu.py").is_file()
    text = (stage / "README.md").read_text()
    body = text.split("---\n", 2)[2]
    assert body.lstrip().split("\n\n")[1] == VIEW_NOTICE  # right under the title
    assert 'PeftModel.from_pretrained(model, "me/lora")' in body
    assert "trust_remote_code=True" in body and "custom_code" in front_matter(text)["tags"]
    assert _snapshot(models / "inspection-vlm-lora") == before


def test_push_without_token_fails_before_any_work(
    trained_folder: Path, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("qeu_space.hub.upload.get_token", lambda: None)
    card_before = (trained_folder / "README.md").read_text()  # PEFT's own placeholder card
    argv = ["push", str(trained_folder), "--push-to", "me/x", "--base-model", "org/tiny-llama"]
    assert adapters.main(argv) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    assert (trained_folder / "README.md").read_text() == card_before


def test_push_refuses_a_local_base_as_card_base_model(
    trained_folder: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_unused")
    card_before = (trained_folder / "README.md").read_text()
    assert adapters.main(["push", str(trained_folder), "--push-to", "me/x"]) == 2
    assert "pass --base-model OWNER/NAME" in capsys.readouterr().err
    assert (trained_folder / "README.md").read_text() == card_before
