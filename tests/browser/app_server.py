"""Launch the Space (``python app.py``) on tiny random-weight models, for the app tests.

The app runs in its own process exactly as on a Space: the ``QEU_*`` variables point at tiny
models built here (Idefics3 + two named LoRA adapters with model cards, a ViT, a Florence-2),
the feedback store and Gradio's cache are in a temporary folder, the port is ephemeral on
127.0.0.1, nothing reaches the network (``HF_HUB_OFFLINE=1``, analytics off), and the process is
stopped after.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VIT_LABELS = ("OK", "BENDNG", "NUKENG")
START_TIMEOUT = 180.0


def make_tiny_vit(out_dir: Path) -> Path:
    """A ~10k-parameter ViT classifier (OK / BENDNG / NUKENG) with its image processor."""
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit import ViTImageProcessorPil

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=len(VIT_LABELS),
        id2label=dict(enumerate(VIT_LABELS)),
        label2id={label: i for i, label in enumerate(VIT_LABELS)},
    )
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        ViTForImageClassification(config).save_pretrained(out_dir)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(out_dir)
    return out_dir


def make_tiny_adapter(
    base: Path, out_dir: Path, *, seed: int = 1, f1: float = 0.625, token_indices=()
) -> Path:
    """A LoRA adapter on the tiny Idefics3 (random B, so the fine-tuned answer differs; another
    ``seed``, another adapter), with a model card reporting one metric, findings F1 ``f1`` (what
    the adapter panel shows). ``token_indices``: embedding rows trained beside it (PEFT trainable
    tokens, as ``train --new-words`` makes them), moved at random so they change the answer."""
    import torch
    from huggingface_hub import EvalResult, ModelCard, ModelCardData
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from qeu_space.modeling.families import chat_vlm

    model = AutoModelForImageTextToText.from_pretrained(base, use_safetensors=True)
    config = LoraConfig(
        r=2,
        lora_alpha=4,
        target_modules=chat_vlm.lora_target_modules("language"),
        init_lora_weights=False,
        trainable_token_indices=list(token_indices) or None,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
        for name, param in peft_model.named_parameters():
            if "trainable_tokens_delta" in name:
                param.data.normal_(0.0, 1.0)
    peft_model.save_pretrained(out_dir)
    data = ModelCardData(
        base_model=str(base),
        library_name="peft",
        model_name="tiny-lora",
        eval_results=[
            EvalResult(
                task_type="image-text-to-text",
                dataset_type="qeu/connectors-qa",
                dataset_name="QEU connectors (qa)",
                dataset_split="test",
                metric_type="f1",
                metric_name="findings F1",
                metric_value=f1,
            )
        ],
    )
    ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n# tiny-lora\n").save(
        out_dir / "README.md"
    )
    return out_dir


#: The names of the two tiny adapters in ``QEU_ADAPTERS`` (the first is the default).
TINY_ADAPTERS = ("latched", "short-pin")


def make_tiny_models(root: Path) -> dict[str, str]:
    """Build every tiny model under ``root``; returns the ``QEU_*`` variables naming them
    (``QEU_ADAPTERS``: two adapters on the chat VLM, named :data:`TINY_ADAPTERS`)."""
    from qeu_space.modeling.tiny_models import make_tiny_florence2, make_tiny_idefics3

    base = make_tiny_idefics3(root / "vlm-base")
    adapter = make_tiny_adapter(base, root / "vlm-lora")
    second = make_tiny_adapter(base, root / "vlm-short-pin-lora", seed=2, f1=0.5)
    vit = make_tiny_vit(root / "vit")
    od = make_tiny_florence2(root / "florence2")
    first_name, second_name = TINY_ADAPTERS
    return {
        "QEU_BASE_MODEL": str(base),
        "QEU_ADAPTERS": f"{first_name}={adapter},{second_name}={second}",
        "QEU_VIT_MODEL": str(vit),
        "QEU_OD_MODEL": str(od),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(tmp: Path, models: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of a test app: offline, private temp folders, small limits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QEU_", "GRADIO_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(tmp / "gradio"),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(free_port()),
        QEU_FEEDBACK_DB=str(tmp / "feedback.sqlite3"),
        QEU_DEVICE="cpu",
        QEU_GALLERY_SIZE="4",
        QEU_MAX_NEW_TOKENS="12",
        # random tiny models: base and adapter must answer apart in 12 tokens, which the answer
        # grammar would not let them (tests/test_answer_grammar.py covers generation under it)
        QEU_ANSWER_GRAMMAR="0",
        QEU_MAX_UPLOAD_MB="2",
        QEU_MAX_PIXELS=str(2048 * 2048),
        OMP_NUM_THREADS="1",
        NUMBA_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        **models,
    )
    env.update(extra)
    return env


@dataclass(frozen=True)
class RunningApp:
    url: str
    env: dict[str, str]
    process: subprocess.Popen
    log: Path

    @property
    def feedback_db(self) -> Path:
        return Path(self.env["QEU_FEEDBACK_DB"])


@contextmanager
def launched_app(tmp: Path, env: dict[str, str]) -> Iterator[RunningApp]:
    """``python app.py`` until its URL answers; stopped (and reaped) on exit."""
    import httpx

    log = tmp / "app.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "app.py")],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"app exited with {process.returncode}:\n{log.read_text()}")
            found = re.search(r"Running on local URL:\s+(http://\S+)", log.read_text())
            if found:
                url = found.group(1).rstrip("/")
                try:
                    if httpx.get(url + "/config", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.25)
        else:
            raise TimeoutError(f"app did not start in {START_TIMEOUT:.0f} s:\n{log.read_text()}")
        yield RunningApp(url, env, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
