"""The shipped ``<OD>`` model: a small native Florence-2 built here from a config.

No Florence-2 pre-trained for connector pins exists, and the seeds' LoRA on the released
Florence-2 put its boxes on the printed digits; so the project builds its own, as it did the
inspection VLM (:mod:`qeu_space.modeling.inspection_vlm`). This module writes the untrained
starting point (config, random weights, processor, tokenizer) as a folder that
:func:`qeu_space.modeling.loading.load_model` reads like any Hub Florence-2 (native
``Florence2ForConditionalGeneration``, no remote code); ``python -m qeu_space.train --task od
--full-finetune`` trains it. ``models/inspection-od-base/README.md`` has the exact commands.

Three choices make boxes at held-out pin positions (validation/test defects sit at positions
never defective in training) reachable for a model this small:

* **It reads only the pin grid** of the product under inspection (``qeu_framing:
  composite_test_grid``, :mod:`qeu_space.views.framing`), registered into the canonical frame and
  stretched to 288 x 96. The printed coordinate labels and the reference product are not in
  the view, so no box can land on them, and the target boxes are expressed in the view's pixels
  (:func:`qeu_space.modeling.families.florence2.canonical_target`).
* **One image token per pin.** DaViT's four stages (strides 4, 2, 2, 2) turn 288 x 96 into a
  9 x 3 grid of tokens (plus Florence-2's pooled token): every pin is centred in its own token
  at every position.
* **Factorised token positions.** Florence-2 adds a learned 2-D position embedding to the image
  tokens whose first half is indexed by the token column and second half by the token row; they
  start as sine-cosine tables here, so "column 2" reads the same in every row and a box
  coordinate learned on ``D2`` is available for ``U2``.

Example:
    >>> path = build_inspection_od("/tmp/inspection-od-init")
    >>> from qeu_space.modeling.loading import load_model
    >>> load_model(path).family
    'florence2'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Florence2Config, Florence2ForConditionalGeneration, Florence2Processor
from transformers.models.clip import CLIPImageProcessorPil

from qeu_space.modeling.local_tokenizer import florence2_tokenizer
from qeu_space.modeling.tiny_models import FLORENCE2_POST_PROCESSOR_CONFIG

#: DaViT's total stride with the default patch strides (4, 2, 2, 2).
STRIDE = 32


@dataclass(frozen=True)
class InspectionODConfig:
    """Sizes of the shipped model; the defaults are what ``models/inspection-od-base`` uses."""

    width: int = field(default=288, metadata={"help": "view width after resizing (9 columns)"})
    height: int = field(default=96, metadata={"help": "view height after resizing (3 rows)"})
    framing: str | None = field(
        default="composite_test_grid",
        metadata={"help": "view of the composite (qeu_space.views.framing); None: the whole image"},
    )
    vision_dims: tuple[int, int, int, int] = field(
        default=(24, 48, 96, 128), metadata={"help": "DaViT channels per stage"}
    )
    vision_depths: tuple[int, int, int, int] = field(
        default=(1, 1, 2, 1), metadata={"help": "DaViT blocks per stage"}
    )
    window_size: int = field(default=3, metadata={"help": "DaViT spatial attention window"})
    text_hidden: int = field(default=128, metadata={"help": "BART d_model (= projection dim)"})
    text_layers: int = field(default=2, metadata={"help": "BART encoder and decoder layers"})
    text_heads: int = 4
    text_ffn: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.width % STRIDE or self.height % STRIDE:
            raise ValueError(
                f"view {self.width} x {self.height} must be multiples of DaViT's stride {STRIDE}"
            )
        if self.text_hidden % self.text_heads:
            raise ValueError(
                f"text_hidden {self.text_hidden} is not divisible by {self.text_heads} heads"
            )
        if any(dim % heads for dim, heads in zip(self.vision_dims, self.vision_heads, strict=True)):
            raise ValueError(
                f"vision_dims {self.vision_dims} must be divisible by their heads "
                f"{self.vision_heads} (one head per 32 channels)"
            )

    @property
    def vision_heads(self) -> tuple[int, ...]:
        """Attention heads (and channel groups) per DaViT stage: one per 32 channels."""
        return tuple(max(1, dim // 32) for dim in self.vision_dims)

    @property
    def token_grid(self) -> tuple[int, int]:
        """``(columns, rows)`` of image tokens out of the vision tower."""
        return self.width // STRIDE, self.height // STRIDE

    @property
    def image_tokens(self) -> int:
        """Image tokens the encoder reads: the grid plus Florence-2's pooled token."""
        columns, rows = self.token_grid
        return columns * rows + 1


def sincos_1d(n: int, dim: int) -> torch.Tensor:
    """``(n, dim)`` sine-cosine table (the transformer's, base 100 for a short axis)."""
    half = dim // 2
    freq = 1.0 / (100.0 ** (torch.arange(half, dtype=torch.float32) / max(half, 1)))
    angle = torch.arange(n, dtype=torch.float32)[:, None] * freq[None, :]
    table = torch.cat([angle.sin(), angle.cos()], dim=1)
    return torch.nn.functional.pad(table, (0, dim - table.shape[1]))


def build_inspection_od(out_dir: str | Path, config: InspectionODConfig | None = None) -> Path:
    """Write the untrained ``<OD>`` model (weights, config, processor, tokenizer) to ``out_dir``.

    Returns:
        ``out_dir`` as a ``Path``: a base for ``python -m qeu_space.train --task od
        --full-finetune``.
    """
    config = config or InspectionODConfig()
    tokenizer = florence2_tokenizer()
    image_processor = CLIPImageProcessorPil(
        size={"height": config.height, "width": config.width},
        do_center_crop=False,
        crop_size={"height": config.height, "width": config.width},
        image_seq_length=config.image_tokens,
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
    dims = list(config.vision_dims)
    heads = list(config.vision_heads)
    model_config = Florence2Config(
        vision_config={
            "depths": list(config.vision_depths),
            "embed_dim": dims,
            "num_heads": heads,
            "num_groups": heads,
            "window_size": config.window_size,
            "projection_dim": config.text_hidden,
            "max_position_embeddings": max(config.token_grid) + 1,
            "max_temporal_embeddings": 4,
            "drop_path_rate": 0.0,
        },
        text_config={
            "model_type": "bart",
            "vocab_size": len(tokenizer),
            "d_model": config.text_hidden,
            "encoder_layers": config.text_layers,
            "decoder_layers": config.text_layers,
            "encoder_attention_heads": config.text_heads,
            "decoder_attention_heads": config.text_heads,
            "encoder_ffn_dim": config.text_ffn,
            "decoder_ffn_dim": config.text_ffn,
            "max_position_embeddings": 128,
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "activation_dropout": 0.0,
            "decoder_start_token_id": tokenizer.eos_token_id,
            "forced_eos_token_id": tokenizer.eos_token_id,
            **ids,
        },
        image_token_id=tokenizer.image_token_id,
        qeu_framing=config.framing,
    )
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = Florence2ForConditionalGeneration(model_config)
    position = model.model.multi_modal_projector.image_position_embed
    with torch.no_grad():
        for table in (position.column_embeddings, position.row_embeddings):
            n, dim = table.weight.shape
            table.weight.copy_(sincos_1d(n, dim) / math.sqrt(2.0))
    model.generation_config.update(
        decoder_start_token_id=tokenizer.eos_token_id, num_beams=1, do_sample=False, **ids
    )
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
