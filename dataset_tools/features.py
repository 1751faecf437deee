"""The ``datasets`` features of the three configs (``qa``, ``od``, ``cls``): the schema every shard,
card and in-memory ``Dataset`` of a build shares.

Apart from the row makers (:mod:`dataset_tools.builders`), which need none of ``datasets``: a
worker process gets the Arrow schema with each task, and the command line answers ``--help`` and
wrong arguments before ``datasets`` (about 1.5 CPU seconds) loads.
"""

from __future__ import annotations

import datasets
from datasets import ClassLabel, Features, List, Value

from dataset_tools.builders import OD_CATEGORIES
from dataset_tools.sampling import Config
from qeu_space.vocabulary import (
    CLASS_LABELS,
    DEFAULT_KINDS,
    DefectKind,
    class_labels,
    od_categories,
)

_FINDING = {
    "position": Value("string"),
    "kind": Value("string"),
    "direction": Value("string"),
    "box": List(Value("float32"), length=4),
}
_MESSAGE = {
    "role": Value("string"),
    "content": List({"type": Value("string"), "text": Value("string")}),
}
"""A chat turn as TRL's VLM SFT reads it: ``content`` blocks ``{"type": "image"}`` / ``"text"``."""
_COMMON = {
    "id": Value("string"),
    "image": datasets.Image(),
    "housing": Value("string"),
    "pins": Value("string"),
    "labels_drawn": Value("bool"),
    "variant": Value("string"),
    "look": Value("string"),
}
FEATURES: dict[Config, Features] = {
    "qa": Features(
        {
            **_COMMON,
            "question": Value("string"),
            "answer": Value("string"),
            "findings": List(_FINDING),
            "verdict": Value("string"),
            "images": List(datasets.Image()),
            "messages": List(_MESSAGE),
        }
    ),
    "od": Features(
        {
            **_COMMON,
            "prompt": Value("string"),
            "bbox_str": Value("string"),
            "objects": {
                "bbox": List(List(Value("float32"), length=4)),
                "category": List(ClassLabel(names=list(OD_CATEGORIES))),
            },
        }
    ),
    "cls": Features(
        {**_COMMON, "label": ClassLabel(names=list(CLASS_LABELS)), "findings": List(_FINDING)}
    ),
}


def features(config: Config, kinds: tuple[DefectKind, ...] = DEFAULT_KINDS) -> Features:
    """The features of ``config`` rows showing ``kinds``: :data:`FEATURES` unless an opt-in kind
    adds a class (``cls`` with ``short pin`` has ``OK``, ``BENDNG``, ``NUKENG``, ``SHORTNG``;
    ``od`` categories gain ``short pin``)."""
    if config == "cls" and class_labels(kinds) != CLASS_LABELS:
        return Features({**FEATURES["cls"], "label": ClassLabel(names=list(class_labels(kinds)))})
    if config == "od" and od_categories(kinds) != OD_CATEGORIES:
        objects = {**FEATURES["od"]["objects"]}
        objects["category"] = List(ClassLabel(names=list(od_categories(kinds))))
        return Features({**FEATURES["od"], "objects": objects})
    return FEATURES[config]
