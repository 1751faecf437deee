"""Models that carry their own view: ``processing_qeu.py`` in the folder, named by ``auto_map``.

The decisive test runs the card's plain-library snippet (:func:`qeu_space.hub.model_card.
plain_usage`) in a subprocess where ``qeu_space`` cannot be imported, on copies of the embedded
model folders, and checks its answers on freshly rendered rows against the truth and against the
project's own path. The same subprocess checks that the plain path *without*
``trust_remote_code`` stops with transformers' custom-code error instead of answering.
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dataset_tools.builders import BuildConfig, make_row
from qeu_space.hub.bundle import PROCESSOR_MODULES, PROCESSOR_ROOTS, bundle_source
from qeu_space.hub.model_card import plain_usage
from qeu_space.hub.processor import (
    PROCESSOR_FILE,
    ProcessorInstallError,
    check_processor,
    install_processor,
    main,
    processor_source,
)
from qeu_space.vocabulary import parse_answer

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
EMBEDDED = (
    "vit-inspector",
    "inspection-vlm-base",
    "inspection-vlm-lora",
    "inspection-vlm-short-pin",
    "inspection-od-base",
    "inspection-od-lora",
)
#: Rows rendered with this seed were never used to train, choose or stage the embedded models.
FRESH_SEED = 2027


# --------------------------------------------------------------------------- the bundled file


def test_bundle_is_self_contained_and_defines_the_processors() -> None:
    source = processor_source()
    tree = ast.parse(source)
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not any(name.split(".")[0] in ("qeu_space", "dataset_tools") for name in imported)
    assert {name.split(".")[0] for name in imported} <= {
        *sys.stdlib_module_names,
        "numpy",
        "PIL",
        "scipy",
        "skimage",
        "cv2",
        "torch",  # the answer grammar's logits processor (whoever runs the model has torch)
        "transformers",
    }
    defined = {n.name for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef)}
    assert {"QEUViTImageProcessor", "QEUIdefics3Processor", "NoConnectorError", "frame"} <= defined
    header = ast.get_docstring(tree, clean=False)
    assert source == bundle_source(PROCESSOR_MODULES, PROCESSOR_ROOTS, header=header)


@pytest.mark.parametrize("name", EMBEDDED)
def test_shipped_file_is_what_the_library_makes_now(name: str) -> None:
    """The drift check: after editing registration or framing, re-run the install step."""
    assert check_processor(MODELS / name) == [], (
        "regenerate with: python -m qeu_space.hub.processor install "
        + " ".join(f"models/{n}" for n in EMBEDDED)
    )


@pytest.mark.parametrize(
    ("modules", "roots", "message"),
    [
        (("bundle_a",), ("nowhere",), "defined in none"),
        (("bundle_a", "bundle_b"), ("uses_both",), "more than one bundled module"),
        (("bundle_a", "bundle_c"), ("shadow",), "an import also binds"),
    ],
)
def test_bundle_refuses_what_would_change_meaning(
    modules, roots, message, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bundle_a.py").write_text("import math\n\n\ndef helper():\n    return 1\n")
    (tmp_path / "bundle_b.py").write_text(
        "from bundle_a import helper as _h\n\n\ndef helper():\n    return 2\n\n\n"
        "def uses_both():\n    return helper()\n"
    )
    (tmp_path / "bundle_c.py").write_text(
        "from bundle_a import helper\n\nmath = 3\n\n\ndef shadow():\n    return math, helper()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=message):
        bundle_source(modules, roots)


# --------------------------------------------------------------------------- installing


def _copy_models(target: Path, names=EMBEDDED) -> Path:
    for name in names:
        shutil.copytree(MODELS / name, target / name)
    return target


def test_install_is_idempotent_and_touches_only_the_processor(tmp_path: Path) -> None:
    folder = _copy_models(tmp_path, ["vit-inspector"]) / "vit-inspector"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    installed = install_processor(folder)
    assert installed.class_name == "QEUViTImageProcessor"
    assert installed.framing == "connector_grid"
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before  # the embedded folder is already installed: nothing changes
    config = json.loads((folder / "preprocessor_config.json").read_text())
    assert config["auto_map"]["AutoImageProcessor"] == "processing_qeu.QEUViTImageProcessor"
    assert config["image_processor_type"] == "QEUViTImageProcessor"
    assert "auto_map" not in json.loads((folder / "config.json").read_text())


def test_install_gives_an_adapter_its_bases_processor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _copy_models(tmp_path, ["inspection-vlm-base", "inspection-vlm-lora"])
    adapter = tmp_path / "inspection-vlm-lora"
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", PROCESSOR_FILE):  # fmt: skip
        (adapter / name).unlink()
    with pytest.raises(ProcessorInstallError, match="--base"):
        install_processor(adapter)  # its config names models/inspection-vlm-base: not here
    installed = install_processor(adapter, base=tmp_path / "inspection-vlm-base")
    assert installed.class_name == "QEUIdefics3Processor"
    assert "tokenizer.json" in installed.written
    assert check_processor(adapter) == []


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no config.json"),
        ({"config.json": {"model_type": "llava"}}, "'llava' model"),
        ({"config.json": {"model_type": "florence2"}}, "no processor_config.json"),
        ({"config.json": {"model_type": "vit"}}, "no preprocessor_config.json"),
    ],
)
def test_install_refuses_what_it_cannot_ship(files, message, tmp_path: Path) -> None:
    for name, data in files.items():
        (tmp_path / name).write_text(json.dumps(data))
    with pytest.raises(ProcessorInstallError, match=message):
        install_processor(tmp_path)


def test_cli_check_reports_a_stale_file(tmp_path: Path, capsys) -> None:
    folder = _copy_models(tmp_path, ["vit-inspector"]) / "vit-inspector"
    assert main(["check", str(folder)]) == 0
    (folder / PROCESSOR_FILE).write_text("# edited by hand\n")
    assert main(["check", str(folder)]) == 1
    assert "differs from what the library makes now" in capsys.readouterr().err
    assert main(["install", str(folder)]) == 0
    assert main(["check", str(folder)]) == 0


def test_project_loader_reads_a_shipped_folder_with_the_standard_class() -> None:
    """The library frames images itself, so it must not load the framing processor."""
    from qeu_space.modeling.loading import load_processor

    assert type(load_processor(MODELS / "vit-inspector")).__name__ == "ViTImageProcessorPil"
    assert type(load_processor(MODELS / "inspection-vlm-base")).__name__ == "Idefics3Processor"


# --------------------------------------------------------------------------- the plain path

#: Runs in a fresh interpreter with ``qeu_space`` and ``dataset_tools`` unimportable: first the
#: plain calls without trust_remote_code (each must raise), then the card's snippet, then the
#: snippet's objects on every image. Prints one JSON line.
RUNNER = """
import importlib.abc, json, sys

class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("qeu_space", "dataset_tools"):
            raise ModuleNotFoundError(f"{name} is not available on the plain path")
        return None

sys.meta_path.insert(0, _Blocked())
sys.path = [p for p in sys.path if p not in ("", ".", REPO_PATH)]
cases = json.load(open("cases.json"))
plain = {}
exec(cases["setup"], plain)
refusals = {}
for label, call in cases["refused"].items():
    try:
        eval(call, plain)
        refusals[label] = "answered"
    except ValueError as err:
        refusals[label] = "trust_remote_code=True" in str(err)
namespace = {}
exec(open("snippet.py").read(), namespace)
answers = [eval(cases["call"], namespace, {"path": p}) for p in cases["images"]]
print()  # transformers' unanswered "[y/N]" prompt may have left the line open
print(json.dumps({"refusals": refusals, "answers": answers}))
"""


def _run_plain(tmp_path: Path, snippet: str, cases: dict) -> dict:
    (tmp_path / "snippet.py").write_text(snippet)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "runner.py").write_text(RUNNER.replace("REPO_PATH", repr(str(REPO))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-s", "runner.py"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rendered(config: str, split: str, count: int, kinds=("bent", "missing")) -> list[dict]:
    cfg = BuildConfig(config, num=1, seed=FRESH_SEED, kinds=kinds)
    return [make_row(cfg, split, i) for i in range(count)]


def _save_images(rows: list[dict], folder: Path) -> list[str]:
    folder.mkdir()
    paths = []
    for i, row in enumerate(rows):
        path = folder / f"{i:03d}.png"
        path.write_bytes(row["image"]["bytes"])
        paths.append(str(path.relative_to(folder.parent)))
    return paths


@pytest.mark.slow
def test_plain_vit_snippet_answers_like_the_project(tmp_path: Path) -> None:
    """The shipped ViT compares pairs: the card's snippet (two processor calls stacked as
    channels) gives the project's labels on fresh composites' panels."""
    from qeu_space.modeling.families import vit
    from qeu_space.modeling.loading import load_model
    from qeu_space.training.vit_pair import label_of

    _copy_models(tmp_path, ["vit-inspector"])
    rows = _rendered("qa", "test", 12, kinds=("bent", "missing", "short"))
    composites = [Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB") for row in rows]
    (tmp_path / "images").mkdir()
    pairs = []
    for i, image in enumerate(composites):
        names = []
        for panel, picture in zip(("ref", "test"), vit.split_composite(image), strict=True):
            name = f"images/{i:03d}-{panel}.png"
            picture.save(tmp_path / name)
            names.append(name)
        pairs.append(names)
    snippet = plain_usage("cls-pair", "vit-inspector", reference=pairs[0][0], image=pairs[0][1])
    result = _run_plain(
        tmp_path,
        snippet,
        {
            "refused": {
                "pipeline": 'pipeline("image-classification", model="vit-inspector")',
                "AutoImageProcessor": 'AutoImageProcessor.from_pretrained("vit-inspector")',
                "AutoProcessor": 'AutoProcessor.from_pretrained("vit-inspector")',
            },
            "call": "classify_pair(path[0], path[1])",
            "images": pairs,
            "setup": "from transformers import AutoImageProcessor, AutoProcessor, pipeline",
        },
    )
    refused = ("pipeline", "AutoImageProcessor", "AutoProcessor")
    assert result["refusals"] == dict.fromkeys(refused, True)
    truth = [vit.PAIR_LABELS[label_of(row["findings"])] for row in rows]
    verdicts = sum(
        (a == "OK") == (t == "OK") for a, t in zip(result["answers"], truth, strict=True)
    )
    assert verdicts >= 11, (result["answers"], truth)
    shipped = load_model(MODELS / "vit-inspector", device="cpu")
    assert result["answers"] == [label for label, _ in vit.predict_composites(shipped, composites)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("adapter", "kinds", "at_least"),
    [
        ("inspection-vlm-lora", ("bent", "missing"), 6),
        # PEFT's trainable tokens (the rows of "short") load through plain PeftModel too
        ("inspection-vlm-short-pin", ("bent", "missing", "short"), 5),
    ],
)
def test_plain_vlm_snippet_answers_like_the_project(
    adapter: str, kinds: tuple[str, ...], at_least: int, tmp_path: Path
) -> None:
    """Base + adapter with transformers + peft only: the Space's answers, and mostly right ones
    (exact match on fresh rows >= at_least / 8; the short-pin adapter names short pins)."""
    from qeu_space.modeling.families import chat_vlm
    from qeu_space.modeling.loading import load_model

    _copy_models(tmp_path, ["inspection-vlm-base", adapter])
    rows = _rendered("qa", "test", 8, kinds)
    images = _save_images(rows, tmp_path / "images")
    snippet = plain_usage("qa", "inspection-vlm-base", adapter=adapter, image=images[0])
    result = _run_plain(
        tmp_path,
        snippet,
        {
            "setup": "from transformers import AutoProcessor, pipeline",
            "refused": {
                "AutoProcessor base": 'AutoProcessor.from_pretrained("inspection-vlm-base")',
                "AutoProcessor adapter": f'AutoProcessor.from_pretrained("{adapter}")',
                "pipeline": 'pipeline("image-text-to-text", model="inspection-vlm-base")',
            },
            "call": "inspect(path)",
            "images": images,
        },
    )
    assert set(result["refusals"].values()) == {True}, result["refusals"]
    truth = [parse_answer(row["answer"]).findings for row in rows]
    said = [parse_answer(answer).findings for answer in result["answers"]]
    exact = sum(set(a) == set(t) for a, t in zip(said, truth, strict=True))
    assert exact >= at_least, (result["answers"], [row["answer"] for row in rows])
    if "short" in kinds:
        assert any("short pin" in row["answer"] for row in rows)
        assert any(f.kind.value == "short pin" for findings in said for f in findings)
    loaded = load_model(MODELS / "inspection-vlm-base", MODELS / adapter, device="cpu")
    pictures = [Image.open(io.BytesIO(row["image"]["bytes"])) for row in rows]
    assert result["answers"] == chat_vlm.generate(loaded, pictures, batch_size=1)


@pytest.mark.parametrize(
    ("name", "argv", "expected"),
    [
        # the shipped ViT compares pairs: two processor calls stacked as channels
        (
            "vit-inspector",
            ["--id", "o/vit"],
            'AutoModelForImageClassification.from_pretrained("o/vit")',
        ),
        ("inspection-vlm-base", ["--id", "o/base"], 'from_pretrained("o/base", trust_remote'),
        (
            "inspection-vlm-lora",
            ["--id", "o/lora", "--base-id", "o/base"],
            'PeftModel.from_pretrained(model, "o/lora")',
        ),
        ("inspection-od-base", ["--id", "o/od"], 'task="<OD>", image_size=image.size)'),
        (
            "inspection-od-lora",
            ["--id", "o/od-lora", "--base-id", "o/od"],
            'Florence2ForConditionalGeneration.from_pretrained("o/od")',
        ),
    ],
)
def test_cli_usage_prints_the_cards_first_lines(name, argv, expected, capsys) -> None:
    from qeu_space.hub.model_card import VIEW_NOTICE

    assert main(["usage", str(MODELS / name), *argv]) == 0
    out = capsys.readouterr().out
    assert out.startswith(VIEW_NOTICE) and expected in out
    assert main(["usage", str(MODELS / "inspection-vlm-lora"), "--id", "o/lora"]) == 2


def _pasted(image: Image.Image, offset: tuple[int, int], margin: int = 96) -> Image.Image:
    """``image`` pasted at ``offset`` into a larger square canvas of its corner's colour."""
    side = image.width + margin
    canvas = Image.new("RGB", (side, side), image.convert("RGB").getpixel((0, 0)))
    canvas.paste(image, offset)
    return canvas


def od_cases(rows: list[dict], offset: tuple[int, int] = (60, 40)) -> list[tuple]:
    """``(image, truth boxes)`` of each row as rendered (the camera placed the products) and
    pasted at ``offset`` into a larger canvas; truth boxes are in that image's pixels, clipped
    to what the model sees of it (its view: a bent pin's tip past the pin grid is outside)."""
    from qeu_space.modeling.families import florence2
    from qeu_space.views.registration import transform_box
    from qeu_space.vocabulary import parse_bbox_str

    cases = []
    for row in rows:
        image = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
        truth = parse_bbox_str(row["bbox_str"], image.size)
        dx, dy = offset
        pasted = [
            (label, (x1 + dx, y1 + dy, x2 + dx, y2 + dy)) for label, (x1, y1, x2, y2) in truth
        ]
        for picture, boxes in ((image, truth), (_pasted(image, offset), pasted)):
            view = florence2.view(picture, "composite_test_grid")
            seen = transform_box(view.to_source, (0, 0, *view.image.size))
            clipped = [
                (
                    label,
                    (
                        max(b[0], seen[0]),
                        max(b[1], seen[1]),
                        min(b[2], seen[2]),
                        min(b[3], seen[3]),
                    ),
                )  # fmt: skip
                for label, b in boxes
            ]
            cases.append((picture, clipped))
    return cases


def box_errors(said: dict, truth: list[tuple]) -> list[float]:
    """For each true box, the largest coordinate error (px) of the said box of its label nearest
    to it (infinite when none)."""
    errors = []
    for label, box in truth:
        pairs = zip(said["bboxes"], said["labels"], strict=True)
        candidates = [b for b, name in pairs if name == label]
        errors.append(
            min(
                (max(abs(p - q) for p, q in zip(b, box, strict=True)) for b in candidates),
                default=float("inf"),
            )  # fmt: skip
        )
    return errors


@pytest.mark.slow
def test_plain_od_boxes_land_on_the_image_passed(tmp_path: Path) -> None:
    """The card's <OD> snippet with transformers only: AutoProcessor without trust_remote_code
    refuses the folder; with it, ``post_process_generation(text, task="<OD>",
    image_size=image.size)`` gives every box within 2 px of the truth in the pixels of the image
    passed, on composites the camera placed and on one pasted at an offset into a larger canvas,
    and they are the boxes the Space draws (``florence2.boxes_in_image``)."""
    from qeu_space.modeling.families import florence2
    from qeu_space.modeling.loading import load_model

    _copy_models(tmp_path, ["inspection-od-base"])
    rows = [row for row in _rendered("od", "test", 16) if row["bbox_str"]][:6]
    cases = od_cases(rows)
    folder = tmp_path / "images"
    folder.mkdir()
    images = []
    for i, (picture, _) in enumerate(cases):
        picture.save(folder / f"{i:03d}.png")
        images.append(f"images/{i:03d}.png")
    snippet = plain_usage("od", "inspection-od-base", image=images[0])
    result = _run_plain(
        tmp_path,
        snippet,
        {
            "setup": "from transformers import AutoProcessor, pipeline",
            "refused": {"AutoProcessor": 'AutoProcessor.from_pretrained("inspection-od-base")'},
            "call": "detect(path)",
            "images": images,
        },
    )
    assert set(result["refusals"].values()) == {True}, result["refusals"]
    errors = [e for said, (_, truth) in zip(result["answers"], cases, strict=True)
              for e in box_errors(said, truth)]  # fmt: skip
    assert len(errors) >= 12 and max(errors) <= 2.0, errors
    loaded = load_model(MODELS / "inspection-od-base", device="cpu")
    texts = florence2.generate(loaded, [picture for picture, _ in cases])
    for said, text, (picture, _) in zip(result["answers"], texts, cases, strict=True):
        drawn = florence2.boxes_in_image(text, picture)  # what the Space draws
        assert said["labels"] == [label for label, _ in drawn]
        for b, (_, d) in zip(said["bboxes"], drawn, strict=True):
            assert max(abs(p - q) for p, q in zip(b, d, strict=True)) <= 1.0, (b, d)


def _shipped_od_processor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The shipped ``QEUFlorence2Processor`` of the OD base, imported from its folder's file."""
    import importlib.util

    folder = _copy_models(tmp_path, ["inspection-od-base"]) / "inspection-od-base"
    spec = importlib.util.spec_from_file_location("shipped_processing_qeu", folder / PROCESSOR_FILE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module.QEUFlorence2Processor.from_pretrained(folder)


def test_shipped_od_post_processing_refuses_what_names_no_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Boxes go back through the registration of the image they were said about; where the
    processor cannot know which image that is, it says so instead of guessing."""
    from qeu_space.modeling.families import florence2

    processor = _shipped_od_processor(tmp_path, monkeypatch)
    rows = [row for row in _rendered("od", "test", 16) if row["bbox_str"]][:2]
    (first, truth), (pasted, _), (second, _) = od_cases(rows)[:3]
    view = florence2.view(first, "composite_test_grid")
    said = florence2.canonical_target(rows[0]["bbox_str"], view, "composite_test_grid")
    text = f"<s>{said}</s>"
    post = processor.post_process_generation
    with pytest.raises(ValueError, match="needs image_size=image.size"):
        post(text, task="<OD>")
    with pytest.raises(ValueError, match="no 448 x 448 image went through"):
        post(text, task="<OD>", image_size=first.size)  # nothing processed yet
    processor(text=["<OD>"] * 2, images=[first, second])
    with pytest.raises(ValueError, match="2 different 448 x 448 images: pass image=image"):
        post(text, task="<OD>", image_size=first.size)
    with pytest.raises(ValueError, match="not of its view"):
        post(text, task="<OD>", image_size=view.image.size)  # the old card's call
    with pytest.raises(ValueError, match="is not the size of image"):
        post(text, task="<OD>", image_size=(10, 10), image=first)
    found = post(text, task="<OD>", image=first)["<OD>"]
    assert max(box_errors(found, truth)) <= 1.0
    processor(text="<OD>", images=first)
    assert post(text, task="<OD>", image_size=first.size)["<OD>"] == found
    processor(text="<OD>", images=pasted)  # a larger canvas: its own size, its own frame
    with pytest.raises(ValueError, match="no 448 x 448 image"):
        post(text, task="<OD>", image_size=first.size)
    assert post(text, task="<OD>", image=first)["<OD>"] == found  # remembered, not lost
