"""Looks: the renderer's scene parts (housing, pins and sockets, light, camera, bench, defects),
each a seeded choice, composed by a :class:`Look` drawn from a named family.

See :mod:`dataset_tools.looks.look` for the families (and which are held out) and
:mod:`dataset_tools.looks.scene` for how a look becomes pixels.
"""

from __future__ import annotations

from dataset_tools.looks.look import (
    CLASSIC,
    HELD_OUT_FAMILIES,
    LOOK_CHOICES,
    LOOK_FAMILIES,
    TRAIN_FAMILIES,
    Look,
    LookFamily,
    Product,
    draw_look,
    resolve_looks,
)


def gallery_samples(seed: int = 0, size: int = 448, families: tuple[str, ...] | None = None):
    """``[(family, Sample)]``: one sample of each look family (reference over a test with a bent,
    a missing and a short pin), deterministic given ``seed``
    (:func:`dataset_tools.looks.gallery.gallery_samples`)."""
    from dataset_tools.looks.gallery import gallery_samples as samples

    return samples(seed, size, families)


__all__ = [
    "gallery_samples",
    "CLASSIC",
    "HELD_OUT_FAMILIES",
    "LOOK_CHOICES",
    "LOOK_FAMILIES",
    "TRAIN_FAMILIES",
    "Look",
    "LookFamily",
    "Product",
    "draw_look",
    "resolve_looks",
]
