"""A photometric draw per training row of the chat VLM (``--photometric``): no brightness cue.

Issue 19: the short-pin adapter learned "short = dimmer" (a gamma of 0.6 / 1.6 on the test shot
took its short-pin recall from 0.92 to 0.10 / 0.33). With ``--photometric`` every training row's
view (the image the model reads, after registration and framing) gets its own gamma (log-uniform
0.5-1.8), gain (log-uniform 0.6-1.5) and per-channel white balance (+-15 %), so only a pin's
shape (a short pin's sunk face and shadow ring) tells its kind. The draw is the pair ViT's
(:func:`qeu_space.training.vit_pair.relight`), from a generator seeded by the run's ``--seed``;
validation and evaluation batches are never relit.

The view is relit, not the composite: registration runs on the composite as shot (so its
remembered results are reused every epoch) and is not what is trained here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from qeu_space.training.vit_pair import relight


@dataclass(frozen=True)
class PhotometricRanges:
    """Ranges of the draw: gamma and gain log-uniform, white balance a gain of ``1 +- this`` per
    channel. Gamma 0.5-1.8 covers the test gammas of the issue (0.6, 1.6) with room on each side.
    """

    gamma: tuple[float, float] = (0.5, 1.8)
    gain: tuple[float, float] = (0.6, 1.5)
    white_balance: float = 0.15

    def __post_init__(self) -> None:
        for name in ("gamma", "gain"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(
                    f"photometric {name} range must be 0 < low <= high, got {low, high}"
                )
        if not 0 <= self.white_balance < 1:
            raise ValueError(
                f"photometric white balance must be in [0, 1), got {self.white_balance}"
            )


@dataclass
class Photometric:
    """Callable ``view -> view`` relighting one PIL image at a time with the next seeded draw.

    One generator per training collator: the draws follow the order rows are collated in, so a
    run with the same ``--seed`` (and data order) relights every row the same way. With
    ``--dataloader-workers`` above 0 each worker holds a copy of the generator (draws repeat
    across workers; the runs of this release used 0).
    """

    seed: int
    ranges: PhotometricRanges = field(default_factory=PhotometricRanges)

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(int(self.seed))

    def __call__(self, image: Image.Image) -> Image.Image:
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())
        x = pixels.permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
        r = self.ranges
        lit = relight(x, self.generator, gamma=r.gamma, gain=r.gain, white_balance=r.white_balance)
        out = (lit[0].permute(1, 2, 0) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
        return Image.fromarray(out, "RGB")
