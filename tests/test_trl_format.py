"""The ``qa`` config as TRL's VLM SFT reads it: ``images`` + ``messages`` through a chat template,
and (where TRL is installed) two real ``SFTTrainer`` steps on a tiny model.

TRL is not a runtime dependency; it installs beside the pinned stack (trl 1.16.0 with
transformers 5.23.0, peft 0.21.2, datasets 5.2.0, accelerate 1.15.0), and
``requirements-dev.txt`` installs it for the tests.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from dataset_tools.builders import BuildConfig
from dataset_tools.save import build_to_folder
from qeu_space.modeling.tiny_models import make_tiny_idefics3


@pytest.fixture(scope="module")
def qa(tmp_path_factory: pytest.TempPathFactory) -> datasets.Dataset:
    out = tmp_path_factory.mktemp("trl") / "qa"
    build_to_folder(BuildConfig("qa", num=4, seed=5, size=224), out, command="test")
    return datasets.load_dataset(str(out), "qa", split="train")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_idefics3(tmp_path_factory.mktemp("tiny") / "idefics3")


def _with_images(messages: list[dict], images: list) -> list[dict]:
    """What TRL's ``prepare_multimodal_messages`` does: each image block gets its image."""
    pending = iter(images)
    return [
        {
            **m,
            "content": [
                {**part, "image": next(pending)} if part["type"] == "image" else part
                for part in m["content"]
            ],
        }
        for m in messages
    ]


def test_messages_render_through_a_chat_template_with_their_images(qa, tiny):
    processor = AutoProcessor.from_pretrained(tiny)
    row = qa[0]
    batch = processor.apply_chat_template(
        [_with_images(row["messages"], row["images"])],
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    text = processor.batch_decode(batch["input_ids"])[0]
    assert row["question"] in text and row["answer"] in text
    assert batch["pixel_values"].shape[0] == 1  # the one image of the row


def test_sft_trainer_trains_two_steps_on_the_qa_config(qa, tiny, tmp_path):
    trl = pytest.importorskip("trl", reason="TRL is optional (requirements-dev.txt installs it)")
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(tiny)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=None,  # never cut the image tokens out of a sequence
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=qa,
        processing_class=AutoProcessor.from_pretrained(tiny),
    )
    assert type(trainer.data_collator).__name__ == "DataCollatorForVisionLanguageModeling"
    result = trainer.train()
    assert result.global_step == 2
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
