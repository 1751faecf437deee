"""Chat VLMs (``AutoModelForImageTextToText``: SmolVLM / Idefics3 by default) answering Q/A.

The prompt is the processor's own chat template: a user turn holding the image and
:data:`~qeu_space.vocabulary.INSPECTION_QUESTION`, then the generation prompt. For training, the
collator renders the same prompt with the processor (which expands the image placeholder into the
image tokens), tokenizes the rest of the conversation (the answer and the template's end-of-turn
marker) separately, and concatenates, so the label mask is exact by construction: every token the
processor produced (prompt text, image tokens) and every padding token is -100; only the answer
and its end-of-turn token are learned. This is what the seeds' Phi-3 collator did by hand for one
sample; here it is batched and works with any template.

Module names: Idefics3 / SmolVLM have ``model.text_model.layers.N.self_attn.{q,k,v,o}_proj`` and
``mlp.{gate,up,down}_proj`` (language), ``model.vision_model.encoder.layers.N.{self_attn.*_proj,
mlp.fc1,mlp.fc2}`` (vision) and ``model.connector.modality_projection.proj`` (projector). The
regexes also cover the usual names of other chat VLMs (``language_model``, ``vision_tower``,
``multi_modal_projector``; Phi-3-vision's ``qkv_proj``/``gate_up_proj``, ``vision_embed_tokens``).

Example:
    >>> import re
    >>> language = lora_target_modules("language")
    >>> bool(re.fullmatch(language, "model.text_model.layers.0.mlp.up_proj"))
    True
    >>> bool(re.fullmatch(language, "model.vision_model.encoder.layers.0.self_attn.q_proj"))
    False
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature, LogitsProcessorList
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from qeu_space.modeling import answer_grammar
from qeu_space.modeling.families._common import batches, check_scope, inference, placement, rgb
from qeu_space.modeling.loaded import LoadedModel
from qeu_space.views.framing import frame as frame_image
from qeu_space.views.framing import framing_of
from qeu_space.vocabulary import INSPECTION_QUESTION, Finding, parse_answer

NAME = "chat_vlm"
TASKS: tuple[str, ...] = ("qa",)
#: Validation metric (``eval_`` + this) that picks the best checkpoint.
BEST_METRIC = "findings_f1"
IGNORE_INDEX = -100

_VISION_PARTS = r"(vision_model|vision_tower|visual|vision_encoder|vision_embed_tokens)"
_PROJECTOR_PARTS = r"(connector|multi_modal_projector|mm_projector|merger|img_projection)"
_NOT_VISION = r"(?!.*(vision|visual|connector|projector|merger|img_projection))"
_LANGUAGE = (
    _NOT_VISION
    + r".*\.(q_proj|k_proj|v_proj|o_proj|qkv_proj|gate_proj|up_proj|down_proj|gate_up_proj)"
)
_VISION = (
    rf".*{_VISION_PARTS}\..*\.(q_proj|k_proj|v_proj|out_proj|o_proj|qkv|proj|fc1|fc2)"
    rf"|.*{_PROJECTOR_PARTS}(\..*)?\.(proj|linear_1|linear_2|fc1|fc2|\d+)"
)
#: Scope -> PEFT ``target_modules`` regex (``re.fullmatch`` on full module names).
TARGET_MODULES: dict[str, str] = {
    "language": _LANGUAGE,
    "vision": _VISION,
    "all": f"({_LANGUAGE})|({_VISION})",
}


def matches(model_type: str, config: Mapping[str, Any]) -> bool:
    """Any image-text-to-text model but Florence-2, or a remote-code model (opt-in elsewhere)."""
    if model_type == "florence2":
        return False
    return model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or "auto_map" in config


def lora_target_modules(scope: str) -> str:
    """PEFT regex for ``language`` (text decoder), ``vision`` (encoder + projector) or ``all``."""
    return TARGET_MODULES[check_scope(scope)]


def messages(question: str, answer: str | None = None) -> list[dict[str, Any]]:
    """A chat: the user turn (image, then question) and, if given, the assistant's answer."""
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    if answer is not None:
        chat.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return chat


def prompt_and_target(processor: Any, question: str, answer: str) -> tuple[str, str]:
    """The generation prompt and the text to learn after it (answer + end-of-turn marker).

    Raises:
        ValueError: when the template does not render the answered chat as the generation prompt
            followed by the answer (then the prompt cannot be masked exactly).
    """
    prompt = processor.apply_chat_template(
        messages(question), add_generation_prompt=True, tokenize=False
    )
    full = processor.apply_chat_template(messages(question, answer), tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(
            "the processor's chat template does not render an answered chat as the generation "
            "prompt followed by the answer; cannot mask the prompt out of the labels"
        )
    # Whitespace after the end-of-turn token is never generated, so it is not learned either.
    return prompt, full[len(prompt) :].rstrip()


def collate_options(config: Any) -> dict[str, Any]:
    """Every batch is framed as the model asks (:mod:`qeu_space.views.framing`; most: whole)."""
    return {"framing": framing_of(config)}


def view(image: Image.Image, framing: str | None) -> Image.Image:
    """``image`` (a composite) as a model with ``framing`` reads it: registered, then framed
    (``None``: the whole canonical composite). Raises ``NoConnectorError`` for a non-connector."""
    return frame_image(rgb(image), framing, source="composite").image


def collate(
    processor: Any, rows: Sequence[Mapping[str, Any]], *, framing: str | None = None
) -> BatchFeature:
    """Prompt (with image tokens) + answer, right-padded; labels -100 except on answer tokens.

    Rows need ``image``, ``question`` and ``answer``. Per-token extras a processor may return
    (``token_type_ids``, ``mm_token_type_ids``) are extended with zeros over the answer.
    ``framing`` is the model's view of the image (:mod:`qeu_space.views.framing`).
    """
    pairs = [prompt_and_target(processor, row["question"], row["answer"]) for row in rows]
    tokenizer = processor.tokenizer
    enc = processor(
        text=[prompt for prompt, _ in pairs],
        images=[[view(row["image"], framing)] for row in rows],
        return_tensors="pt",
        padding=True,
        padding_side="right",
    )
    targets = tokenizer([t for _, t in pairs], add_special_tokens=False)["input_ids"]
    prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
    total = max(n + len(t) for n, t in zip(prompt_lengths, targets, strict=True))
    size = (len(rows), total)
    input_ids = torch.full(size, tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros(size, dtype=torch.long)
    labels = torch.full(size, IGNORE_INDEX, dtype=torch.long)
    per_token = {
        key: torch.zeros(size, dtype=value.dtype)
        for key, value in enc.items()
        if key not in ("input_ids", "attention_mask")
        and torch.is_tensor(value)
        and value.shape == enc["input_ids"].shape
    }
    for i, (n, target) in enumerate(zip(prompt_lengths, targets, strict=True)):
        answer = torch.tensor(target, dtype=torch.long)
        input_ids[i, :n] = enc["input_ids"][i, :n]
        input_ids[i, n : n + len(target)] = answer
        attention[i, : n + len(target)] = 1
        labels[i, n : n + len(target)] = answer
        for key, value in per_token.items():
            value[i, :n] = enc[key][i, :n]
    batch = {key: value for key, value in enc.items() if key not in per_token}
    batch.update(per_token, input_ids=input_ids, attention_mask=attention, labels=labels)
    return BatchFeature(batch)


def generate(
    loaded: LoadedModel,
    images: Sequence[Image.Image],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    question: str = INSPECTION_QUESTION,
    grammar: bool = True,
) -> list[str]:
    """Greedy answers to ``question`` (default: the inspection question), one per image.

    Prompts are left-padded (decoder-only models continue from the last position); only the new
    tokens are decoded, with special tokens (end-of-turn) dropped. ``grammar`` (on by default)
    generates under the answer grammar (:mod:`qeu_space.modeling.answer_grammar`), so every
    answer that ends within ``max_new_tokens`` is canonical; ``grammar=False`` is the
    unconstrained ablation (and free text for a question that wants no inspection answer).
    """
    model, processor = loaded.model, loaded.processor
    device, dtype = placement(model)
    prompt = processor.apply_chat_template(
        messages(question), add_generation_prompt=True, tokenize=False
    )
    framing = framing_of(model.config)
    tokenizer = processor.tokenizer
    constraint = answer_grammar.answer_constraint(tokenizer) if grammar else None
    answers: list[str] = []
    with inference(model):
        for chunk in batches(list(images), batch_size):
            inputs = processor(
                text=[prompt] * len(chunk),
                images=[[view(i, framing)] for i in chunk],
                return_tensors="pt",
                padding=True,
                padding_side="left",
            ).to(device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            extra = {}
            if constraint is not None:  # one processor per call: it tracks this batch's rows
                hook = answer_grammar.logits_processor(
                    constraint, model.generation_config, tokenizer, max_new_tokens
                )
                extra["logits_processor"] = LogitsProcessorList([hook])
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **extra)
            new = out[:, inputs["input_ids"].shape[1] :]
            answers += [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]
    return answers


def parse(text: str, image_size: tuple[int, int]) -> list[Finding]:
    """Findings an answer names (``vocabulary.parse_answer``); answers carry no boxes."""
    return list(parse_answer(text).findings)
