"""Every popular chat VLM family, as a tiny model built from its config, on the full path.

Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM2, PaliGemma (as released: no chat template), LLaVA-1.5,
LLaVA-OneVision and Gemma 3 each train a LoRA (2 steps), evaluate (base and adapter) and answer
as the Space asks them (:func:`qeu_space.ui.models.load_models` + the chat VLM's ``generate``),
without torchvision (their processors load without the video part). Then each family's own
training rules: PaliGemma's prefix/suffix (no answer leak), an end-of-turn token learned where
the template writes none, and scopes that name every linear layer they adapt or leave out.
"""

from __future__ import annotations

import copy
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from dataset_tools.builders import BuildConfig
from dataset_tools.save import build_to_folder
from qeu_space.evaluation.evaluate import evaluate, load_split
from qeu_space.modeling.devices import detect_device
from qeu_space.modeling.families import chat_vlm, family_for
from qeu_space.modeling.loading import load_model
from qeu_space.modeling.processors import (
    MissingDependencyError,
    image_only_class,
    load_image_only,
    missing_dependency,
)
from qeu_space.modeling.tiny_families import TINY_FAMILIES
from qeu_space.training import AdapterOptions, TrainConfig, train
from qeu_space.ui.models import MODELS, answer_with_vlm, load_models, use_models
from qeu_space.ui.settings import AppSettings

NAMES = list(TINY_FAMILIES)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: build(root / name) for name, build in TINY_FAMILIES.items()}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "qa"
    build_to_folder(
        BuildConfig("qa", num=4, seed=3, size=224, eval_fraction=0.5), root, command="test"
    )
    return root


@pytest.fixture(scope="module")
def rows(data: Path) -> list[dict]:
    return list(load_split(str(data), "qa", "train"))


def test_torchvision_is_not_installed_here():
    """The point of these tests: the families with a video part load without torchvision."""
    with pytest.raises(ImportError):
        import torchvision  # noqa: F401


@pytest.mark.parametrize("name", NAMES)
def test_family_trains_evaluates_and_serves(name, tiny, data, tmp_path):
    base = str(tiny[name])
    loaded = load_model(base, device="cpu")
    assert loaded.family == "chat_vlm" and family_for(loaded.model) is chat_vlm
    adapter = AdapterOptions(rank=4, alpha=8, dropout=0.0, scope="all")
    config = TrainConfig("qa", base, str(data), str(tmp_path / "lora"), adapter=adapter,
                         max_steps=2, batch_size=2, eval_batch_size=2, eval_samples=1,
                         max_new_tokens=4, learning_rate=1e-2, progress=False)  # fmt: skip
    result = train(config)
    assert result.global_step == 2 and (result.out / "adapter_model.safetensors").is_file()
    tuned = load_model(base, result.out, device="cpu")
    test = load_split(str(data), "qa", "validation")
    report = evaluate(tuned, test, task="qa", max_new_tokens=4, batch_size=2, progress=False)
    assert [run.name for run in report.runs] == ["base", "adapter"]
    assert all(len(run.predictions) == len(test) for run in report.runs)
    # The Space: its model slots load base + adapter, and it answers with and without it.
    settings = AppSettings.from_env(
        {"QEU_BASE_MODEL": base, "QEU_ADAPTERS": f"tuned={result.out}", "QEU_VIT_MODEL": "",
         "QEU_OD_MODEL": ""}
    )  # fmt: skip
    models = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
    assert models.vlm.available and models.vlm.has_adapter, models.vlm.reason
    with space_models(models):
        for adapter in ("tuned", None):
            answer = answer_with_vlm(test[0]["image"], adapter=adapter, max_new_tokens=4)
            assert isinstance(answer.text, str)


@contextmanager
def space_models(models):
    """The Space's process-wide models set to ``models``, and put back afterwards."""
    before = (MODELS.vlm, MODELS.vit, MODELS.od, MODELS.device)
    use_models(models)
    try:
        yield
    finally:
        MODELS.vlm, MODELS.vit, MODELS.od, MODELS.device = before


# --------------------------------------------------------------------------- own training rules


@pytest.fixture(scope="module")
def loaded(tiny) -> dict:
    return {name: load_model(tiny[name], device="cpu") for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_labels_are_the_answer_and_end_with_a_stop_token(name, loaded, rows):
    """Every family's target ends with a token generation stops on (LLaVA-1.5's template
    writes none after the answer: the collator adds ``</s>``)."""
    lm = loaded[name]
    tok = lm.processor.tokenizer
    batch = chat_vlm.collate(lm.processor, rows[:2])
    stop = lm.model.generation_config.eos_token_id
    stop = set(stop if isinstance(stop, list) else [stop])
    for i, row in enumerate(rows[:2]):
        learned = [t for t in batch["labels"][i].tolist() if t != -100]
        assert learned[-1] in stop, tok.convert_ids_to_tokens(learned[-2:])
        assert tok.decode(learned, skip_special_tokens=True).strip() == row["answer"]


def test_llava_target_gets_the_eos_its_template_leaves_out(loaded):
    processor = loaded["llava"].processor
    _, target = chat_vlm.prompt_and_target(processor, "Q?", "Passed. No defects found.")
    ids = processor.tokenizer(target, add_special_tokens=False)["input_ids"]
    assert ids[-1] != processor.tokenizer.eos_token_id
    assert chat_vlm.ended(processor.tokenizer, ids) == [*ids, processor.tokenizer.eos_token_id]


def test_paligemma_is_prompted_natively_and_trained_through_its_suffix(loaded, rows):
    lm = loaded["paligemma"]
    assert not chat_vlm.has_chat_template(lm.processor)
    assert chat_vlm.generation_prompt(lm.processor, "Q?") == "<image>Q?"
    batch = chat_vlm.collate(lm.processor, rows[:2])
    types, labels = batch["token_type_ids"], batch["labels"]
    for i in range(2):
        answer = (types[i] == 1) & (batch["attention_mask"][i] == 1)
        assert answer.any()
        assert (labels[i][answer] == batch["input_ids"][i][answer]).all()
        assert (labels[i][~answer] == -100).all()
        assert batch["input_ids"][i][answer][-1] == lm.processor.tokenizer.eos_token_id


def test_paligemma_answer_tokens_never_see_later_ones(loaded, rows):
    """Change the last answer token: the logits at every earlier answer position stay."""
    lm = loaded["paligemma"]
    batch = chat_vlm.collate(lm.processor, rows[:1])
    positions = (batch["token_type_ids"][0] == 1).nonzero().flatten().tolist()
    assert len(positions) >= 3
    changed = {k: v.clone() for k, v in batch.items()}
    last = positions[-1]
    changed["input_ids"][0, last] = (
        batch["input_ids"][0, last] + 7
    ) % lm.model.config.text_config.vocab_size
    with torch.no_grad():
        a = lm.model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        b = lm.model(**{k: v for k, v in changed.items() if k != "labels"}).logits
    earlier = positions[:-1]
    assert torch.allclose(a[0, earlier], b[0, earlier], atol=1e-6)
    assert not torch.allclose(a[0, last], b[0, last])


# --------------------------------------------------------------------------- scopes


def _linear(model: torch.nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("name", [*NAMES, "idefics3"])
def test_scopes_adapt_every_linear_layer_of_their_part(name, loaded, tmp_path):
    if name == "idefics3":
        from qeu_space.modeling.tiny_models import make_tiny_idefics3

        model = load_model(make_tiny_idefics3(tmp_path / "i3"), device="cpu").model
    else:
        model = loaded[name].model
    linear = _linear(model)
    vision_part = {n for n in linear if chat_vlm.part_of(n) in ("vision", "projector")}
    language, left_lang = chat_vlm.scope_targets(model, "language")
    vision, left_vision = chat_vlm.scope_targets(model, "vision")
    every, left = chat_vlm.scope_targets(model, "all")
    assert set(vision) == vision_part and vision_part
    assert any(re.search(r"(mlp|fc\d|linear|proj)", n) for n in vision)
    assert not set(language) & set(vision) and set(every) == set(language) | set(vision)
    assert set(every) | {n for n in left if n in linear} == linear  # nothing silently missed
    assert all(re.search(r"lm_head$", n) for n in left if n in linear)
    for scope, names in (("language", language), ("vision", vision), ("all", every)):
        regex = chat_vlm.targets_regex(model, names)
        wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=regex))
        assert set(wrapped.targeted_module_names) == set(names), scope
    if name == "gemma3":  # its projector is a bare weight: listed, not silently skipped
        assert any("multi_modal_projector" in n for n in left)


def test_qwen2_5_vision_mlp_and_paligemma_projector_are_in_the_vision_scope(loaded):
    """The two gaps the issue found: Qwen2.5-VL's vision MLP, PaliGemma's projector."""
    qwen, _ = chat_vlm.scope_targets(loaded["qwen2_5_vl"].model, "vision")
    assert any(re.search(r"visual\.blocks\.\d+\.mlp\.(gate|up|down)_proj$", n) for n in qwen)
    pali, _ = chat_vlm.scope_targets(loaded["paligemma"].model, "all")
    assert "model.multi_modal_projector.linear" in pali


def test_training_prints_what_the_scope_adapts(tiny, data, tmp_path, capsys):
    config = TrainConfig("qa", str(tiny["qwen2_5_vl"]), str(data), str(tmp_path / "o"),
                         adapter=AdapterOptions(rank=2, scope="vision"), max_steps=1,
                         eval_samples=0, progress=False)  # fmt: skip
    train(config)
    err = capsys.readouterr().err
    assert "--scope vision adapts:" in err and "vision:" in err and "mlp" in err


# --------------------------------------------------------------------------- missing packages


def test_missing_package_is_one_line_with_its_install_command():
    err = missing_dependency(
        ImportError("Qwen2VLVideoProcessor requires the Torchvision library but it was not found"),
        "the processor of Qwen/Qwen2-VL-2B-Instruct",
    )
    assert isinstance(err, MissingDependencyError) and isinstance(err, ValueError)
    assert "\n" not in str(err) and "torchvision" in str(err) and "pip install" in str(err)
    num = missing_dependency(ImportError("Package `num2words` is required"), "SmolVLM2")
    assert "num2words==" in str(num)
    assert missing_dependency(ImportError("something else"), "x") is None


def test_a_missing_package_of_the_image_path_is_named(tiny, monkeypatch):
    import transformers.models.smolvlm.processing_smolvlm as smolvlm

    monkeypatch.setattr(smolvlm, "num2words", None)
    with pytest.raises(MissingDependencyError, match="num2words.*pip install num2words"):
        load_image_only(tiny["smolvlm"], ImportError("requires the Torchvision library"))


def test_image_only_processor_keeps_the_class_name_and_parts():
    from transformers import LlavaOnevisionProcessor, Qwen2VLProcessor, SmolVLMProcessor

    for cls in (Qwen2VLProcessor, SmolVLMProcessor, LlavaOnevisionProcessor):
        plain = image_only_class(cls)
        assert plain.__name__ == cls.__name__ and issubclass(plain, cls)
        assert plain.get_attributes() == ["image_processor", "tokenizer"]


def test_missing_package_reaches_the_space_and_the_cli_in_one_line(tiny, data, tmp_path, capsys,
                                                                   monkeypatch):  # fmt: skip
    import transformers.models.smolvlm.processing_smolvlm as smolvlm

    from qeu_space.train import main

    monkeypatch.setattr(smolvlm, "num2words", None)
    settings = AppSettings.from_env(
        {"QEU_BASE_MODEL": str(tiny["smolvlm"]), "QEU_ADAPTERS": "none", "QEU_VIT_MODEL": "",
         "QEU_OD_MODEL": ""}
    )  # fmt: skip
    models = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
    assert not models.vlm.available
    assert models.vlm.reason.endswith(
        "needs the package num2words: pip install num2words==0.5.14 (in requirements.txt))"
    ), models.vlm.reason
    capsys.readouterr()
    code = main(["--task", "qa", "--base", str(tiny["smolvlm"]), "--dataset", str(data),
                 "--out", str(tmp_path / "o"), "--max-steps", "1", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "needs the package num2words: pip install num2words==0.5.14" in err


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl", "paligemma", "llava", "gemma3"])
def test_freeze_vision_finds_the_tower_and_keeps_the_projector(name, loaded):
    from qeu_space.training.run import VISION_TOWER

    names = [n for n, _ in loaded[name].model.named_parameters()]
    tower = [n for n in names if VISION_TOWER.search(n)]
    assert tower and all(chat_vlm.part_of(n) == "vision" for n in tower)
    assert not any(chat_vlm.part_of(n) == "projector" for n in tower)


@pytest.mark.parametrize("name", NAMES)
def test_name_only_scope_rule_agrees_with_the_model(name, loaded):
    """``lora_target_modules`` (no model at hand: benchmarks, old adapters) takes what the
    model-resolved scope takes, vision MLPs and projectors included."""
    model = loaded[name].model
    for scope in ("vision", "all"):
        names, _ = chat_vlm.scope_targets(model, scope)
        regex = chat_vlm.lora_target_modules(scope)
        matched = {n for n, _ in model.named_modules() if re.fullmatch(regex, n)}
        assert matched == set(names), scope


def test_a_model_without_a_chat_template_gets_its_native_prompt(loaded, rows):
    """LLaVA with its template removed: ``<image>`` + question + newline, target + ``</s>``."""
    processor = copy.deepcopy(loaded["llava"].processor)
    processor.chat_template = None
    processor.tokenizer.chat_template = None
    assert not chat_vlm.has_chat_template(processor)
    assert chat_vlm.generation_prompt(processor, "Q?") == "<image>Q?\n"
    batch = chat_vlm.collate(processor, rows[:2])
    tok = processor.tokenizer
    for i, row in enumerate(rows[:2]):
        learned = [t for t in batch["labels"][i].tolist() if t != -100]
        assert learned[-1] == tok.eos_token_id
        assert tok.decode(learned[:-1]) == row["answer"]
