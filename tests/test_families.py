"""Model families, the loading path and the tiny models, on tiny random-weight Florence-2/Idefics3.

Every table runs over :data:`qeu_space.modeling.families.FAMILIES`, so a new family is tested for
free once it has a tiny model builder below.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file

from dataset_tools.builders import BuildConfig, build_dataset
from qeu_space.geometry import CompositeLayout
from qeu_space.modeling.families import (
    FAMILIES,
    SCOPES,
    UnknownFamilyError,
    chat_vlm,
    family_for,
    florence2,
)
from qeu_space.modeling.loading import (
    AdapterMismatchError,
    LoadedModel,
    RemoteCodeError,
    UnsafeWeightsError,
    load_model,
    read_config,
    same_base,
)
from qeu_space.modeling.local_tokenizer import (
    END_OF_UTTERANCE,
    FLORENCE2_LOC_TOKENS,
    IDEFICS3_IMAGE_TOKENS,
    florence2_tokenizer,
    idefics3_tokenizer,
)
from qeu_space.modeling.tiny_models import make_tiny_florence2, make_tiny_idefics3
from qeu_space.vocabulary import (
    INSPECTION_QUESTION,
    DefectKind,
    Direction,
    Finding,
    Position,
    format_bbox_str,
    parse_bbox_str,
)

BUILDERS = {"florence2": make_tiny_florence2, "chat_vlm": make_tiny_idefics3}
TASK = {"florence2": "od", "chat_vlm": "qa"}
NAMES = [n for n in FAMILIES if n != "vit"]  # the ViT classifier: tests/test_vit.py


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread when the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: BUILDERS[name](root / name) for name in NAMES}


@pytest.fixture(scope="module")
def loaded(tiny: dict[str, Path]) -> dict[str, LoadedModel]:
    return {name: load_model(path, device="cpu") for name, path in tiny.items()}


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    """Rows from the real dataset builder (small composites), defective ones first."""
    out = {}
    for name in NAMES:
        ds = build_dataset(BuildConfig(TASK[name], num=6, seed=1, size=224))["train"]
        key = "bbox_str" if TASK[name] == "od" else "answer"
        out[name] = sorted(ds, key=lambda r, k=key: r[k].startswith("Passed") or not r[k])
    return out


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", NAMES)
def test_family_for_reads_models_configs_and_loaded_models(name, loaded):
    lm = loaded[name]
    module = FAMILIES[name]
    assert lm.family == name and module.NAME == name
    for obj in (lm, lm.model, lm.model.config, lm.model.config.to_dict()):
        assert family_for(obj) is module


def test_unknown_model_type_is_refused():
    with pytest.raises(UnknownFamilyError, match="'bert' is not a supported family"):
        family_for({"model_type": "bert"})


# --------------------------------------------------------------------------- LoRA scopes


def _linear_names(model: torch.nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def _peft_targets(model: torch.nn.Module, regex: str) -> set[str]:
    wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=regex))
    return set(wrapped.targeted_module_names)


@pytest.mark.parametrize("name", NAMES)
def test_scopes_split_the_linear_layers_between_towers(name, loaded):
    model = loaded[name].model
    module = FAMILIES[name]
    targets = {scope: _peft_targets(model, module.lora_target_modules(scope)) for scope in SCOPES}
    language, vision = targets["language"], targets["vision"]
    assert language and vision and not language & vision
    assert targets["all"] == language | vision == _linear_names(model) - {"lm_head"}
    assert all(re.search(r"language_model|text_model", n) for n in language)
    assert all(re.search(r"vision|connector|projector", n) for n in vision)


def test_florence2_fc_layers_go_to_their_own_tower(loaded):
    """fc1/fc2 exist in BART and in DaViT: each scope takes only its own."""
    model = loaded["florence2"].model
    language = _peft_targets(model, florence2.lora_target_modules("language"))
    vision = _peft_targets(model, florence2.lora_target_modules("vision"))
    assert {n for n in language if n.endswith(".fc1")} == {
        "model.language_model.encoder.layers.0.fc1",
        "model.language_model.decoder.layers.0.fc1",
    }
    assert sum(n.endswith(".fc1") for n in vision) == 8  # 4 stages x (spatial + channel block)
    assert "model.multi_modal_projector.image_projection" in vision


def test_unknown_scope_is_refused():
    with pytest.raises(ValueError, match="scope must be one of"):
        chat_vlm.lora_target_modules("decoder")


# --------------------------------------------------------------------------- label masks


def test_chat_vlm_labels_are_exactly_the_answer_tokens(loaded, rows):
    """Token by token: prompt text and image tokens and padding are -100, the answer is learned."""
    processor = loaded["chat_vlm"].processor
    tok = processor.tokenizer
    batch = chat_vlm.collate(processor, rows["chat_vlm"][:3])
    image_ids = set(tok.convert_tokens_to_ids(list(IDEFICS3_IMAGE_TOKENS)))
    for i, row in enumerate(rows["chat_vlm"][:3]):
        prompt, target = chat_vlm.prompt_and_target(processor, row["question"], row["answer"])
        alone = processor(text=[prompt], images=[[row["image"].convert("RGB")]])["input_ids"][0]
        answer = tok(target, add_special_tokens=False)["input_ids"]
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        mask = batch["attention_mask"][i].tolist()
        n, m = len(alone), len(answer)
        assert ids[:n] == list(alone) and ids[n : n + m] == answer
        assert sum(t in image_ids for t in ids[:n]) == processor.image_seq_len + 3
        for j, (token, label) in enumerate(zip(ids, labels, strict=True)):
            if j < n:  # prompt and image tokens
                assert label == -100 and mask[j] == 1
            elif j < n + m:  # the answer and the end-of-turn token
                assert label == token and mask[j] == 1
            else:  # padding
                assert label == -100 and mask[j] == 0 and token == tok.pad_token_id
        assert tok.decode(answer) == f" {row['answer']}{END_OF_UTTERANCE}"


@pytest.mark.parametrize("seed", range(6))
def test_florence2_targets_land_on_the_defective_pins_in_the_canonical_frame(seed):
    """A moved product's truth boxes, mapped to the canonical composite, sit on their pins."""
    import numpy as np

    from dataset_tools.compose import SampleSpec, make_sample

    defects = (
        Finding("U2", "bent pin", "left"),
        Finding("C9", "missing pin"),
        Finding("D1", "bent pin", "down"),
    )
    spec = SampleSpec("s", "ribbed", "round", defects, True)
    sample = make_sample(spec, np.random.default_rng(seed))
    raw = format_bbox_str(sample.findings, sample.image.size)
    view = florence2.view(sample.image)
    canonical = florence2.canonical_target(raw, view)
    assert florence2.parse(canonical, view.image.size) == [
        Finding(f.position, f.kind) for f in sorted(spec.findings, key=lambda f: f.sort_key)
    ]
    layout = CompositeLayout(448)
    truths = sorted(spec.findings, key=lambda f: f.sort_key)
    for (_, box), truth in zip(parse_bbox_str(canonical, (448, 448)), truths, strict=True):
        geo = layout.connector
        exact = layout.to_composite(geo.defect_box(truth.position, truth.kind, truth.direction))
        assert max(abs(a - b) for a, b in zip(box, exact, strict=True)) < 2.0  # quantisation


def test_florence2_labels_are_the_bbox_str_and_padding_is_masked(loaded, rows):
    """Encoder-decoder: image and prompt never enter the labels; only padding is -100.

    The labels are the row's ``bbox_str`` with its boxes in the canonical composite the model
    reads (each box through the test product's registration): same labels, same positions.
    """
    processor = loaded["florence2"].processor
    tok = processor.tokenizer
    sample = rows["florence2"][:3]
    batch = florence2.collate(processor, sample)
    image_id = tok.image_token_id
    for i, row in enumerate(sample):
        view = florence2.view(row["image"])
        canonical = florence2.canonical_target(row["bbox_str"], view)
        assert [label for label, _ in parse_bbox_str(canonical, view.image.size)] == [
            label for label, _ in parse_bbox_str(row["bbox_str"], row["image"].size)
        ]
        target = tok(canonical)["input_ids"]
        labels = batch["labels"][i].tolist()
        assert labels[: len(target)] == target
        assert all(label == -100 for label in labels[len(target) :])
        assert image_id not in labels
        ids = batch["input_ids"][i].tolist()
        assert ids.count(image_id) == processor.num_image_tokens
        assert tok.decode(ids[processor.num_image_tokens :], skip_special_tokens=True) == (
            "Locate the objects with category name in the image."
        )
    assert any(len(tok(r["bbox_str"])["input_ids"]) < batch["labels"].shape[1] for r in sample)


# --------------------------------------------------------------------------- generate / parse


@pytest.mark.parametrize("name", NAMES)
def test_generate_gives_one_reproducible_text_per_image(name, loaded, rows):
    images = [r["image"] for r in rows[name][:3]]
    first = FAMILIES[name].generate(loaded[name], images, max_new_tokens=6, batch_size=2)
    again = FAMILIES[name].generate(loaded[name], images, max_new_tokens=6)
    assert len(first) == 3 and all(isinstance(t, str) for t in first)
    assert first == again


def _box(layout: CompositeLayout, position: str, kind: DefectKind, direction=None):
    local = layout.connector.defect_box(Position.parse(position), kind, direction)
    return layout.to_composite(local, "test")


def test_florence2_parse_reads_bbox_str_back_to_findings(loaded):
    layout = CompositeLayout(448)
    truth = [
        Finding("U3", "bent pin", "left", _box(layout, "U3", DefectKind.BENT, Direction.LEFT)),
        Finding("C7", "missing pin", None, _box(layout, "C7", DefectKind.MISSING)),
    ]
    text = format_bbox_str(truth, (448, 448))
    reference_panel = layout.to_composite(layout.connector.pin_box(Position("D", 1)), "reference")
    junk = "scratch<loc_1><loc_1><loc_9><loc_9>" + format_bbox_str(
        [Finding("D1", "missing pin", None, reference_panel)], (448, 448)
    )
    found = florence2.parse(text + junk, (448, 448))
    assert [(f.position.name, f.kind) for f in found] == [
        ("U3", DefectKind.BENT),
        ("C7", DefectKind.MISSING),
    ]
    # Boxes are Florence-2's own dequantisation: what its processor reads from the same text.
    official = loaded["florence2"].processor.post_process_generation(
        text, task="<OD>", image_size=(448, 448)
    )["<OD>"]
    assert official["labels"] == ["bent pin", "missing pin"]
    for f, box in zip(found, official["bboxes"], strict=True):
        assert [int(v) for v in f.box] == [int(v) for v in box]
    with pytest.raises(ValueError, match="square"):
        florence2.parse(text, (448, 224))


def test_chat_vlm_parse_reads_answers():
    found = chat_vlm.parse("Defective. 2 defects: U3 bent pin (left); C7 missing pin.", (448, 448))
    assert found == [Finding("U3", "bent pin", "left"), Finding("C7", "missing pin")]
    assert chat_vlm.parse("Passed. No defects found.", (448, 448)) == []


# --------------------------------------------------------------------------- loading rules


def test_remote_code_is_refused_unless_flagged(tiny, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny["chat_vlm"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RemoteCodeError, match="--trust-remote-code"):
        load_model(folder, device="cpu")
    assert read_config(folder, trust_remote_code=True)["auto_map"]


def test_pickled_weights_are_refused(tiny, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny["florence2"], folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(UnsafeWeightsError, match="safetensors"):
        load_model(folder, device="cpu")


def test_missing_base_folder_is_named():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("./no/such/model", device="cpu")


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory) -> Path:
    """An untrained LoRA on the tiny Florence-2 (B is zero: it must load and change nothing)."""
    base = load_model(tiny["florence2"], device="cpu")
    regex = florence2.lora_target_modules("language")
    folder = tmp_path_factory.mktemp("adapter") / "od-lora"
    get_peft_model(base.model, LoraConfig(r=4, target_modules=regex)).save_pretrained(folder)
    return folder


def test_adapter_loads_on_its_base_and_base_only_switches_it_off(tiny, adapter):
    lm = load_model(tiny["florence2"], adapter, device="cpu")
    assert lm.has_adapter and lm.adapter == str(adapter)
    layers = [m for m in lm.model.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 16 and not any(layer.disable_adapters for layer in layers)
    with lm.base_only():
        assert all(layer.disable_adapters for layer in layers)
    assert not any(layer.disable_adapters for layer in layers)


def test_adapter_for_another_base_names_the_base_it_was_trained_for(tiny, adapter):
    with pytest.raises(AdapterMismatchError, match=re.escape(str(tiny["florence2"]))):
        load_model(tiny["chat_vlm"], adapter, device="cpu")


def test_adapter_whose_modules_do_not_exist_is_refused(tiny, adapter, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(adapter, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny["chat_vlm"])
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterMismatchError, match="does not fit base"):
        load_model(tiny["chat_vlm"], moved, device="cpu")


def test_adapter_with_wrong_tensor_shapes_is_refused(tiny, adapter, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(adapter, broken)
    tensors = load_file(broken / "adapter_model.safetensors")
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key] = torch.zeros(tensors[key].shape[0] + 3, tensors[key].shape[1])
    save_file(tensors, broken / "adapter_model.safetensors")
    with pytest.raises(AdapterMismatchError, match=r"does not fit base .*size mismatch"):
        load_model(tiny["florence2"], broken, device="cpu")


@pytest.mark.parametrize(
    ("recorded", "base", "same"),
    [
        ("org/model", "org/model", True),
        ("org/model", "org/other", False),
        ("{tmp}/a", "{tmp}/a/", True),
        ("{tmp}/a", "{tmp}/b", False),
        ("org/a", "{tmp}/a", True),  # a local copy named like the Hub repo
        ("org/b", "{tmp}/a", False),
    ],
)
def test_same_base(recorded, base, same, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir(exist_ok=True)
    fill = {"tmp": tmp_path}
    assert same_base(recorded.format(**fill), base.format(**fill)) is same


# --------------------------------------------------------------------------- tokenizers


def test_florence2_tokenizer_has_single_loc_and_image_tokens():
    tok = florence2_tokenizer()
    ids = [tok.convert_tokens_to_ids(t) for t in FLORENCE2_LOC_TOKENS]
    assert len(set(ids)) == 1000 and tok.unk_token_id not in ids
    encoded = tok("missing pin<loc_0><loc_999>")["input_ids"]
    assert tok.convert_ids_to_tokens(encoded)[-3:] == ["<loc_0>", "<loc_999>", "</s>"]
    assert tok.image_token == "<image>" and tok.image_token_id not in ids


def test_idefics3_tokenizer_frames_images_and_renders_the_chat():
    tok = idefics3_tokenizer()
    for token in (*IDEFICS3_IMAGE_TOKENS, END_OF_UTTERANCE):
        assert tok.convert_ids_to_tokens(tok(token)["input_ids"]) == [token]
    chat = chat_vlm.messages(INSPECTION_QUESTION, "Passed. No defects found.")
    text = tok.apply_chat_template(chat, tokenize=False)
    assert text == (
        f"<|im_start|>User:<image>{INSPECTION_QUESTION}<end_of_utterance>\n"
        "Assistant: Passed. No defects found.<end_of_utterance>\n"
    )
