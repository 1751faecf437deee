"""Chat VLMs (``AutoModelForImageTextToText``: SmolVLM / Idefics3 by default) answering Q/A.

Families tested on the full path (README "Chat VLM families"): Idefics3 / SmolVLM, SmolVLM2,
Qwen2-VL, Qwen2.5-VL, Qwen3-VL, PaliGemma 1 / 2, LLaVA-1.5, LLaVA-OneVision and Gemma 3. A
model without a chat template is prompted in its native format (:func:`generation_prompt`);
PaliGemma trains through its processor's ``suffix=`` (:func:`uses_suffix`), so its answer is
causal while its prefix attends both ways; every target ends with a token the model stops on
(:func:`ended`).

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

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature
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
# Sequential projectors (Qwen2-VL's merger MLP, LLaVA's mm_projector) are Linear, GELU, Linear:
# their even entries are the linear layers. Patch embeddings are convolutions: left out.
_VISION = (
    rf"(?!.*patch_embed).*{_VISION_PARTS}\..*\.(q_proj|k_proj|v_proj|out_proj|o_proj|qkv|proj"
    r"|fc1|fc2|gate_proj|up_proj|down_proj|linear_fc1|linear_fc2)"
    rf"|.*{_PROJECTOR_PARTS}(\..*)?\.(proj|linear|linear_1|linear_2|fc1|fc2|[02468])"
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
    """PEFT regex for ``language`` (text decoder), ``vision`` (encoder + projector) or ``all``.

    A name-only rule for a model not at hand; training resolves the scope on the model itself
    (:func:`scope_targets`), which also takes vision MLPs and projectors of any name.
    """
    return TARGET_MODULES[check_scope(scope)]


#: A module path inside the vision tower / the projector (Qwen's ``visual`` holds its merger).
VISION_PART = re.compile(
    r"(^|\.)(vision_model|vision_tower|visual|vision_encoder|vision_embed_tokens)\."
)
PROJECTOR_PART = re.compile(
    r"(^|\.)(connector|multi_modal_projector|mm_projector|merger|img_projection)(\.|$)"
)
#: The output head is never adapted (it is tied to the embeddings in most of these models).
HEAD = re.compile(r"(^|\.)lm_head$")


def part_of(name: str) -> str:
    """``vision``, ``projector`` or ``language``: where a module of a chat VLM belongs."""
    if VISION_PART.search(name):
        return "vision"
    if PROJECTOR_PART.search(name):
        return "projector"
    return "language"


def scope_targets(model: torch.nn.Module, scope: str) -> tuple[list[str], dict[str, str]]:
    """Every linear layer ``scope`` adapts in ``model``, and what it leaves out and why.

    ``language`` is the text decoder, ``vision`` the vision tower (attention, MLPs, merger) and
    the projector, ``all`` both. The output head is left out (``--modules-to-save lm_head``
    trains it in full), and so is a projector with no linear layer (Gemma 3's is a bare weight
    matrix: ``--modules-to-save multi_modal_projector`` trains it).
    """
    check_scope(scope)
    parts = {"language": {"language"}, "vision": {"vision", "projector"}}.get(
        scope, {"language", "vision", "projector"}
    )
    targets: list[str] = []
    excluded: dict[str, str] = {}
    projectors: dict[str, bool] = {}
    for name, module in model.named_modules():
        linear = isinstance(module, torch.nn.Linear)
        part = part_of(name)
        if part == "projector":
            root = name[: PROJECTOR_PART.search(name).end()].rstrip(".")
            projectors[root] = projectors.get(root, False) or linear
        if not linear:
            continue
        if HEAD.search(name):
            excluded[name] = "the output head: --modules-to-save lm_head trains it in full"
        elif part in parts:
            targets.append(name)
    if "projector" in parts:
        for root, has_linear in projectors.items():
            if not has_linear and "." not in root.replace("model.", "", 1):
                excluded[root] = (
                    f"no linear layer (a bare weight): --modules-to-save {root.rsplit('.', 1)[-1]}"
                    " trains it in full"
                )
    return targets, excluded


def targets_regex(model: torch.nn.Module, names: Sequence[str]) -> str:
    """A PEFT ``target_modules`` regex matching exactly ``names`` among ``model``'s modules:
    layer numbers become ``\\d+``, so the adapter config stays short (a list otherwise)."""
    patterns = sorted({re.sub(r"\\.\d+\\.", r"\\.\\d+\\.", re.escape(n)) for n in names})
    regex = "|".join(f"({p})" for p in patterns)
    matched = {n for n, _ in model.named_modules() if re.fullmatch(regex, n)}
    if matched != set(names):
        raise ValueError("the scope's module names do not collapse to a regex")
    return regex


def describe_targets(names: Sequence[str], excluded: Mapping[str, str]) -> str:
    """One line per part for the training log: how many layers, which kinds, what is left out."""
    lines = []
    for part in ("language", "vision", "projector"):
        mine = [n for n in names if part_of(n) == part]
        if mine:
            kinds = sorted({re.sub(r"\.\d+\.", ".N.", n) for n in mine})
            shown = ", ".join(kinds[:8]) + (f", ... ({len(kinds)} kinds)" if len(kinds) > 8 else "")
            lines.append(f"  {part}: {len(mine)} linear layers ({shown})")
    lines += [f"  left out: {name} ({why})" for name, why in excluded.items()]
    return "\n".join(lines)


def messages(question: str, answer: str | None = None) -> list[dict[str, Any]]:
    """A chat: the user turn (image, then question) and, if given, the assistant's answer."""
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    if answer is not None:
        chat.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return chat


def has_chat_template(processor: Any) -> bool:
    tokenizer = getattr(processor, "tokenizer", None)
    return bool(
        getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
    )


def uses_suffix(processor: Any) -> bool:
    """PaliGemma's processor takes the answer as ``suffix=`` and makes labels and token types
    itself: the prompt (prefix) attends both ways, the answer (suffix) causally."""
    from transformers import PaliGemmaProcessor

    return isinstance(processor, PaliGemmaProcessor)


def generation_prompt(processor: Any, question: str) -> str:
    """The prompt a model answers: its chat template's user turn and generation prompt, or,
    for a model without a template (PaliGemma as released), its native format: ``<image>`` and
    the question (PaliGemma's processor expands the image tokens and adds ``<bos>`` and the
    closing newline;
    another template-less model gets its image token, the question and a newline)."""
    if has_chat_template(processor):
        return processor.apply_chat_template(
            messages(question), add_generation_prompt=True, tokenize=False
        )
    if uses_suffix(processor):
        return f"{processor.image_token}{question}"
    image_token = getattr(processor, "image_token", None) or "<image>"
    return f"{image_token}{question}\n"


def prompt_and_target(processor: Any, question: str, answer: str) -> tuple[str, str]:
    """The generation prompt and the text to learn after it (answer + end-of-turn marker).

    Without a chat template the target is the answer alone (the collator ends it with the
    end-of-sequence token, as it does for a template that writes no end-of-turn token).

    Raises:
        ValueError: when the template does not render the answered chat as the generation prompt
            followed by the answer (then the prompt cannot be masked exactly).
    """
    prompt = generation_prompt(processor, question)
    if not has_chat_template(processor):
        return prompt, answer
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
    processor: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    framing: str | None = None,
    relight: Callable[[Image.Image], Image.Image] | None = None,
) -> BatchFeature:
    """Prompt (with image tokens) + answer, right-padded; labels -100 except on answer tokens.

    Rows need ``image``, ``question`` and ``answer``. Per-token extras a processor may return
    (``token_type_ids``, ``mm_token_type_ids``) are extended with zeros over the answer.
    ``framing`` is the model's view of the image (:mod:`qeu_space.views.framing`); ``relight``
    (training batches with ``--photometric``: :mod:`qeu_space.training.photometric`) redraws
    each view's light after registration.
    """
    if uses_suffix(processor):
        return _collate_suffix(processor, rows, framing, relight)
    pairs = [prompt_and_target(processor, row["question"], row["answer"]) for row in rows]
    tokenizer = processor.tokenizer
    enc = processor(
        text=[prompt for prompt, _ in pairs],
        images=[[_viewed(row["image"], framing, relight)] for row in rows],
        return_tensors="pt",
        padding=True,
        padding_side="right",
    )
    targets = [
        ended(tokenizer, ids)
        for ids in tokenizer([t for _, t in pairs], add_special_tokens=False)["input_ids"]
    ]
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


def end_ids(tokenizer: Any) -> set[int]:
    """Ids that end a turn: the tokenizer's special tokens and its added special tokens
    (``<end_of_utterance>``, ``<|im_end|>``, ``<end_of_turn>``), never ordinary text."""
    ids = set(tokenizer.all_special_ids)
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    ids |= {i for i, token in decoder.items() if getattr(token, "special", False)}
    return ids - {tokenizer.pad_token_id, tokenizer.unk_token_id}


def ended(tokenizer: Any, target: list[int]) -> list[int]:
    """``target`` ending with a token the model can stop on: a template that writes no
    end-of-turn token after the assistant (LLaVA-1.5's) gets the end-of-sequence token, so the
    model learns to stop rather than run on to ``max_new_tokens``."""
    if target and target[-1] in end_ids(tokenizer):
        return list(target)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no end-of-sequence token to end the answers with")
    return [*target, tokenizer.eos_token_id]


def _viewed(
    image: Image.Image, framing: str | None, relight: Callable[[Image.Image], Image.Image] | None
) -> Image.Image:
    seen = view(image, framing)
    return seen if relight is None else relight(seen)


def _collate_suffix(
    processor: Any,
    rows: Sequence[Mapping[str, Any]],
    framing: str | None,
    relight: Callable[[Image.Image], Image.Image] | None = None,
) -> BatchFeature:
    """PaliGemma's own training batch: ``processor(text=prompt, suffix=answer)`` gives
    ``token_type_ids`` (0 prefix, 1 suffix) and labels (-100 on the prefix); padding is masked
    too. The processor ends each suffix with ``<eos>``."""
    enc = processor(
        text=[generation_prompt(processor, row["question"]) for row in rows],
        images=[[_viewed(row["image"], framing, relight)] for row in rows],
        suffix=[row["answer"] for row in rows],
        return_tensors="pt",
        padding=True,
        padding_side="right",
    )
    labels = torch.as_tensor(enc["labels"]).clone()
    labels[enc["attention_mask"] == 0] = IGNORE_INDEX
    enc["labels"] = labels
    return enc


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
    prompt = generation_prompt(processor, question)
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
            if constraint is not None:
                extra["logits_processor"] = answer_grammar.logits_processors(
                    constraint, model.generation_config, tokenizer, max_new_tokens
                )
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **extra)
            new = out[:, inputs["input_ids"].shape[1] :]
            answers += [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]
    return answers


def parse(text: str, image_size: tuple[int, int]) -> list[Finding]:
    """Findings an answer names (``vocabulary.parse_answer``); answers carry no boxes."""
    return list(parse_answer(text).findings)
