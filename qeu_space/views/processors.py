"""transformers processors that read a model's view: register, frame, then preprocess as usual.

Every model of this project reads the canonical frame (:mod:`.registration`, :mod:`.framing`), so
a plain ``transformers`` user who resizes the whole image gets confident wrong answers. These
classes put the view inside the processor, the way Hub models with their own preprocessing do:
a model folder ships them as one self-contained file, ``processing_qeu.py``, bundled from this
module and the modules it imports (:mod:`qeu_space.hub.bundle`), and names them in its processor
configs' ``auto_map``, so ``AutoImageProcessor`` / ``AutoProcessor`` with
``trust_remote_code=True`` load them. Without ``trust_remote_code`` transformers refuses the
folder (the configs name only these classes), so the plain path fails loudly instead of
answering.

Inside this project the library frames the image itself (it keeps the :class:`~.framing.View`
to map boxes and heatmaps back) and loads the standard class each of these extends
(:data:`qeu_space.views.shipped.STANDARD_CLASSES`).

Example:
    >>> from transformers import AutoImageProcessor, AutoModelForImageClassification
    >>> folder = "models/vit-inspector"
    >>> processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    >>> model = AutoModelForImageClassification.from_pretrained(folder)
    >>> logits = model(**processor(images=connector, return_tensors="pt")).logits
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image
from transformers import (
    Florence2Processor,
    Idefics3Processor,
    LogitsProcessorList,
    ViTImageProcessorPil,
)
from transformers.image_transforms import to_pil_image

from qeu_space.modeling.answer_grammar import answer_constraint, logits_processor, od_constraint
from qeu_space.views.framing import FRAMINGS, frame


def _as_pil(image: Any) -> Image.Image:
    """A PIL RGB image from what transformers accepts (PIL, numpy or torch, HWC or CHW)."""
    if not isinstance(image, Image.Image):
        image = to_pil_image(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def _map_images(images: Any, fn: Callable[[Image.Image], Image.Image]) -> Any:
    """``fn`` over every image of a single image, a list, or a list of lists (batch of samples)."""
    if isinstance(images, list | tuple):
        return [_map_images(item, fn) for item in images]
    return fn(_as_pil(images))


def _check_framing(framing: str | None) -> str | None:
    if framing is not None and framing not in FRAMINGS:
        raise ValueError(f"unknown qeu_framing {framing!r} (known: {', '.join(FRAMINGS)})")
    return framing


class QEUViTImageProcessor(ViTImageProcessorPil):
    """``ViTImageProcessorPil`` on the model's view of one connector image.

    Each image is registered into the canonical frame and cropped to what ``qeu_framing`` names
    (``connector_grid``: the 3 x 9 pin cells) before the resize and normalisation. An image
    without a connector raises ``NoConnectorError`` ("no connector found (...)"), never a guess.
    """

    def __init__(self, qeu_framing: str | None = "connector_grid", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.qeu_framing = _check_framing(qeu_framing)

    def view(self, image: Any) -> Image.Image:
        """What the model reads of ``image`` (one connector): registered, then framed."""
        return frame(_as_pil(image), self.qeu_framing, source="connector").image

    def preprocess(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        return super().preprocess(_map_images(images, self.view), *args, **kwargs)


class QEUIdefics3Processor(Idefics3Processor):
    """``Idefics3Processor`` on the model's view of each composite (reference on top, test below).

    Images are registered (both products) and framed as ``qeu_framing`` names
    (``composite_test_grid``: the pin grid of the product under inspection) before the image
    processor runs; the chat template and tokenizer are Idefics3's. An image without a
    connector raises ``NoConnectorError`` ("no connector found (...)"), never a guess.
    """

    def __init__(
        self,
        image_processor: Any,
        tokenizer: Any = None,
        image_seq_len: int = 169,
        chat_template: str | None = None,
        qeu_framing: str | None = "composite_test_grid",
        **kwargs: Any,
    ) -> None:
        self.qeu_framing = _check_framing(qeu_framing)
        super().__init__(
            image_processor,
            tokenizer,
            image_seq_len=image_seq_len,
            chat_template=chat_template,
            **kwargs,
        )

    def view(self, image: Any) -> Image.Image:
        """What the model reads of ``image`` (a square composite): registered, then framed."""
        return frame(_as_pil(image), self.qeu_framing, source="composite").image

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> Any:
        if images is not None:
            images = _map_images(images, self.view)
        return super().__call__(images=images, text=text, **kwargs)

    def answer_grammar(self, model: Any, max_new_tokens: int = 64) -> LogitsProcessorList:
        """``model.generate(..., logits_processor=processor.answer_grammar(model))``: answers in
        the canonical form only, as the Space generates them (a fresh one per ``generate``)."""
        config, tokenizer = model.generation_config, self.tokenizer
        hook = logits_processor(answer_constraint(tokenizer), config, tokenizer, max_new_tokens)
        return LogitsProcessorList([hook])


class QEUFlorence2Processor(Florence2Processor):
    """``Florence2Processor`` on the model's view of each composite (reference on top, test below).

    Images are registered and framed as ``qeu_framing`` names (``composite_test_grid``: the pin
    grid of the product under inspection) before the image processor runs. The ``<OD>`` boxes
    the model writes are then in that view's frame: ``post_process_generation(...,
    image_size=processor.view(image).size)`` gives them in the view's pixels (the project's
    ``boxes_in_image`` maps them back onto the photograph). An image without a connector raises
    ``NoConnectorError`` ("no connector found (...)"), never a guess.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        num_additional_image_tokens: int = 0,
        post_processor_config: dict | None = None,
        qeu_framing: str | None = "composite_test_grid",
        **kwargs: Any,
    ) -> None:
        # named, not in **kwargs: transformers passes a processor only the arguments it names
        self.qeu_framing = _check_framing(qeu_framing)
        super().__init__(
            image_processor,
            tokenizer,
            num_additional_image_tokens=num_additional_image_tokens,
            post_processor_config=post_processor_config,
            **kwargs,
        )

    def view(self, image: Any) -> Image.Image:
        """What the model reads of ``image`` (a square composite): registered, then framed."""
        return frame(_as_pil(image), self.qeu_framing, source="composite").image

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> Any:
        if images is not None:
            images = _map_images(images, self.view)
        return super().__call__(images=images, text=text, **kwargs)

    def od_grammar(self, model: Any, max_new_tokens: int = 64) -> LogitsProcessorList:
        """``model.generate(..., logits_processor=processor.od_grammar(model))``: only known
        kinds, each with four ``<loc_N>`` tokens, as the Space generates (fresh per call)."""
        config, tokenizer = model.generation_config, self.tokenizer
        hook = logits_processor(od_constraint(tokenizer), config, tokenizer, max_new_tokens)
        return LogitsProcessorList([hook])
