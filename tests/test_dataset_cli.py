"""``python -m dataset_tools build``: what users type, what they get back, and what is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest

import dataset_tools.save
from dataset_tools.__main__ import main, reproducible_command
from dataset_tools.builders import BuildConfig, build_dataset
from qeu_space import REPOSITORY_URL

SMALL = ["--num", "6", "--seed", "1", "--size", "224", "--quiet"]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name or ".old" in p.name)


def test_build_writes_parquet_and_a_card_that_load_dataset_reads(tmp_path, capsys):
    out = tmp_path / "qa"
    assert main(["build", "--config", "qa", "--out", str(out), *SMALL]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "qa").iterdir()) == [
        f"{s}-00000-of-00001.parquet"
        for s in ("test", "test_unseen_housing", "train", "validation")
    ]
    card = (out / "README.md").read_text()
    assert "task_categories:" in card and "license: cc-by-4.0" in card
    # the regenerating command runs anywhere: no local path, and the card links to the code
    assert "python -m dataset_tools build --config qa --out <folder> --num 6" in card
    assert str(tmp_path) not in card and REPOSITORY_URL in card
    assert "camera placement: shift up to 24 px" in card and "the defaults of `build`" in card
    loaded = datasets.load_dataset(str(out))
    direct = build_dataset(BuildConfig("qa", num=6, seed=1, size=224))
    for split in direct:
        assert loaded[split].features == direct[split].features
        assert loaded[split]["answer"] == direct[split]["answer"]
        assert np.array_equal(
            np.asarray(loaded[split][0]["image"]), np.asarray(direct[split][0]["image"])
        )
    assert _leftovers(tmp_path) == []
    # written as datasets writes (content-defined chunking, page index), but no min / max
    # statistics of PNG bytes, which no reader uses and which cost a third of a row's write
    meta = pq.ParquetFile(out / "qa" / "train-00000-of-00001.parquet").metadata
    assert b"content_defined_chunking" in meta.metadata
    columns = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i)
               for i in range(meta.num_columns)}  # fmt: skip
    assert columns["image.bytes"].statistics is None
    assert columns["images.list.element.bytes"].statistics is None
    assert columns["answer"].statistics is not None and columns["answer"].statistics.has_min_max


@pytest.mark.parametrize(
    "argv, command",
    [
        (["build", "--out", "/home/me/qa", "--num", "9"], "build --out <folder> --num 9"),
        (["build", "--out=/srv/x y", "--seed", "1"], "build --out=<folder> --seed 1"),
        (["build", "--push-to", "me/qeu", "--out", "d"], "build --push-to me/qeu --out <folder>"),
        (["from-feedback", "--db", "/data/f.sqlite3", "--out", "o"],
         "from-feedback --db <feedback.sqlite3> --out <folder>"),
        (["build", "--housings", "a b"], "build --housings 'a b'"),
    ],
)  # fmt: skip
def test_the_cards_command_names_no_local_path(argv, command):
    assert reproducible_command(argv) == f"python -m dataset_tools {command}"


def _file_in(tmp_path: Path) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return blocker


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "qa", "--num", "0"], "--num: must be at least 1"),
        (["--config", "seg", "--num", "5"], "invalid choice: 'seg'"),
        (["--config", "qa", "--num", "five"], "'five' is not a whole number"),
        (["--config", "qa", "--num", "5", "--num-proc", "0"], "--num-proc: must be at least 1"),
        (["--config", "cls", "--num", "5", "--variant", "nsoart"], "plain variant"),
        (["--config", "qa", "--num", "5", "--push-to", "not a repo"], "is not a Hub repo id"),
        (["--config", "qa", "--num", "5", "--push-to", "me/qeu"], "no Hugging Face token"),
        (["--config", "qa", "--num", "5", "--out-of-nowhere"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    tmp_path, capsys, monkeypatch, args, message
):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        sys.exit(main(["build", *args, "--out", str(out), "--quiet"]))
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_non_empty_out_is_refused_without_overwrite_and_kept(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["build", "--config", "od", "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err
    assert (out / "precious.txt").read_text() == "keep me"
    assert main(["build", "--config", "od", "--out", str(out), "--overwrite", *SMALL]) == 0
    assert not (out / "precious.txt").exists() and (out / "od").is_dir()
    assert _leftovers(tmp_path) == []


def test_unwritable_out_is_refused(tmp_path, capsys):
    out = _file_in(tmp_path) / "data"  # a folder inside a file cannot exist
    assert main(["build", "--config", "qa", "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and len(err.strip().splitlines()) == 1
    assert _file_in(tmp_path).read_text() == "x"


def test_a_failure_mid_write_leaves_the_old_dataset_and_no_partial_folder(tmp_path, monkeypatch):
    out = tmp_path / "data"
    assert main(["build", "--config", "qa", "--out", str(out), *SMALL]) == 0
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))

    def broken(cfg, folder, command, *, progress=False):
        (folder / "qa").mkdir()
        (folder / "qa" / "train-00000-of-00001.parquet").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset_tools.save, "write_parquet", broken)
    with pytest.raises(KeyboardInterrupt):
        main(["build", "--config", "qa", "--out", str(out), "--overwrite", *SMALL])
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert _leftovers(tmp_path) == []
    assert datasets.load_dataset(str(out))["train"].num_rows == 6


def test_push_goes_over_http_to_the_hub_and_loads_back(tmp_path, hub_standin, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub_standin.token)
    out = tmp_path / "od"
    code = main(
        [
            "build",
            "--config",
            "od",
            "--out",
            str(out),
            "--push-to",
            "qeu/connectors-od",
            "--private",
            *SMALL,
        ]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    assert hub_standin.token not in printed.out + printed.err
    routes = " ".join(hub_standin.routes())
    assert "create" in routes and "preupload" in routes and "commit" in routes
    arrived = hub_standin.repo_path("qeu/connectors-od", "dataset")
    pushed = datasets.load_dataset(str(arrived))
    local = datasets.load_dataset(str(out))
    for split in local:
        assert pushed[split]["bbox_str"] == local[split]["bbox_str"]


def test_module_entry_point_help_explains_every_option():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "dataset_tools", "build", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    for option in (
        "--config",
        "--num",
        "--seed",
        "--out",
        "--num-proc",
        "--overwrite",
        "--push-to",
        "--private",
        "--variant",
        "--no-nuisances",
        "--png-level",
    ):
        assert option in done.stdout
    assert "test_unseen_housing" in done.stdout and "examples:" in done.stdout


def test_the_parquet_files_are_the_same_bytes_whatever_num_proc(tmp_path):
    files = {}
    for num_proc in ("1", "2"):
        out = tmp_path / f"p{num_proc}"
        assert (
            main(["build", "--config", "od", "--out", str(out), "--num-proc", num_proc, *SMALL])
            == 0
        )
        files[num_proc] = {p.name: p.read_bytes() for p in sorted((out / "od").iterdir())}
    assert len(files["1"]) == 4 and files["1"] == files["2"]


@pytest.mark.parametrize(
    ("config", "column", "names"),
    [
        ("od", ("objects", "category"), ["bent pin", "missing pin", "short pin"]),
        ("cls", ("label",), ["OK", "BENDNG", "NUKENG", "SHORTNG"]),
    ],
)
def test_a_shards_own_schema_names_the_builds_kinds(tmp_path, config, column, names):
    """A reader of one parquet file alone (``Dataset.from_parquet``, pandas with the HF
    metadata) reads the labels from the file's schema: a ``short pin`` build's file must list it
    (it listed only the default kinds, so label 2 was out of range)."""
    out = tmp_path / config
    argv = ["build", "--config", config, "--out", str(out), "--kinds", "bent", "missing", "short"]
    assert main([*argv, *SMALL]) == 0
    shard = next((out / config).glob("train-*.parquet"))
    feature = datasets.Features.from_arrow_schema(pq.read_schema(shard))
    for key in column:
        feature = feature[key]
    feature = getattr(feature, "feature", feature)  # the list's element
    assert feature.names == names
