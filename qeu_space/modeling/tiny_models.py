"""Tiny random-weight Florence-2 and Idefics3 models, saved as folders like the Hub's.

(The other chat VLM families, Qwen2-VL to Gemma 3: :mod:`qeu_space.modeling.tiny_families`.)

Tests, the benchmark, the Space's offline mode and the feedback loop all need a model that loads
through exactly the path a real one does (``config.json`` + ``model.safetensors`` + processor +
tokenizer in a folder, read by ``AutoModelForImageTextToText`` / ``AutoProcessor``) but trains a
step in well under a second on a CPU and never touches the network. These builders make one from a
config with a tokenizer trained here (:mod:`qeu_space.modeling.local_tokenizer`). The weights are
random (seeded): only the shapes, module names and token plumbing are real.

Example:
    >>> path = make_tiny_florence2("/tmp/tiny-florence2")
    >>> sorted(p.name for p in path.iterdir())[:3]
    ['config.json', 'generation_config.json', 'model.safetensors']
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
)
from transformers.models.clip import CLIPImageProcessorPil
from transformers.models.idefics3 import Idefics3ImageProcessorPil

from qeu_space.modeling.local_tokenizer import (
    END_OF_UTTERANCE,
    florence2_tokenizer,
    idefics3_tokenizer,
)

#: Parse rules ``Florence2Processor.post_process_generation`` needs (the released processor's).
FLORENCE2_POST_PROCESSOR_CONFIG: dict[str, dict] = {
    "ocr": {"AREA_THRESHOLD": 0.0},
    "phrase_grounding": {"banned_grounding_tokens": ["the image"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}


def make_tiny_florence2(out_dir: str | Path, *, image_size: int = 64, seed: int = 0) -> Path:
    """Save a ~0.2M-parameter native Florence-2 (DaViT stages + BART) with its processor.

    The vision tower keeps Florence-2's four stages (strides 4, 2, 2, 2), so an ``image_size``
    image gives ``(image_size / 32) ** 2 + 1`` image tokens (5 at 64 px).

    Args:
        out_dir: folder to write (created; files in it are overwritten).
        image_size: side the processor resizes images to; a multiple of 32.
        seed: weight initialisation seed.

    Returns:
        ``out_dir`` as a ``Path``, loadable with :func:`qeu_space.modeling.loading.load_model`.
    """
    if image_size % 32 or image_size < 32:
        raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
    tokenizer = florence2_tokenizer()
    image_tokens = (image_size // 32) ** 2 + 1
    image_processor = CLIPImageProcessorPil(
        size={"height": image_size, "width": image_size},
        do_center_crop=False,
        crop_size={"height": image_size, "width": image_size},
        image_seq_length=image_tokens,
    )
    processor = Florence2Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        post_processor_config=FLORENCE2_POST_PROCESSOR_CONFIG,
    )
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = Florence2Config(
        vision_config={
            "depths": [1, 1, 1, 1],
            "embed_dim": [8, 16, 24, 32],
            "num_heads": [1, 1, 2, 2],
            "num_groups": [1, 1, 2, 2],
            "window_size": 2,
            "projection_dim": 32,
            "max_position_embeddings": 16,
            "max_temporal_embeddings": 4,
            "drop_path_rate": 0.0,
        },
        text_config={
            "model_type": "bart",
            "vocab_size": len(tokenizer),
            "d_model": 32,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
            "max_position_embeddings": 256,
            # No dropout and a wider init than BART's 0.02: with 32-dim embeddings tied to the
            # LM head, 0.02 gives near-uniform logits that a few LoRA steps can hardly move.
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "activation_dropout": 0.0,
            "init_std": 0.1,
            "decoder_start_token_id": tokenizer.eos_token_id,
            "forced_eos_token_id": tokenizer.eos_token_id,
            **ids,
        },
        image_token_id=tokenizer.image_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Florence2ForConditionalGeneration(config)
    model.generation_config.update(decoder_start_token_id=tokenizer.eos_token_id, **ids)
    return _save(model, processor, out_dir)


def make_tiny_idefics3(out_dir: str | Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """Save a ~60k-parameter Idefics3 (SigLIP-like vision + Llama text) with its processor.

    Images are resized to ``image_size`` without splitting; with patch 8 and the pixel-shuffle
    scale factor 2 that is ``(image_size / 16) ** 2`` image tokens (4 at 32 px). The chat
    template is SmolVLM's and generation stops at ``<end_of_utterance>``.

    Args:
        out_dir: folder to write (created; files in it are overwritten).
        image_size: side images are resized to; a multiple of 16.
        seed: weight initialisation seed.
    """
    if image_size % 16 or image_size < 16:
        raise ValueError(f"image_size must be a positive multiple of 16, got {image_size}")
    patch_size, scale_factor = 8, 2
    tokenizer = idefics3_tokenizer()
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(image_size // patch_size) ** 2 // scale_factor**2,
        chat_template=tokenizer.chat_template,
    )
    end_of_utterance = tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = Idefics3Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            **ids,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Idefics3ForConditionalGeneration(config)
    model.generation_config.update(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, end_of_utterance],
    )
    return _save(model, processor, out_dir)


def _save(model: torch.nn.Module, processor: object, out_dir: str | Path) -> Path:
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
