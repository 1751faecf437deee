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

import hashlib
from collections import OrderedDict
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

from qeu_space.modeling.answer_grammar import answer_constraint, logits_processors, od_constraint
from qeu_space.views.framing import FRAMINGS, View, frame


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
        return logits_processors(answer_constraint(tokenizer), config, tokenizer, max_new_tokens)


class QEUFlorence2Processor(Florence2Processor):
    """``Florence2Processor`` on the model's view of each composite (reference on top, test below).

    Images are registered and framed as ``qeu_framing`` names (``composite_test_grid``: the pin
    grid of the product under inspection) before the image processor runs. The ``<OD>`` boxes
    the model writes are in that view's frame, so the processor remembers each image's view
    (by pixel digest, the last :data:`VIEWS_KEPT`) and :meth:`post_process_generation` maps them
    back: ``post_process_generation(text, task="<OD>", image_size=image.size)`` gives boxes in
    the pixels of the image that was passed, as with the plain ``Florence2Processor``. An image
    without a connector raises ``NoConnectorError`` ("no connector found (...)"), never a guess.

    Example:
        >>> inputs = processor(text="<OD>", images=image, return_tensors="pt")
        >>> text = processor.batch_decode(model.generate(**inputs), skip_special_tokens=False)[0]
        >>> found = processor.post_process_generation(text, task="<OD>", image_size=image.size)
        >>> found["<OD>"]["bboxes"], found["<OD>"]["labels"]  # boxes in ``image``'s pixels
    """

    #: How many images' views a processor remembers for :meth:`post_process_generation`.
    VIEWS_KEPT = 64

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
        self._views: OrderedDict[tuple, View] = OrderedDict()
        self._last_call: list[tuple] = []
        super().__init__(
            image_processor,
            tokenizer,
            num_additional_image_tokens=num_additional_image_tokens,
            post_processor_config=post_processor_config,
            **kwargs,
        )

    def framed(self, image: Any) -> View:
        """``image`` (a square composite) registered and framed: the view and its way back.

        Remembered by pixel digest, so the boxes said about it map back without a second search.
        """
        pil = _as_pil(image)
        key = _image_key(pil)
        if key in self._views:
            self._views.move_to_end(key)
        else:
            self._views[key] = frame(pil, self.qeu_framing, source="composite")
            while len(self._views) > self.VIEWS_KEPT:
                self._views.popitem(last=False)
        return self._views[key]

    def view(self, image: Any) -> Image.Image:
        """What the model reads of ``image`` (a square composite): registered, then framed."""
        return self.framed(image).image

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> Any:
        if images is not None:
            called: list[tuple] = []

            def view(image: Image.Image) -> Image.Image:
                framed = self.framed(image)
                called.append(_image_key(image))
                return framed.image

            images = _map_images(images, view)
            self._last_call = called
        return super().__call__(images=images, text=text, **kwargs)

    def od_grammar(self, model: Any, max_new_tokens: int = 64) -> LogitsProcessorList:
        """``model.generate(..., logits_processor=processor.od_grammar(model))``: only known
        kinds, each with four ``<loc_N>`` tokens, as the Space generates (fresh per call)."""
        config, tokenizer = model.generation_config, self.tokenizer
        return logits_processors(od_constraint(tokenizer), config, tokenizer, max_new_tokens)

    def post_process_generation(
        self,
        text: str | None = None,
        sequence: Any = None,
        task: str | None = None,
        image_size: tuple[int, int] | None = None,
        image: Any = None,
    ) -> dict[str, Any]:
        """Florence-2's parsed answer with its boxes in the pixels of the image passed in.

        Args:
            text / sequence / task: as ``Florence2Processor.post_process_generation``.
            image_size: ``(width, height)`` of the image given to the processor's last call
                (``image.size``), whose registration maps the boxes back.
            image: the image itself instead (needed when the last call held several different
                images of one size, or to post-process an earlier call's output).

        Raises:
            ValueError: no image of that size went through the last call (pass ``image=``), or
                the last call held several of that size.
        """
        source = self._source_view(image_size, image)
        done = super().post_process_generation(
            text=text, sequence=sequence, task=task, image_size=source.image.size
        )
        answer = done[task]
        if isinstance(answer, dict):
            for key in ("bboxes",):
                if key in answer:
                    answer[key] = [list(source.box_to_source(tuple(b))) for b in answer[key]]
            for key in ("polygons", "quad_boxes"):
                if answer.get(key):
                    raise ValueError(f"{key} answers cannot be mapped back; ask <OD> for boxes")
        return done

    def _source_view(self, image_size: Any, image: Any) -> View:
        if image is not None:
            view = self.framed(image)
            if image_size is not None and tuple(image_size) != view.source_size:
                raise ValueError(
                    f"image_size {tuple(image_size)} is not the size of image "
                    f"{view.source_size}: pass one of them"
                )
            return view
        if image_size is None:
            raise ValueError(
                "post_process_generation needs image_size=image.size (the image passed to the "
                "processor) or image=image, to put the boxes on that image"
            )
        size = (int(image_size[0]), int(image_size[1]))
        keys = dict.fromkeys(k for k in self._last_call if self._views.get(k) is not None)
        matching = [k for k in keys if self._views[k].source_size == size]
        if len(matching) == 1:
            return self._views[matching[0]]
        if not matching:
            raise ValueError(
                f"no {size[0]} x {size[1]} image went through this processor's last call: give "
                "image_size=image.size of the image you passed (not of its view), or image=image"
            )
        raise ValueError(
            f"the last call held {len(matching)} different {size[0]} x {size[1]} images: pass "
            "image=image to say which one the text is about"
        )


def _image_key(image: Image.Image) -> tuple:
    """What identifies an image's pixels (size, mode and a digest): never ``id()``, which
    Python reuses once an image is freed."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()
    return (image.size, image.mode, digest)
