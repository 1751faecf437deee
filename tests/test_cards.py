"""Card metadata as the Hub checks it, the project's required keys, and the embedded cards.

The Hub refuses a card whose ``datasets`` / ``base_model`` name a local path; the project's
pre-push check (:mod:`qeu_space.hub.metadata`) and the stand-in's ``/api/validate-yaml``
(written separately, as the Hub's) must agree on every case of one table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qeu_space.hub.metadata import card_problems, front_matter, hub_problems, local_path_reason
from qeu_space.hub.metadata import main as metadata_main
from tests.hub_standin import _repo_id_errors

REPO = Path(__file__).resolve().parents[1]
EMBEDDED_CARDS = sorted((REPO / "models").glob("*/README.md"))

#: (name, is a Hub id): the names the two checks must judge alike.
NAMES = [
    ("me/qeu-connectors", True),
    ("HuggingFaceTB/SmolVLM-256M-Instruct", True),
    ("mnist", True),  # a canonical (owner-less) dataset
    ("qeu-inspection/inspection-vlm-base", True),
    ("/data/qeu", False),
    ("./data/qa", False),
    ("../models/inspection-vlm-base", False),
    ("~/data/qa", False),
    ("data/qa/train", False),
    ("C:\\data\\qa", False),
    ("me/bad--name", False),
    ("me/..", False),
    ("", False),
]


@pytest.mark.parametrize(("name", "is_hub_id"), NAMES)
@pytest.mark.parametrize("key", ["datasets", "base_model"])
def test_project_check_agrees_with_the_hub_standin(name: str, is_hub_id: bool, key: str) -> None:
    meta = {key: [name] if key == "datasets" else name}
    assert (local_path_reason(name) is None) is is_hub_id
    assert (hub_problems(meta) == []) is is_hub_id
    assert (_repo_id_errors(meta, "model") == []) is is_hub_id


@pytest.mark.parametrize(
    ("front", "expected"),
    [
        ("license: apache-2.0", []),
        ("license: Apache 2.0", ["not a Hub licence id"]),
        ("license: other", ["license_name and license_link"]),
        ("pipeline_tag: text-generation-of-pins", ["not a task"]),
        ("tags: connector", ["tags: must be a list"]),
        ("model-index: []", ["non-empty list"]),
        (
            "model-index:\n- name: x\n  results: [{task: {type: t}, metrics: []}]",
            ["dataset.type", "needs metrics"],
        ),
    ],
)
def test_hub_problems_table(front: str, expected: list[str]) -> None:
    problems = hub_problems(front_matter(f"---\n{front}\n---\n"))
    assert len(problems) == len(expected)
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem


def test_project_rules_need_every_key_and_intervals() -> None:
    adapter = "---\nlibrary_name: peft\n---\n# x\n"
    problems = card_problems(adapter)
    for key in ("license", "pipeline_tag", "tags", "datasets", "model-index", "base_model"):
        assert any(p.startswith(key) for p in problems), key
    no_interval = """---
license: apache-2.0
library_name: transformers
pipeline_tag: image-classification
tags: [x]
datasets: [me/d]
model-index:
- name: m
  results:
  - task: {type: image-classification}
    dataset: {type: me/d, name: d}
    metrics:
    - {type: accuracy, value: 0.9, args: {ci95: [0.95, 0.99]}}
---
"""
    assert card_problems(no_interval) == [
        "model-index: metric accuracy has no 95 % interval (args.ci95: [low, high])"
    ]  # an interval that does not hold the value is no interval


@pytest.mark.parametrize("card", EMBEDDED_CARDS, ids=lambda p: p.parent.name)
def test_embedded_cards_pass_the_check(card: Path) -> None:
    """The keys the lead keeps when rewriting the card bodies after retraining."""
    text = card.read_text(encoding="utf-8")
    assert card_problems(text) == []
    meta = front_matter(text)
    # Those that ship processing_qeu.py say so (the OD models read their view through qeu_space).
    ships_view = (card.parent / "processing_qeu.py").is_file()
    assert ("custom_code" in meta["tags"]) is ships_view
    if meta["library_name"] == "peft":
        base = json.loads((card.parent / "adapter_config.json").read_text())
        folder = Path(base["base_model_name_or_path"]).name
        assert meta["base_model"] == f"qeu-inspection/{folder}"


def test_space_readme_lists_hub_ids_only() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert card_problems(text, kind="space") == []
    assert _repo_id_errors(front_matter(text), "space") == []


def test_cli(tmp_path: Path, capsys) -> None:
    assert metadata_main([str(p) for p in EMBEDDED_CARDS]) == 0
    bad = tmp_path / "README.md"
    bad.write_text("---\nlicense: apache-2.0\ndatasets: [/data/qa]\n---\n")
    assert metadata_main([str(bad)]) == 1
    assert "'/data/qa' is not a Hub id (a file-system path)" in capsys.readouterr().err
