"""The feedback store: rows round-trip, concurrent writers, a killed writer, the Hub mirror."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qeu_space.feedback import (
    FeedbackEntry,
    FeedbackStore,
    HubMirror,
    default_db_path,
    open_store,
)
from tests.hub_standin import HubStandin

REPO = Path(__file__).resolve().parents[1]


def noise(seed: int, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def entry(seed: int = 0, **kwargs) -> FeedbackEntry:
    fields = {
        "image": noise(seed),
        "base_answer": "Passed. No defects found.",
        "tuned_answer": "Defective. 1 defect: C7 missing pin.",
    }
    fields.update(kwargs)
    return FeedbackEntry(**fields)


def test_rows_round_trip(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb.sqlite3", replica="r1")
    first = store.add(entry(1, correct=True, comment="<script>alert(1)</script>", truth="Passed."))
    second = store.add(
        entry(2, rated="base", correct=False, corrected_answer="u3 is bent to the LEFT")
    )
    assert store.count() == 2
    assert [r.id for r in store.recent()] == [second.id, first.id]
    assert [r.uid for r in store.rows()] == [first.uid, second.uid]
    got = store.recent(1)[0]
    assert got == second
    assert got.corrected_answer == "Defective. 1 defect: U3 bent pin (left)."  # canonical form
    assert got.taught_answer == got.corrected_answer
    assert store.recent()[1].comment == "<script>alert(1)</script>"  # stored as typed
    assert store.recent()[1].taught_answer == "Defective. 1 defect: C7 missing pin."
    assert np.array_equal(np.asarray(store.image(first.image_sha256)), np.asarray(noise(1)))
    assert store.integrity() == "ok"
    journal = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"
    store.close()
    reopened = open_store(tmp_path / "fb.sqlite3")
    assert reopened.count() == 2


def test_rows_keep_their_inspection_id(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    row = store.add(entry(1, inspection_id="abc123"))
    assert store.recent(1)[0].inspection_id == "abc123" == row.inspection_id
    assert row.to_json()["inspection_id"] == "abc123"


def test_an_older_store_gains_the_inspection_id_column(tmp_path: Path) -> None:
    """A store written before inspection ids keeps its rows and takes new ones."""
    import sqlite3

    db = tmp_path / "old.sqlite3"
    old_schema = """
    CREATE TABLE images (sha256 TEXT PRIMARY KEY, png BLOB NOT NULL);
    CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL, replica TEXT NOT NULL, image_sha256 TEXT NOT NULL,
        base_answer TEXT NOT NULL, tuned_answer TEXT NOT NULL, rated TEXT NOT NULL,
        correct INTEGER NOT NULL, corrected_answer TEXT NOT NULL, comment TEXT NOT NULL,
        truth TEXT, source TEXT NOT NULL, base_model TEXT NOT NULL, adapter TEXT NOT NULL);
    INSERT INTO images VALUES ('s', x'00');
    INSERT INTO feedback VALUES (1, 'u', '2025-01-01T00:00:00', 'r', 's', 'Passed.', 'Passed.',
        'base', 1, '', 'old row', NULL, 'upload', 'b', '');
    """
    with sqlite3.connect(db) as conn:
        conn.executescript(old_schema)
    store = FeedbackStore(db)
    assert [r.comment for r in store.rows()] == ["old row"]
    assert store.recent(1)[0].inspection_id == ""
    store.add(entry(2, inspection_id="new"))
    assert [r.inspection_id for r in store.rows()] == ["", "new"]
    assert [r.adapter_name for r in store.rows()] == ["", ""]  # gained too (issue 13)


def test_each_row_keeps_the_name_of_the_adapter_it_rates(tmp_path: Path) -> None:
    """With several adapters in the Space, a judgement says which one answered."""
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    row = store.add(entry(1, adapter="models/inspection-vlm-short-pin", adapter_name="short-pin"))
    again = FeedbackStore(tmp_path / "fb.sqlite3").recent(1)[0]
    assert again.adapter_name == row.adapter_name == "short-pin"
    assert again.adapter == "models/inspection-vlm-short-pin"
    assert row.to_json()["adapter_name"] == "short-pin"


def test_same_image_is_stored_once(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    a, b = store.add(entry(5)), store.add(entry(5, comment="again"))
    assert a.image_sha256 == b.image_sha256
    assert store._conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rated": "both"}, "rated must be one of"),
        ({"correct": False}, "a wrong answer needs the corrected answer"),
        ({"correct": False, "corrected_answer": "hmm, not sure"}, "cannot read the corrected"),
        ({"comment": "x" * 2001}, "at most 2000 are kept"),
        ({"image": None}, "needs the image"),
        ({"rated": "base", "base_answer": " "}, "the base answer is empty: inspect the image"),
    ],
)
def test_bad_entries_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        entry(**kwargs)


def test_a_correct_judgement_drops_any_correction() -> None:
    assert entry(correct=True, corrected_answer="C1 missing").corrected_answer == ""


def test_200_concurrent_submissions_give_200_rows(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    with ThreadPoolExecutor(max_workers=32) as pool:
        rows = list(pool.map(lambda i: store.add(entry(i % 7, comment=f"#{i}")), range(200)))
    assert store.count() == 200
    assert len({r.id for r in rows}) == 200
    assert sorted(r.comment for r in store.rows()) == sorted(f"#{i}" for i in range(200))
    assert store.integrity() == "ok"


def test_two_processes_share_one_store(tmp_path: Path) -> None:
    db = tmp_path / "fb.sqlite3"
    code = textwrap.dedent(
        f"""
        import sys
        from PIL import Image
        from qeu_space.feedback import FeedbackEntry, FeedbackStore
        store = FeedbackStore({str(db)!r})
        for i in range(40):
            store.add(FeedbackEntry(Image.new("RGB", (96, 96)), "Passed.", "Passed.",
                                    comment=sys.argv[1]))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, name], cwd=REPO) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = FeedbackStore(db)
    assert store.count() == 80
    assert sorted({r.comment for r in store.rows()}) == ["a", "b"]


WRITER = """
import sys
import numpy as np
from PIL import Image
from qeu_space.feedback import FeedbackEntry, FeedbackStore
store = FeedbackStore(sys.argv[1])
rng = np.random.default_rng(0)
i = 0
while True:
    image = Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8))
    row = store.add(FeedbackEntry(image, "Passed.", f"answer {i}", comment="x" * 1500))
    print(row.uid, flush=True)
    i += 1
"""


def test_killed_writer_leaves_every_committed_row(tmp_path: Path) -> None:
    db = tmp_path / "fb.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    committed = []
    try:
        while len(committed) < 40:
            line = proc.stdout.readline()
            assert line, f"writer stopped early (exit {proc.poll()})"
            committed.append(line.strip())
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-write: it never stops between rows
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    store = FeedbackStore(db)
    assert store.integrity() == "ok"
    stored = {r.uid for r in store.rows()}
    assert set(committed) <= stored
    assert store.count() >= len(committed)
    for row in store.rows():  # every row is whole: its image reads back
        assert store.image(row.image_sha256).size == (160, 160)


def test_default_path_follows_the_cache_folder(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if Path("/data").is_dir() and os.access("/data", os.W_OK):
        pytest.skip("this machine has a writable /data (a Space's persistent storage)")
    assert default_db_path() == tmp_path / "qeu-space" / "feedback.sqlite3"


def test_unwritable_store_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="set QEU_FEEDBACK_DB to a writable file"):
        FeedbackStore(tmp_path / "file" / "fb.sqlite3")
    with pytest.raises(FileNotFoundError, match="no feedback store at"):
        open_store(tmp_path / "none.sqlite3")


def test_hub_mirror_pushes_jsonl_per_replica_and_images(
    hub_standin: HubStandin, tmp_path: Path
) -> None:
    mirror = HubMirror.start("qeu/feedback", tmp_path / "mirror", token=hub_standin.token, every=60)
    try:
        store = FeedbackStore(tmp_path / "fb.sqlite3", replica="replica-a", mirror=mirror)
        store.add(entry(1, comment="first <b>"))
        store.add(entry(1, correct=False, corrected_answer="D9 missing pin"))
        store.add(entry(2))
        mirror.push_now()
    finally:
        mirror.stop()
    repo = hub_standin.repo_path("qeu/feedback", "dataset")
    lines = (repo / "data/replica-a/metadata.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["comment"] for r in records] == ["first <b>", "", ""]
    assert records[1]["corrected_answer"] == "Defective. 1 defect: D9 missing pin."
    images = sorted(p.name for p in (repo / "data/replica-a/images").iterdir())
    assert images == sorted({Path(r["file_name"]).name for r in records})
    assert len(images) == 2
    assert "token" not in json.dumps(records)
    assert all(r.bearer for r in hub_standin.requests if r.route == "commit")

    import datasets

    loaded = datasets.load_dataset("imagefolder", data_dir=str(repo / "data"), split="train")
    assert loaded.num_rows == 3
    assert loaded[0]["image"].size == (96, 96)
    assert sorted(loaded["comment"]) == ["", "", "first <b>"]


def test_hub_mirror_refusal_is_one_line(hub_standin: HubStandin, tmp_path: Path) -> None:
    from qeu_space.hub.upload import HubError

    with pytest.raises(HubError) as err:
        HubMirror.start("qeu/feedback", tmp_path / "m", token="hf_wrong", every=60)
    assert "HTTP 401" in str(err.value) and "hf_wrong" not in str(err.value)


# --------------------------------------------------------------------------- from-feedback


TRUTH = "Defective. 1 defect: C7 missing pin."


@pytest.fixture
def feedback_db(tmp_path: Path) -> Path:
    """Judgements of every provenance: a server truth (one judgement agreeing, one stored
    contradicting it before such were refused), an upload two clients corrected alike, one
    only one client corrected, one two clients disagree on, and an unreadable one."""
    db = tmp_path / "fb.sqlite3"
    store = FeedbackStore(db)
    known = noise(3, size=448)
    server = {"truth": TRUTH, "truth_source": "server", "source": "generated seed 7"}
    store.add(entry(image=known, correct=True, client="a", inspection_id="i1", **server))
    store.add(
        entry(image=known, correct=False, corrected_answer="D9 missing pin", client="b",
              inspection_id="i1", **server)
    )  # fmt: skip
    upload = noise(4, size=448)
    for client in ("a", "b"):
        store.add(
            entry(image=upload, correct=False, corrected_answer="U3 bent (left), D9 gone",
                  client=client, inspection_id=f"u-{client}")
        )  # fmt: skip
    store.add(entry(image=noise(5, 448), correct=False, corrected_answer="C1 missing", client="a"))
    disputed = noise(6, size=448)
    store.add(entry(image=disputed, correct=False, corrected_answer="C2 missing", client="a"))
    store.add(entry(image=disputed, correct=False, corrected_answer="C3 missing", client="b"))
    store.add(entry(tuned_answer="llllllll", correct=True))  # judged right, says nothing
    store.close()
    return db


def test_from_feedback_writes_a_qa_split_that_loads(feedback_db: Path, tmp_path: Path) -> None:
    import datasets

    from dataset_tools.__main__ import main
    from dataset_tools.features import FEATURES
    from qeu_space.geometry import CompositeLayout

    out = tmp_path / "ds"
    assert main(["from-feedback", "--db", str(feedback_db), "--out", str(out)]) == 0
    loaded = datasets.load_dataset(str(out), split="feedback")
    assert loaded.features == FEATURES["qa"]
    assert loaded["answer"] == [TRUTH, "Defective. 2 defects: U3 bent pin (left); D9 missing pin."]
    assert loaded["verdict"] == ["defective", "defective"]
    layout = CompositeLayout(448)
    x1, y1, x2, y2 = layout.crop_box("test")
    for finding in loaded[1]["findings"]:
        bx1, by1, bx2, by2 = finding["box"]
        assert x1 <= bx1 < bx2 <= x2 and y1 <= by1 < by2 <= y2
    assert layout.position_at((bx1 + bx2) / 2, (by1 + by2) / 2).name == "D9"
    assert loaded[0]["image"].size == (448, 448)
    card = (out / "README.md").read_text()
    assert "from-feedback" in card
    for line in (
        "| with a server truth (the truth is written) | 2 |",
        "| ... of which taught another answer (the truth was written instead) | 1 |",
        "| without a server truth, confirmed by agreeing clients | 2 |",
        "| left out: no server truth, and fewer than --min-agree clients taught its answer | 1 |",
        "| left out: no server truth, and judgements of the same image teach different answers "
        "| 2 |",
        "| left out: its answer says no verdict (unreadable) | 1 |",
        "| left out: the same image and answer as a row already written | 2 |",
    ):
        assert line in card, line

    only = tmp_path / "only"
    args = ["from-feedback", "--db", str(feedback_db), "--out", str(only), "--only-wrong"]
    assert main(args) == 0
    assert datasets.load_dataset(str(only), split="feedback").num_rows == 2
    one = tmp_path / "one"
    args = ["from-feedback", "--db", str(feedback_db), "--out", str(one), "--min-agree", "1"]
    assert main(args) == 0
    assert datasets.load_dataset(str(one), split="feedback").num_rows == 3  # + C1 missing


def test_from_feedback_never_writes_a_typed_truth_or_a_lone_correction(tmp_path: Path) -> None:
    """Issue 21, item 2: a user's typed truth and one client's correction teach nothing."""
    from dataset_tools.from_feedback import feedback_rows

    store = FeedbackStore(tmp_path / "fb.sqlite3")
    claim = {"truth": "Defective. 1 defect: D9 missing pin.", "truth_source": "user"}
    store.add(entry(image=noise(8, 448), correct=True, client="a", **claim))
    store.add(entry(image=noise(9, 448), correct=False, corrected_answer="Passed", client="a"))
    rows, report = feedback_rows(store)
    assert rows == [] and (report.unconfirmed, report.server) == (2, 0)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-db", "does not exist"),
        ("not-empty", "is not empty; pass --overwrite"),
        ("no-rows", "no usable feedback in"),
        ("bad-split", "split name must be letters"),
    ],
)
def test_from_feedback_errors_are_one_line(
    case: str, message: str, feedback_db: Path, tmp_path: Path, capsys
) -> None:
    from dataset_tools.__main__ import main

    out = tmp_path / "out"
    args = ["from-feedback", "--db", str(feedback_db), "--out", str(out)]
    if case == "missing-db":
        args[2] = str(tmp_path / "none.sqlite3")
    elif case == "not-empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "no-rows":
        empty = FeedbackStore(tmp_path / "empty.sqlite3")
        empty.add(entry(tuned_answer="zzz", correct=True))
        empty.close()
        args[2] = str(tmp_path / "empty.sqlite3")
    elif case == "bad-split":
        args += ["--split", "../x"]
    try:  # argument errors exit from argparse (2), the others are returned
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert err.startswith("python -m dataset_tools from-feedback: error: ")
    if case == "not-empty":
        assert (out / "keep.txt").read_text() == "mine"
    else:
        assert not out.exists()


# --------------------------------------------------------------------------- judgements


def test_one_judgement_per_inspection_rated_answer_and_client(tmp_path: Path) -> None:
    """Issue 21, item 2: a repeat replaces (the replaced row goes to the history), an identical
    repeat writes nothing; another client, answer or inspection is a judgement of its own."""
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    key = {"inspection_id": "i1", "client": "c1"}
    first, outcome = store.judge(entry(comment="one", **key))
    assert outcome == "stored"
    same, outcome = store.judge(entry(comment="one", **key))
    assert outcome == "unchanged" and same.uid == first.uid
    second, outcome = store.judge(entry(correct=False, corrected_answer="C1 missing", **key))
    assert outcome == "replaced" and second.replaces == first.uid
    store.judge(entry(comment="one", inspection_id="i1", client="c2"))
    store.judge(entry(comment="one", rated="base", **key))
    store.judge(entry(comment="one", inspection_id="i2", client="c1"))
    assert store.count() == 4
    assert [(h.uid, by) for h, _, by in store.history()] == [(first.uid, second.uid)]
    rows = list(store.rows())
    assert len({(r.inspection_id, r.rated, r.client) for r in rows}) == len(rows)
    with store._lock, pytest.raises(sqlite3.IntegrityError):  # the schema holds it too
        store._conn.execute(
            "INSERT INTO feedback (uid, created_at, replica, image_sha256, base_answer, "
            "tuned_answer, rated, correct, corrected_answer, comment, source, base_model, "
            "adapter, inspection_id, client) SELECT 'x', created_at, replica, image_sha256, "
            "base_answer, tuned_answer, rated, correct, corrected_answer, comment, source, "
            "base_model, adapter, inspection_id, client FROM feedback WHERE uid = ?",
            (second.uid,),
        )


def test_every_row_records_where_its_truth_came_from(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    store.add(entry(truth="Passed. No defects found.", truth_source="server"))
    store.add(entry(truth="Passed. No defects found.", truth_source="user"))
    store.add(entry())
    assert [(r.truth_source, r.truth) for r in store.rows()] == [
        ("server", "Passed. No defects found."),
        ("user", "Passed. No defects found."),
        ("", None),
    ]
    with pytest.raises(ValueError, match="truth_source must be 'server' or 'user'"):
        entry(truth="Passed.", truth_source="client")
    with pytest.raises(ValueError, match="a truth source without a truth"):
        entry(truth_source="server")


@pytest.mark.parametrize(
    ("field", "value"), [("comment", ["a"]), ("corrected_answer", 3), ("source", None)]
)
def test_fields_of_the_wrong_type_are_refused(field: str, value) -> None:
    with pytest.raises(ValueError, match=f"{field} must be text, got"):
        entry(**{field: value})


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("a\x00b", "ab"),
        ("\x1b[31mred", "[31mred"),
        ("\u202eevil\u202c", "evil"),
        ("\u2066x\u2069\u200e", "x"),
        ("a\r\nb\tc", "a\nb\tc"),
        ("é ü 漢字 👍", "é ü 漢字 👍"),
    ],
)
def test_comments_are_stored_without_control_or_bidi_characters(
    tmp_path: Path, text: str, clean: str
) -> None:
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    store.add(entry(comment=text))
    assert store.recent(1)[0].comment == clean
    assert entry(comment="\x00" * 10 + "x" * 2000).comment == "x" * 2000  # limit after cleaning
    with pytest.raises(ValueError, match="at most 2000 are kept"):
        entry(comment="x" * 2001)


def test_an_older_store_gains_the_provenance_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE images (sha256 TEXT PRIMARY KEY, png BLOB NOT NULL);"
        "CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL UNIQUE,"
        " created_at TEXT NOT NULL, replica TEXT NOT NULL, image_sha256 TEXT NOT NULL,"
        " base_answer TEXT NOT NULL, tuned_answer TEXT NOT NULL, rated TEXT NOT NULL,"
        " correct INTEGER NOT NULL, corrected_answer TEXT NOT NULL, comment TEXT NOT NULL,"
        " truth TEXT, source TEXT NOT NULL, base_model TEXT NOT NULL, adapter TEXT NOT NULL);"
        "INSERT INTO feedback VALUES (1, 'u', 't', 'r', 's', 'b', 't', 'base', 1, '', 'old',"
        " 'Passed. No defects found.', 'sample x', 'm', '');"
    )
    conn.commit()
    conn.close()
    store = FeedbackStore(db)
    (row,) = store.rows()
    assert (row.comment, row.truth_source, row.client, row.replaces) == ("old", "", "", "")
    store.judge(entry(inspection_id="i", client="c"))
    assert store.count() == 2 and store.integrity() == "ok"
