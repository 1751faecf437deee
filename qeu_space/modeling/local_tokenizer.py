"""Small tokenizers built on this machine, for the tiny test models (no Hub download).

Each family's processor expects its own special tokens: Florence-2 reads ``<loc_0>``..``<loc_999>``
back into boxes and swaps ``<image>`` placeholders for image features; Idefics3 / SmolVLM frame an
image with ``<fake_token_around_image>``, ``<global-img>`` and ``<row_i_col_j>`` and ends a turn
with ``<end_of_utterance>``. The ordinary text vocabulary is a byte-level BPE trained with the
``tokenizers`` library on the words the project actually speaks (the inspection question, every
canonical answer, the OD labels), so any string still encodes (bytes fall back) while our answers
take few tokens, which keeps the tiny models fast.

Example:
    >>> tok = florence2_tokenizer()
    >>> tok.convert_ids_to_tokens(tok("bent pin<loc_3>").input_ids)
    ['<s>', 'bent', 'Ġpin', '<loc_3>', '</s>']
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from qeu_space.vocabulary import (
    ALL_POSITIONS,
    INSPECTION_QUESTION,
    LOC_BINS,
    OD_PROMPT,
    PASSED_ANSWER,
    DefectKind,
    Direction,
    Finding,
    format_answer,
)

#: What ``Florence2Processor`` turns a task token into before tokenizing (its own table).
FLORENCE2_TASK_PROMPTS: dict[str, str] = {
    OD_PROMPT: "Locate the objects with category name in the image.",
    "<CAPTION>": "What does the image describe?",
    "<DETAILED_CAPTION>": "Describe in detail what is shown in the image.",
    "<OCR>": "What is the text in the image?",
    "<REGION_PROPOSAL>": "Locate the region proposals in the image.",
}
#: Florence-2's tag tokens (as in the released tokenizer), besides the location bins.
FLORENCE2_TAG_TOKENS: tuple[str, ...] = (
    "<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>",
    "<grounding>", "</grounding>", "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>",
    "<proposal>", "</proposal>", "<poly>", "</poly>", "<and>",
)  # fmt: skip
FLORENCE2_LOC_TOKENS: tuple[str, ...] = tuple(f"<loc_{i}>" for i in range(LOC_BINS))

IDEFICS3_IMAGE_TOKENS: tuple[str, ...] = (
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
)
END_OF_UTTERANCE = "<end_of_utterance>"
#: SmolVLM's chat template: ``User:<image>question<end_of_utterance>\nAssistant: answer...``.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def corpus_texts() -> list[str]:
    """Texts our models read and write: question, prompts, every one-defect answer, OD labels."""
    texts = [INSPECTION_QUESTION, PASSED_ANSWER, *FLORENCE2_TASK_PROMPTS.values()]
    texts += ["User:", "Assistant:", *(kind.value for kind in DefectKind)]
    for position in ALL_POSITIONS:
        for kind in DefectKind:
            directions: Iterable[Direction | None] = Direction if kind.has_direction else (None,)
            texts += [format_answer([Finding(position, kind, d)]) for d in directions]
    # Two-defect answers (plural form, the ``;`` separator) along the diagonal of the grid.
    pairs = zip(ALL_POSITIONS, ALL_POSITIONS[5:], strict=False)
    texts += [
        format_answer([Finding(a, "missing pin"), Finding(b, "bent pin", "up")]) for a, b in pairs
    ]
    # As a chat template renders them, so BPE learns the word after "Assistant:" with its space.
    return texts + [f"Assistant: {t}" for t in texts if t[0] in "PD"]


def train_bpe(texts: Iterable[str], *, vocab_size: int, special_tokens: Iterable[str]) -> Tokenizer:
    """A byte-level BPE (GPT-2 style pre-tokenizer and decoder) trained on ``texts``.

    ``special_tokens`` take the first ids in the given order.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_repeat(list(texts)), trainer)
    return tokenizer


def _repeat(texts: list[str]) -> Iterator[str]:
    # BPE merges need pair counts above 1; a few passes make every corpus word a candidate.
    for _ in range(3):
        yield from texts


def florence2_tokenizer(
    texts: Iterable[str] | None = None, *, vocab_size: int = 600
) -> PreTrainedTokenizerFast:
    """A BART-like tokenizer for a tiny Florence-2: ``<s> text </s>``, loc bins, ``<image>``.

    The post-processor adds ``<s>``/``</s>`` like BART's, so tokenizing a ``bbox_str`` gives the
    decoder target Florence-2 is trained on; ``<image>`` is the processor's ``image_token``.
    """
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    backend = train_bpe(
        texts if texts is not None else corpus_texts(),
        vocab_size=vocab_size,
        special_tokens=specials,
    )
    backend.post_processor = processors.RobertaProcessing(
        sep=("</s>", backend.token_to_id("</s>")),
        cls_token=("<s>", backend.token_to_id("<s>")),
        add_prefix_space=False,
        trim_offsets=False,
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.add_tokens([*FLORENCE2_TAG_TOKENS, *FLORENCE2_LOC_TOKENS], special_tokens=True)
    return tokenizer


def idefics3_tokenizer(
    texts: Iterable[str] | None = None, *, vocab_size: int = 600
) -> PreTrainedTokenizerFast:
    """A tokenizer for a tiny Idefics3 / SmolVLM with its image-framing and turn tokens.

    The chat template writes the beginning-of-text token itself, so the tokenizer adds none
    (as SmolVLM's): a processed prompt starts with exactly one ``<|im_start|>``.
    """
    specials = ["<|im_start|>", "<|endoftext|>", "<pad>", "<unk>"]
    backend = train_bpe(
        texts if texts is not None else corpus_texts(),
        vocab_size=vocab_size,
        special_tokens=specials,
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tokenizer.add_tokens([*IDEFICS3_IMAGE_TOKENS, END_OF_UTTERANCE], special_tokens=True)
    tokenizer.chat_template = IDEFICS3_CHAT_TEMPLATE
    return tokenizer
