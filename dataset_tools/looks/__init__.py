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

__all__ = [
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
