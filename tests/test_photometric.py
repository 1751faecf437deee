"""``--photometric``: each chat-VLM training view relit by its own seeded draw (issue 19)."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_tools.builders import BuildConfig, make_row
from qeu_space.modeling.families import chat_vlm, vit
from qeu_space.modeling.loading import load_model
from qeu_space.train import build_parser, config_from_args
from qeu_space.training.data import collators
from qeu_space.training.photometric import Photometric, PhotometricRanges

BASE = Path(__file__).resolve().parent.parent / "models" / "inspection-vlm-base"


@cache
def rows() -> list[dict]:
    """Two ``qa`` rows of a training look (composites, question, answer)."""
    cfg = BuildConfig("qa", num=2, seed=5, looks="grey-gold", kinds=("bent", "missing", "short"))
    out = []
    for i in range(2):
        row = make_row(cfg, "train", i)
        out.append({**row, "image": Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")})
    return out


@pytest.fixture(scope="module")
def loaded():
    return load_model(str(BASE), device="cpu")


def pixels(collator) -> torch.Tensor:
    return collator(rows())["pixel_values"]


def test_training_views_are_relit_and_evaluation_views_are_not(loaded):
    evaluation, training = collators(chat_vlm, loaded.processor, loaded.model.config, 3,
                                     photometric=True)  # fmt: skip
    plain_eval, plain_train = collators(chat_vlm, loaded.processor, loaded.model.config, 3)
    assert plain_train is None  # without the flag the chat VLM has no training augmentation
    as_read = pixels(evaluation)
    assert torch.equal(as_read, pixels(plain_eval))
    relit = pixels(training)
    assert relit.shape == as_read.shape
    assert float((relit - as_read).abs().mean()) > 0.02  # the draw reaches what the model reads
    # the labels (what is learned) are untouched
    assert torch.equal(training(rows())["labels"], evaluation(rows())["labels"])


def test_the_draw_is_seeded(loaded):
    def run(seed: int) -> list[torch.Tensor]:
        _, training = collators(chat_vlm, loaded.processor, loaded.model.config, seed,
                                photometric=True)  # fmt: skip
        return [pixels(training) for _ in range(2)]

    first, again, other = run(7), run(7), run(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # each batch draws anew
    assert not torch.equal(first[0], other[0])


def test_draws_span_gamma_gain_and_white_balance():
    grey = Image.new("RGB", (24, 8), (128, 128, 128))
    relight = Photometric(0)
    out = np.stack([np.asarray(relight(grey), np.float32).mean((0, 1)) for _ in range(300)])
    level = out.mean(1)
    # 128 under gamma 0.5-1.8 and gain 0.6-1.5: from about 0.17 * 255 to the top
    assert level.min() < 70 and level.max() > 190
    channel_spread = (out.max(1) - out.min(1)) / np.maximum(level, 1)
    assert np.median(channel_spread) > 0.05  # a colour cast per row, not grey
    flat = Photometric(0, PhotometricRanges(gamma=(1.0, 1.0), gain=(1.0, 1.0), white_balance=0))
    assert np.array_equal(np.asarray(flat(grey)), np.asarray(grey))


@pytest.mark.parametrize(
    ("ranges", "word"),
    [
        ({"gamma": (0.0, 1.0)}, "gamma"),
        ({"gain": (1.5, 0.6)}, "gain"),
        ({"white_balance": 1.0}, "white balance"),
    ],
)
def test_bad_ranges_are_refused_in_one_line(ranges, word):
    with pytest.raises(ValueError, match=word):
        PhotometricRanges(**ranges)


def test_a_family_that_cannot_relight_is_refused_in_one_line():
    config = vit.new_model("vit-test-tiny").model.config
    with pytest.raises(ValueError, match="drop --photometric"):
        collators(vit, None, config, 0, photometric=True)


def test_the_flag_reaches_the_run_record():
    args = build_parser().parse_args(
        ["--task", "qa", "--base", "b", "--dataset", "d", "--out", "o", "--photometric"]
    )
    config = config_from_args(args)
    assert config.photometric and config.training_args()["photometric"] is True
    plain = build_parser().parse_args(
        ["--task", "qa", "--base", "b", "--dataset", "d", "--out", "o"]
    )
    assert config_from_args(plain).photometric is False
