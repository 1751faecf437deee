"""Tiny random-weight models of the popular chat VLM families, saved as folders like the Hub's.

One builder per family: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM2, PaliGemma (1 and 2), LLaVA-1.5,
LLaVA-OneVision and Gemma 3 (Idefics3 / SmolVLM and Florence-2 are in
:mod:`qeu_space.modeling.tiny_models`). Each is the family's own transformers classes with a
config a few thousand parameters big, its own processor class (image processor: the PIL backend;
the families with a video part are saved without it, :mod:`qeu_space.modeling.processors`) and a
tokenizer trained here with the family's special tokens and chat template, as the released
checkpoint has them (PaliGemma has none: it is prompted in its native prefix format). They load
through :func:`qeu_space.modeling.loading.load_model` exactly as the real checkpoints do, so the
tests run the train -> evaluate -> Space path of every family offline.

Example:
    >>> path = TINY_FAMILIES["qwen2_vl"](tmp / "qwen2-vl")
    >>> load_model(path).family
    'chat_vlm'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PreTrainedTokenizerFast

from qeu_space.modeling.local_tokenizer import (
    END_OF_UTTERANCE,
    IDEFICS3_CHAT_TEMPLATE,
    IDEFICS3_IMAGE_TOKENS,
    corpus_texts,
    train_bpe,
)
from qeu_space.modeling.processors import image_only_class

#: ChatML, as Qwen2-VL / Qwen2.5-VL / Qwen3-VL / LLaVA-OneVision write it (one image per turn).
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ image_open }}"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
#: LLaVA-1.5's template (llava-hf): no end-of-turn token after the assistant's answer.
LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}"
    "{% else %}{{ c['text'] + ' ' }}{% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
#: Gemma 3's template: ``<start_of_turn>user ... <end_of_turn>``, the assistant is ``model``.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<start_of_image>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

#: A tiny Llama-like text decoder (the keys every text config here shares).
TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "head_dim": 16,
}
#: A tiny SigLIP / CLIP vision tower.
VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
}


def tokenizer(
    specials: Iterable[str],
    *,
    bos: str | None,
    eos: str,
    pad: str,
    added: Iterable[str] = (),
    chat_template: str | None = None,
    extra: dict[str, str] | None = None,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE on the project's texts with a family's special tokens and template."""
    specials = list(specials)
    backend = train_bpe(corpus_texts(), vocab_size=600, special_tokens=specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=extra or {},
    )
    if added:
        tok.add_tokens(list(added), special_tokens=True)
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def _ids(tok: PreTrainedTokenizerFast) -> dict[str, int | None]:
    return {
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }


def _save(model: Any, processor: Any, out_dir: str | Path, seed: int, eos: list[int]) -> Path:
    model.generation_config.update(eos_token_id=eos, pad_token_id=processor.tokenizer.pad_token_id)
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _model(config_class: type, model_class: type, seed: int, **config: Any) -> Any:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model_class(config_class(**config))


def _qwen(version: str, out_dir: str | Path, seed: int) -> Path:
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL: 56 px images, 4 x 4 patches merged 2 x 2 -> 4 tokens."""
    names = {
        "2": ("Qwen2VL", transformers.models.qwen2_vl.Qwen2VLImageProcessorPil, 14),
        "2.5": ("Qwen2_5_VL", transformers.models.qwen2_vl.Qwen2VLImageProcessorPil, 14),
        "3": ("Qwen3VL", transformers.models.qwen2_vl.Qwen2VLImageProcessorPil, 16),
    }
    prefix, image_processor_class, patch = names[version]
    side = patch * 4
    tok = tokenizer(
        [
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ],  # fmt: skip
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        chat_template=CHATML_TEMPLATE.replace("{{ image_open }}", QWEN_IMAGE),
    )
    image_processor = image_processor_class(
        min_pixels=side * side, max_pixels=side * side, patch_size=patch, merge_size=2
    )
    processor_class = image_only_class(getattr(transformers, f"{prefix}Processor"))
    processor = processor_class(
        image_processor=image_processor, tokenizer=tok, chat_template=tok.chat_template
    )
    ids = tok.convert_tokens_to_ids
    text = {**TEXT, "vocab_size": len(tok), **_ids(tok)}
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    text["rope_parameters"]["mrope_section"] = [2, 3, 3]
    if version == "2":
        vision = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2}
    elif version == "2.5":
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                  "out_hidden_size": 32, "window_size": 56,
                  "fullatt_block_indexes": [1]}  # fmt: skip
    else:
        text["rope_parameters"]["mrope_interleaved"] = True
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                  "out_hidden_size": 32, "patch_size": patch, "num_position_embeddings": 16,
                  "deepstack_visual_indexes": [0]}  # fmt: skip
    model = _model(
        getattr(transformers, f"{prefix}Config"),
        getattr(transformers, f"{prefix}ForConditionalGeneration"),
        seed,
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    return _save(model, processor, out_dir, seed, [tok.eos_token_id])


def make_tiny_qwen2_vl(out_dir: str | Path, *, seed: int = 0) -> Path:
    return _qwen("2", out_dir, seed)


def make_tiny_qwen2_5_vl(out_dir: str | Path, *, seed: int = 0) -> Path:
    return _qwen("2.5", out_dir, seed)


def make_tiny_qwen3_vl(out_dir: str | Path, *, seed: int = 0) -> Path:
    return _qwen("3", out_dir, seed)


def make_tiny_paligemma(out_dir: str | Path, *, seed: int = 0, text: str = "gemma") -> Path:
    """PaliGemma as released (``-pt``): no chat template; 32 px, patch 8 -> 16 image tokens.
    ``text="gemma2"`` makes PaliGemma 2 (same classes, a Gemma 2 decoder)."""
    tok = tokenizer(["<pad>", "<eos>", "<bos>", "<unk>"], bos="<bos>", eos="<eos>", pad="<pad>")
    image_processor = transformers.SiglipImageProcessorPil(
        size={"height": 32, "width": 32}, image_seq_length=16
    )
    image_processor.image_seq_length = 16
    processor = transformers.PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
    model = _model(
        transformers.PaliGemmaConfig,
        transformers.PaliGemmaForConditionalGeneration,
        seed,
        text_config={**TEXT, "model_type": text, "vocab_size": len(tok), **_ids(tok)},
        vision_config={**VISION, "image_size": 32, "patch_size": 8, "projection_dim": 32},
        projection_dim=32,
        hidden_size=32,
        image_token_id=processor.image_token_id,
        vocab_size=len(tok),
        **_ids(tok),
    )
    return _save(model, processor, out_dir, seed, [tok.eos_token_id])


def make_tiny_paligemma2(out_dir: str | Path, *, seed: int = 0) -> Path:
    return make_tiny_paligemma(out_dir, seed=seed, text="gemma2")


def make_tiny_llava(out_dir: str | Path, *, seed: int = 0) -> Path:
    """LLaVA-1.5 (CLIP + Llama, ``USER: <image>\\n... ASSISTANT:``): 32 px, patch 8 -> 16."""
    tok = tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>"],
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        added=["<image>"],
        chat_template=LLAVA_TEMPLATE,
    )
    image_processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = transformers.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_TEMPLATE,
        num_additional_image_tokens=1,
    )
    model = _model(
        transformers.LlavaConfig,
        transformers.LlavaForConditionalGeneration,
        seed,
        text_config={**TEXT, "model_type": "llama", "vocab_size": len(tok), **_ids(tok)},
        vision_config={
            **VISION,
            "model_type": "clip_vision_model",
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 32,
        },  # fmt: skip
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    return _save(model, processor, out_dir, seed, [tok.eos_token_id])


def make_tiny_llava_onevision(out_dir: str | Path, *, seed: int = 0) -> Path:
    """LLaVA-OneVision (SigLIP + Qwen2, ChatML): 32 px, one tile, patch 8."""
    tok = tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        chat_template=CHATML_TEMPLATE.replace("{{ image_open }}", "<image>\n"),
    )
    image_processor = transformers.LlavaOnevisionImageProcessorPil(
        size={"height": 32, "width": 32}, image_grid_pinpoints=[[32, 32]], do_pad=True
    )
    processor = image_only_class(transformers.LlavaOnevisionProcessor)(
        image_processor=image_processor,
        tokenizer=tok,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        chat_template=tok.chat_template,
        vision_aspect_ratio="anyres_max_1",
    )
    model = _model(
        transformers.LlavaOnevisionConfig,
        transformers.LlavaOnevisionForConditionalGeneration,
        seed,
        text_config={**TEXT, "model_type": "qwen2", "vocab_size": len(tok), **_ids(tok)},
        vision_config={
            **VISION,
            "model_type": "siglip_vision_model",
            "image_size": 32,
            "patch_size": 8,
        },  # fmt: skip
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[32, 32]],
        vision_aspect_ratio="anyres_max_1",
    )
    return _save(model, processor, out_dir, seed, [tok.eos_token_id])


def make_tiny_gemma3(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Gemma 3 (SigLIP + Gemma 3 text, ``<start_of_turn>``): 32 px, patch 8, 4 image tokens."""
    tok = tokenizer(
        ["<pad>", "<eos>", "<bos>", "<unk>"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        added=[
            "<start_of_turn>",
            "<end_of_turn>",
            "<start_of_image>",
            "<end_of_image>",
            "<image_soft_token>",
        ],  # fmt: skip
        chat_template=GEMMA3_TEMPLATE,
        extra={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },  # fmt: skip
    )
    image_processor = transformers.Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    processor = transformers.Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=GEMMA3_TEMPLATE,
        image_seq_length=4,
    )
    ids = tok.convert_tokens_to_ids
    model = _model(
        transformers.Gemma3Config,
        transformers.Gemma3ForConditionalGeneration,
        seed,
        text_config={**TEXT, "vocab_size": len(tok), "sliding_window": 64, **_ids(tok)},
        vision_config={**VISION, "image_size": 32, "patch_size": 8},
        mm_tokens_per_image=4,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    return _save(model, processor, out_dir, seed, [tok.eos_token_id, ids("<end_of_turn>")])


def make_tiny_smolvlm2(out_dir: str | Path, *, seed: int = 0) -> Path:
    """SmolVLM2 (its own ``smolvlm`` classes; SmolVLM's tokens and template): 32 px -> 4."""
    tok = tokenizer(
        ["<|im_start|>", "<|endoftext|>", "<pad>", "<unk>"],
        bos="<|im_start|>",
        eos="<|endoftext|>",
        pad="<pad>",
        added=[*IDEFICS3_IMAGE_TOKENS, END_OF_UTTERANCE],
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    image_processor = transformers.models.smolvlm.SmolVLMImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    )
    processor = image_only_class(transformers.SmolVLMProcessor)(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_len=4,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    model = _model(
        transformers.SmolVLMConfig,
        transformers.SmolVLMForConditionalGeneration,
        seed,
        vision_config={**VISION, "image_size": 32, "patch_size": 8},
        text_config={**TEXT, "model_type": "llama", "vocab_size": len(tok), **_ids(tok)},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=tok.pad_token_id,
    )
    eou = tok.convert_tokens_to_ids(END_OF_UTTERANCE)
    return _save(model, processor, out_dir, seed, [tok.eos_token_id, eou])


#: Family (model type) -> builder; the README's family table lists the same.
TINY_FAMILIES: dict[str, Callable[..., Path]] = {
    "qwen2_vl": make_tiny_qwen2_vl,
    "qwen2_5_vl": make_tiny_qwen2_5_vl,
    "qwen3_vl": make_tiny_qwen3_vl,
    "smolvlm": make_tiny_smolvlm2,
    "paligemma": make_tiny_paligemma,
    "paligemma2": make_tiny_paligemma2,
    "llava": make_tiny_llava,
    "llava_onevision": make_tiny_llava_onevision,
    "gemma3": make_tiny_gemma3,
}
