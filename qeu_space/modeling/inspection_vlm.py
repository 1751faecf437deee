"""The shipped inspection VLM: a small Idefics3 (SmolVLM architecture) built here from a config.

Nobody offers a model pre-trained for connector inspection (the seeds' conclusion: "train our own
pre-trained model, then fine-tune it"), so the project builds one from scratch: this module writes
the untrained starting point (config, random weights, processor, tokenizer) as a folder that
``qeu_space.modeling.loading.load_model`` reads like any Hub model;
``python -m qeu_space.vision_pretrain`` teaches its vision tower what each pin is,
``python -m qeu_space.train --task qa --full-finetune`` then pre-trains it on the standard
housings, and a LoRA adapter adapts it to a housing it never saw.
``models/inspection-vlm-base/README.md`` has the exact commands.

Three choices make held-out pin positions (validation/test defects sit at positions never
defective in training) answerable:

* The model sees only the pin grid of the product under inspection (``qeu_framing:
  composite_test_grid``, :mod:`qeu_space.views.framing`), stretched to 288 x 288 with 32-pixel
  patches and no pixel shuffle: 9 x 9 image tokens, one column of tokens per pin column and three
  rows of tokens per pin row, so every pin is centred in its own token at every position.

* The tokenizer splits every digit into its own token and keeps the row letter apart from the
  column (``ĠC`` then ``4``), so ``C4`` is composed from a row and a column each seen in training.
* The vision tower's position embeddings start as a 2-D sine-cosine table whose first half encodes
  only the patch row and second half only the patch column, so "column 4" looks the same in every
  row and a readout learned on ``U4`` also reads ``C4``.

Example:
    >>> path = build_inspection_vlm("/tmp/inspection-vlm-init")
    >>> from qeu_space.modeling.loading import load_model
    >>> load_model(path).family
    'chat_vlm'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    PreTrainedTokenizerFast,
)
from transformers.models.idefics3 import Idefics3ImageProcessorPil

from qeu_space.modeling.local_tokenizer import (
    END_OF_UTTERANCE,
    IDEFICS3_CHAT_TEMPLATE,
    IDEFICS3_IMAGE_TOKENS,
    corpus_texts,
)
from qeu_space.vocabulary import INSPECTION_QUESTION

SPECIAL_TOKENS: tuple[str, ...] = ("<|im_start|>", "<|endoftext|>", "<pad>", "<unk>")


@dataclass(frozen=True)
class InspectionVLMConfig:
    """Sizes of the shipped model; the defaults are what ``models/inspection-vlm-base`` uses."""

    image_size: int = field(default=288, metadata={"help": "side the view is resized to"})
    patch_size: int = field(default=32, metadata={"help": "vision patch side in pixels"})
    scale_factor: int = field(default=1, metadata={"help": "pixel-shuffle factor (tokens / s^2)"})
    framing: str | None = field(
        default="composite_test_grid",
        metadata={"help": "view of the composite (qeu_space.views.framing); None: the whole image"},
    )
    vision_hidden: int = 96
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 192
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    text_intermediate: int = 256
    vocab_size: int = field(default=480, metadata={"help": "BPE vocabulary before specials"})
    seed: int = 0

    def __post_init__(self) -> None:
        side = self.image_size // self.patch_size
        if self.image_size % self.patch_size or side % self.scale_factor:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size} "
                f"with a patch grid divisible by scale_factor {self.scale_factor}"
            )
        for hidden, heads in ((self.vision_hidden, self.vision_heads),
                              (self.text_hidden, self.text_heads)):  # fmt: skip
            if hidden % heads:
                raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        if self.vision_hidden % 4:
            raise ValueError(f"vision_hidden must be a multiple of 4, got {self.vision_hidden}")

    @property
    def image_tokens(self) -> int:
        """Image tokens the text model reads per image (after pixel shuffle)."""
        return (self.image_size // self.patch_size) ** 2 // self.scale_factor**2


def inspection_tokenizer(
    texts: Iterable[str] | None = None, *, vocab_size: int = 480
) -> PreTrainedTokenizerFast:
    """Byte-level BPE whose pre-tokenizer isolates every digit: ``U3`` is ``ĠU`` + ``3``.

    Special tokens, image-framing tokens and chat template are SmolVLM's (as
    :func:`qeu_space.modeling.local_tokenizer.idefics3_tokenizer`), so ``Idefics3Processor`` and the
    chat-VLM family use it unchanged.
    """
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The fixed question is weighted up so that it, too, becomes a few word tokens: the prompt is
    # read at every training step and every answer.
    corpus = list(texts) if texts is not None else [*corpus_texts(), *[INSPECTION_QUESTION] * 50]
    backend.train_from_iterator(corpus * 3, trainer)  # pair counts above 1 for every word
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=SPECIAL_TOKENS[0],
        eos_token=SPECIAL_TOKENS[1],
        pad_token=SPECIAL_TOKENS[2],
        unk_token=SPECIAL_TOKENS[3],
    )
    tokenizer.add_tokens([*IDEFICS3_IMAGE_TOKENS, END_OF_UTTERANCE], special_tokens=True)
    tokenizer.chat_template = IDEFICS3_CHAT_TEMPLATE
    return tokenizer


def sincos_2d(rows: int, cols: int, dim: int) -> torch.Tensor:
    """``(rows * cols, dim)`` table: first half of ``dim`` encodes the row, second the column.

    Raster order (row-major), as Idefics3's vision embeddings index patches.
    """
    quarter = dim // 4
    freq = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1)))

    def axis(n: int) -> torch.Tensor:
        angle = torch.arange(n, dtype=torch.float32)[:, None] * freq[None, :]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    y, x = axis(rows), axis(cols)
    table = torch.cat(
        [y[:, None, :].expand(rows, cols, -1), x[None, :, :].expand(rows, cols, -1)], dim=-1
    )
    return table.reshape(rows * cols, 4 * quarter)


def build_inspection_vlm(out_dir: str | Path, config: InspectionVLMConfig | None = None) -> Path:
    """Write the untrained inspection VLM (weights, config, processor, tokenizer) to ``out_dir``.

    Returns:
        ``out_dir`` as a ``Path``: a base for ``python -m qeu_space.train --full-finetune``.
    """
    config = config or InspectionVLMConfig()
    tokenizer = inspection_tokenizer(vocab_size=config.vocab_size)
    side = config.image_size
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": side},
        max_image_size={"longest_edge": side},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=config.image_tokens,
        chat_template=tokenizer.chat_template,
    )
    end_of_utterance = tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    model_config = Idefics3Config(
        vision_config={
            "hidden_size": config.vision_hidden,
            "intermediate_size": config.vision_intermediate,
            "num_hidden_layers": config.vision_layers,
            "num_attention_heads": config.vision_heads,
            "image_size": side,
            "patch_size": config.patch_size,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": config.text_hidden,
            "intermediate_size": config.text_intermediate,
            "num_hidden_layers": config.text_layers,
            "num_attention_heads": config.text_heads,
            "num_key_value_heads": config.text_heads,
            "max_position_embeddings": 256,
            "tie_word_embeddings": True,
            **ids,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=config.scale_factor,
        qeu_framing=config.framing,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = Idefics3ForConditionalGeneration(model_config)
    grid = side // config.patch_size
    embedding = model.model.vision_model.embeddings.position_embedding
    with torch.no_grad():
        embedding.weight.copy_(sincos_2d(grid, grid, config.vision_hidden))
    model.generation_config.update(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, end_of_utterance],
    )
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
