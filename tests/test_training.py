"""Training on tiny random-weight Florence-2 / Idefics3 with datasets built by ``dataset_tools``.

Each family trains once per module (2 epochs of 2 steps, validation by generation each epoch);
the tests then read what that run left: a lower loss, an adapter that reloads to the same
generations, a base that answers differently, the history and the best checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel

from dataset_tools.builders import BuildConfig
from dataset_tools.save import build_to_folder
from qeu_space.hub.upload import MissingTokenError
from qeu_space.modeling.families import FAMILIES
from qeu_space.modeling.loading import LoadedModel, RemoteCodeError, load_model
from qeu_space.modeling.tiny_models import make_tiny_florence2, make_tiny_idefics3
from qeu_space.train import main
from qeu_space.training import AdapterOptions, DatasetError, TrainConfig, train
from qeu_space.training.run import _trainable
from tests import hub_standin as standin

hub_standin = standin.hub_standin  # the Hub stand-in fixture, requested by name below

REPO = Path(__file__).resolve().parents[1]
BUILDERS = {"florence2": make_tiny_florence2, "chat_vlm": make_tiny_idefics3}
TASK = {"florence2": "od", "chat_vlm": "qa"}
NAMES = [n for n in FAMILIES if n != "vit"]  # the ViT classifier: tests/test_vit.py


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: BUILDERS[name](root / name) for name in NAMES}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``python -m dataset_tools build`` folders (parquet + card): 8 train, 4 validation rows."""
    root = tmp_path_factory.mktemp("data")
    for task in ("qa", "od"):
        cfg = BuildConfig(task, num=8, seed=3, size=224, eval_fraction=0.5)
        build_to_folder(cfg, root / task, command="test")
    return {name: root / TASK[name] for name in NAMES}


def _config(name: str, tiny, data, out: Path, **overrides) -> TrainConfig:
    settings = {
        "adapter": AdapterOptions(rank=8, alpha=16, dropout=0.0, scope="all"),
        "epochs": 2,
        "batch_size": 4,
        "learning_rate": 3e-2,
        "warmup_ratio": 0.0,
        "eval_samples": 2,
        "max_new_tokens": 12,
        "seed": 0,
    }
    settings.update(overrides)
    return TrainConfig(TASK[name], str(tiny[name]), str(data[name]), str(out), **settings)


@pytest.fixture(scope="module")
def runs(tiny, data, tmp_path_factory):
    """One training run per family, made on first use and shared by the tests."""
    done = {}

    def get(name: str):
        if name not in done:
            out = tmp_path_factory.mktemp("runs") / name
            done[name] = train(_config(name, tiny, data, out))
        return done[name]

    return get


def _rows(data: Path, n: int = 4) -> list[dict]:
    from datasets import load_dataset

    return list(load_dataset(str(data), split="train").select(range(n)))


def _loss(loaded: LoadedModel, batch) -> float:
    loaded.model.eval()
    with torch.no_grad():
        return float(loaded.model(**batch).loss)


# --------------------------------------------------------------------------- one run per family


@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_the_loss_on_the_same_batch(name, tiny, data, runs):
    result = runs(name)
    loaded = load_model(tiny[name], result.out, device="cpu")
    batch = FAMILIES[name].collate(loaded.processor, _rows(data[name]))
    with loaded.base_only():
        before = _loss(loaded, batch)
    after = _loss(loaded, batch)
    assert after < before - 0.05, (before, after)


@pytest.mark.parametrize("name", NAMES)
def test_saved_adapter_reloads_to_identical_generations(name, tiny, data, runs):
    result = runs(name)
    family = FAMILIES[name]
    images = [r["image"] for r in _rows(data[name], 3)]
    in_memory = LoadedModel(result.model, load_model(tiny[name], device="cpu").processor,
                            name, str(tiny[name]), None, "cpu")  # fmt: skip
    reloaded = load_model(tiny[name], result.out, device="cpu")
    assert isinstance(reloaded.model, PeftModel)
    # unconstrained: in 12 tokens the answer grammar could leave base and adapter one answer
    free = {"max_new_tokens": 12, "grammar": False}
    tuned = family.generate(reloaded, images, **free)
    assert family.generate(in_memory, images, **free) == tuned
    with reloaded.base_only():
        base = family.generate(reloaded, images, **free)
    assert base != tuned


@pytest.mark.parametrize("name", NAMES)
def test_run_leaves_adapter_history_and_best_checkpoint(name, tiny, runs):
    result = runs(name)
    out = result.out
    metric = f"eval_{FAMILIES[name].BEST_METRIC}"
    assert result.global_step == 4
    history = json.loads((out / "loss_history.json").read_text())
    assert [p["step"] for p in history["train"]] == [1, 2, 3, 4]
    assert [(p["epoch"], p["step"]) for p in history["eval"]] == [(1, 2), (2, 4)]
    assert all(metric in p and "eval_loss" in p for p in history["eval"])
    assert history["best_metric"] == metric
    assert Path(history["best_checkpoint"]).name in ("checkpoint-2", "checkpoint-4")
    assert (out / "loss_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny[name]) and adapter["r"] == 8
    args = json.loads((out / "training_args.json").read_text())
    assert (args["task"], args["scope"], args["learning_rate"]) == (TASK[name], "all", 3e-2)
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    assert (out / "adapter_model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "training_args.bin").exists()


# --------------------------------------------------------------------------- other runs


def test_resume_from_checkpoint_continues_the_step_count(tiny, data, tmp_path):
    out = tmp_path / "resumed"
    first = train(_config("florence2", tiny, data, out, max_steps=2, eval_steps=2))
    assert first.global_step == 2 and (out / "checkpoints" / "checkpoint-2").is_dir()
    again = _config(
        "florence2", tiny, data, out, max_steps=4, eval_steps=2, resume_from_checkpoint="latest"
    )
    result = train(again)
    assert result.global_step == 4
    assert [p["step"] for p in result.history.train] == [1, 2, 3, 4]
    assert [p["step"] for p in result.history.eval] == [2, 4]


def test_full_finetune_saves_a_model_that_loads_as_a_base(tiny, data, tmp_path):
    out = tmp_path / "full"
    options = AdapterOptions(full_finetune=True)
    result = train(_config("florence2", tiny, data, out, adapter=options, max_steps=1))
    assert not isinstance(result.model, PeftModel)
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    loaded = load_model(out, device="cpu")
    original = load_model(tiny["florence2"], device="cpu")
    changed = [
        name
        for (name, p), q in zip(
            loaded.model.named_parameters(), original.model.parameters(), strict=True
        )
        if not torch.equal(p, q)
    ]
    assert any("vision_tower" in n for n in changed) and any("language_model" in n for n in changed)


def test_freeze_vision_trains_all_but_the_vision_tower(tiny, data, tmp_path):
    """The staging of the shipped OD model: a pre-trained tower stays as it is while the
    projector and the language model learn to read it."""
    out = tmp_path / "frozen"
    options = AdapterOptions(full_finetune=True, freeze_vision=True)
    train(_config("florence2", tiny, data, out, adapter=options, max_steps=1))
    loaded = load_model(out, device="cpu").model.state_dict()
    original = load_model(tiny["florence2"], device="cpu").model.state_dict()
    changed = {name for name, p in loaded.items() if not torch.equal(p, original[name])}
    assert not any(".vision_tower." in n for n in changed)
    assert any("language_model" in n for n in changed)
    assert any("multi_modal_projector" in n for n in changed)
    with pytest.raises(ValueError, match="--freeze-vision needs --full-finetune"):
        AdapterOptions(freeze_vision=True)


@pytest.mark.parametrize(
    ("options", "check"),
    [
        (AdapterOptions(dora=True), lambda m: any("lora_magnitude_vector" in n for n in m)),
        (
            AdapterOptions(modules_to_save=("image_proj_norm",)),
            lambda m: any("image_proj_norm.modules_to_save" in n for n in m),
        ),
        (AdapterOptions(full_finetune=True), lambda m: all("lora" not in n for n in m)),
        (AdapterOptions(scope="vision"), lambda m: all("language_model" not in n for n in m)),
    ],
)
def test_adapter_options_reach_peft(options, check, tiny):
    config = TrainConfig("od", str(tiny["florence2"]), "unused", "unused", adapter=options)
    model = _trainable(
        load_model(tiny["florence2"], device="cpu").model, config, FAMILIES["florence2"]
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and check(trainable)
    total = sum(p.numel() for p in model.parameters())
    share = sum(p.numel() for p in model.parameters() if p.requires_grad) / total
    assert (share == 1.0) is options.full_finetune


# --------------------------------------------------------------------------- refusals


def _without_column(data: Path, column: str, tmp: Path) -> Path:
    from datasets import load_dataset

    dd = load_dataset(str(data))
    dd.remove_columns(column).save_to_disk(tmp / "broken")
    return tmp / "broken"


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("od_on_chat_vlm", ValueError, "--task od does not fit"),
        ("missing_column", DatasetError, "lacks the column\\(s\\) bbox_str"),
        ("no_dataset", DatasetError, "dataset folder .* does not exist"),
        ("bf16_on_cpu", ValueError, "--bf16 need a CUDA GPU"),
        ("push_without_token", MissingTokenError, "no Hugging Face token"),
        ("remote_code", RemoteCodeError, "--trust-remote-code"),
    ],
)
def test_bad_runs_fail_before_training(case, error, message, tiny, data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    config = _config("florence2", tiny, data, out)
    if case == "od_on_chat_vlm":
        config = TrainConfig("od", str(tiny["chat_vlm"]), str(data["florence2"]), str(out))
    elif case == "missing_column":
        config = _config("florence2", tiny, {"florence2": _without_column(
            data["florence2"], "bbox_str", tmp_path)}, out)  # fmt: skip
    elif case == "no_dataset":
        config = _config("florence2", tiny, {"florence2": tmp_path / "none"}, out)
    elif case == "bf16_on_cpu":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        config = _config("florence2", tiny, data, out, bf16=True)
    elif case == "push_without_token":
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setattr("qeu_space.hub.upload.get_token", lambda: None)
        config = _config("florence2", tiny, data, out, push_to="me/od-adapter")
    elif case == "remote_code":
        remote = tmp_path / "remote"
        remote.mkdir()
        cfg = json.loads((tiny["florence2"] / "config.json").read_text())
        cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.X"}
        (remote / "config.json").write_text(json.dumps(cfg))
        config = TrainConfig("od", str(remote), str(data["florence2"]), str(out))
    with pytest.raises(error, match=message):
        train(config)
    assert not out.exists()  # nothing was trained or written


def test_a_new_run_refuses_a_folder_holding_another_runs_checkpoints(tiny, data, tmp_path):
    out = tmp_path / "used"
    (out / "checkpoints" / "checkpoint-7").mkdir(parents=True)
    with pytest.raises(ValueError, match="already holds a run"):
        train(_config("florence2", tiny, data, out))
    assert sorted(p.name for p in out.rglob("*")) == ["checkpoint-7", "checkpoints"]


# --------------------------------------------------------------------------- CLI


def test_cli_error_is_one_line_with_exit_code_2(tiny, data, tmp_path, capsys):
    code = main(["--task", "qa", "--base", str(tiny["florence2"]), "--dataset",
                 str(data["chat_vlm"]), "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("python -m qeu_space.train: error: --task qa does not fit")


def test_cli_trains_and_pushes_the_adapter_without_checkpoints(
    tiny, data, tmp_path, hub_standin, monkeypatch
):
    out = tmp_path / "pushed"
    argv = ["--task", "qa", "--base", str(tiny["chat_vlm"]), "--dataset", str(data["chat_vlm"]),
            "--out", str(out), "--max-steps", "2", "--eval-steps", "2", "--eval-samples", "1",
            "--rank", "4", "--scope", "language", "--dora", "--push-to", "me/qa-dora",
            "--base-model", "me/tiny-chat-vlm"]  # fmt: skip
    monkeypatch.setenv("HF_TOKEN", hub_standin.token)
    assert main(argv[:-2]) == 2  # a local --base without its Hub id: refused before training
    assert not (out / "adapter_model.safetensors").exists()
    assert main(argv) == 0
    repo = hub_standin.repo_path("me/qa-dora")
    pushed = {p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()}
    assert {"adapter_config.json", "adapter_model.safetensors", "loss_history.png"} <= pushed
    card = (repo / "README.md").read_text()
    assert "## Training" in card and "loss_history.png" in card  # helper 4b's model card
    assert not any(p.startswith("checkpoints") for p in pushed)
    pushed_config = json.loads((repo / "adapter_config.json").read_text())
    assert pushed_config["use_dora"] is True
    assert pushed_config["base_model_name_or_path"] == "me/tiny-chat-vlm"
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tiny["chat_vlm"]
    )  # the output folder keeps what training wrote
    assert "processing_qeu.py" in pushed  # an Idefics3 model ships its view
    assert (
        "base_model: me/tiny-chat-vlm" in card and str(data["chat_vlm"]) not in card.split("---")[1]
    )
    args = json.loads((out / "training_args.json").read_text())
    assert args["command"][:3] == ["python", "-m", "qeu_space.train"] and args["use_dora"]


@pytest.mark.slow
def test_accelerate_launch_trains_with_two_cpu_processes(tiny, data, tmp_path):
    """Two gloo processes (accelerate starts them with torchrun) share the batches and metric."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "0", "-m", "qeu_space.train", "--task", "qa", "--base",
           str(tiny["chat_vlm"]), "--dataset", str(data["chat_vlm"]), "--out", str(out),
           "--max-steps", "2", "--eval-steps", "2", "--eval-samples", "2",
           "--batch-size", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    state = json.loads((out / "trainer_state.json").read_text())
    # 2 processes x batch 2 x 2 steps = all 8 train rows: one epoch (one process: half).
    assert state["global_step"] == 2 and state["epoch"] == pytest.approx(1.0)
    assert done.stdout.count("trained 2 steps") == 1  # the summary comes from rank 0 only
    assert (out / "adapter_model.safetensors").is_file()


def test_new_words_train_their_token_rows_and_reload(tiny, tmp_path):
    """--new-words short: rows of short's tokens learn from rows that write it (PEFT trainable
    tokens), every other row stays the base's, and load_model reloads them from the adapter."""
    from qeu_space.training.run import word_token_ids

    kinds = ("bent", "missing", "short")
    cfg = BuildConfig("qa", num=8, seed=3, size=224, eval_fraction=0.5, kinds=kinds)
    build_to_folder(cfg, tmp_path / "qa-short", command="test")
    options = AdapterOptions(rank=8, alpha=16, dropout=0.0, scope="all", new_words=("short",))
    config = _config("chat_vlm", tiny, {"chat_vlm": tmp_path / "qa-short"}, tmp_path / "new",
                     adapter=options, max_steps=2)  # fmt: skip
    result = train(config)
    assert json.loads((result.out / "training_args.json").read_text())["new_words"] == ["short"]
    base = load_model(tiny["chat_vlm"], device="cpu")
    ids = torch.tensor(word_token_ids(base.processor, ("short",)))
    rows = torch.arange(base.model.get_input_embeddings().weight.shape[0])
    before = base.model.get_input_embeddings().weight.detach().clone()
    tuned = load_model(tiny["chat_vlm"], result.out, device="cpu")
    embed = tuned.model.get_input_embeddings()
    changed = ((embed(rows).detach() - before).abs().sum(dim=1) > 0).nonzero().flatten()
    assert len(changed) > 0 and set(changed.tolist()) <= set(ids.tolist())
    with tuned.base_only():  # the base's own rows, as the Space's base lane reads them
        assert torch.equal(embed(rows).detach(), before)


def test_rows_the_registration_refuses_are_left_out_with_one_line(capsys):
    import datasets
    from PIL import Image

    from dataset_tools.compose import SampleSpec, make_sample
    from qeu_space.modeling.families import chat_vlm
    from qeu_space.training.data import DatasetError, keep_registered

    sample = make_sample(SampleSpec("t", "standard", "square", (), True), np.random.default_rng(0))
    flat = Image.new("RGB", sample.image.size, (128, 128, 128))
    rows = datasets.Dataset.from_dict({"image": [sample.image, flat, sample.image]})
    rows = rows.cast_column("image", datasets.Image())
    kept = keep_registered(rows, chat_vlm.view, None, name="train")
    assert len(kept) == 2
    assert "left out 1 of 3 train rows" in capsys.readouterr().out
    with pytest.raises(DatasetError, match="no train row registers"):
        keep_registered(rows.select([1]), chat_vlm.view, None, name="train")
