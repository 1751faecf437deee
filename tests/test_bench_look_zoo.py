"""The look-zoo benchmark runs end to end and scores what it claims (a smoke run, no models)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_look_zoo as zoo


def test_smoke_run_reports_every_family_asked_for(tmp_path):
    out = tmp_path / "zoo.md"
    assert zoo.main(["--cases", "3", "--looks", "classic", "--no-models", "--out", str(out)]) == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| classic |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith("0.0 %")  # the classic look is never refused
    assert float(cells[3].split()[0]) < 0.5  # and registers to well under half a pixel
    header = next(line for line in text.splitlines() if line.startswith("| look family |"))
    column = [c.strip() for c in header.strip("|").split("|")].index("ref-test frames px")
    assert 0.0 < float(cells[column].split()[0]) < 0.2  # the two frames agree closely


def test_frame_disagreement_is_what_differs_between_the_two_frames():
    """A bias both panels share (parallax) does not count; one the test alone has does."""
    sample = zoo.make_sample_for(zoo.Case("classic", 0, ()), 0, zoo.SEED)
    same = zoo.Outcome(defective=False)
    zoo.score_registration(sample, same)
    shift = np.eye(3)
    shift[0, 2] = 3.0  # the test's true pose 3 px off: its frame disagrees by about 3 px
    moved = type(sample)(**{**sample.__dict__, "test_pose": shift @ sample.test_pose})
    off = zoo.Outcome(defective=False)
    zoo.score_registration(moved, off)
    assert np.sqrt(np.mean(same.sq_disagreement)) < 0.2
    assert 2.5 < np.sqrt(np.mean(off.sq_disagreement)) < 3.5


def test_findings_cycle_kinds_and_a_third_pass():
    drawn = [zoo.draw_findings(0, i, zoo.SEED) for i in range(30)]
    assert sum(1 for d in drawn if not d) == 10
    kinds = {f.kind.value for d in drawn for f in d}
    assert kinds == set(zoo.KINDS)
    assert all(len({f.position for f in d}) == len(d) for d in drawn)


def test_wrong_lattice_is_caught_when_a_panel_is_a_column_off():
    sample = zoo.make_sample_for(zoo.Case("classic", 0, ()), 0, zoo.SEED)
    shift = np.eye(3)
    shift[0, 2] = min(sample.layout.connector.pitch[0], sample.layout.connector.pitch[1]) * 1.0
    shifted = type(sample)(**{**sample.__dict__, "test_pose": shift @ sample.test_pose})
    out = zoo.Outcome(defective=False)
    zoo.score_registration(shifted, out)
    assert out.wrong_lattice


@pytest.mark.parametrize(
    "argv",
    [
        ["--cases", "1"],
        ["--looks", "no-such-look"],
        ["--vit-only", "--no-models"],
        ["--vit-only", "--vit-model", "no/such/folder"],
        ["--conditions", "plain,no-such-condition"],
    ],
)
def test_bad_arguments_are_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        zoo.parse_args(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_vit_only_tables_show_the_vit_and_its_kinds_not_the_unloaded_models():
    """``--vit-only`` loads no VLM and no OD: their columns and goals are left out, not 0."""
    good = zoo.Outcome(defective=False, vit_flag=False)
    short = zoo.Outcome(defective=True, kinds=("short pin",), vit_flag=True)
    bent = zoo.Outcome(defective=True, kinds=("bent pin",), vit_flag=False)
    figs = zoo.figures([good, short, bent], with_models=True)
    assert figs["vit_short"][0] == 1.0 and figs["vit_bent"][0] == 0.0
    assert np.isnan(figs["base_f1"][0]) and np.isnan(figs["od_f1"][0])
    header = zoo.table([("classic", figs)], with_models=True, vit_only=True)[0]
    assert "ViT short flagged" in header and "VLM base F1" not in header
    goals = "\n".join(zoo.goal_lines(figs, vit_only=True))
    assert "vit_accuracy" in goals and "base_f1" not in goals and "soartc" not in goals


def test_a_condition_changes_the_test_shot_only_and_reproducibly():
    case = zoo.Case("grey-gold", 0, ())
    sample = zoo.make_sample_for(case, 1, zoo.SEED)
    assert zoo.under_condition(sample, "plain", 1, case, zoo.SEED) is sample
    dark = zoo.under_condition(sample, "gamma-1.6", 1, case, zoo.SEED)
    assert np.array_equal(dark.reference, sample.reference)
    assert dark.test.mean() < sample.test.mean() - 5  # gamma 1.6 darkens the mid-tones
    blur = zoo.under_condition(sample, "defocus", 1, case, zoo.SEED)
    again = zoo.under_condition(sample, "defocus", 1, case, zoo.SEED)
    assert np.array_equal(blur.test, again.test) and not np.array_equal(blur.test, sample.test)
    assert (
        np.abs(np.diff(blur.test.astype(float), axis=1)).mean()
        < np.abs(np.diff(sample.test.astype(float), axis=1)).mean()
    )  # defocus softens edges
    assert not np.array_equal(np.asarray(dark.image), np.asarray(sample.image))


def test_each_condition_gets_its_own_table_on_the_same_pairs(tmp_path):
    out = tmp_path / "zoo.md"
    argv = ["--cases", "3", "--looks", "classic", "--no-models", "--conditions",
            "plain,gamma-0.6", "--out", str(out)]  # fmt: skip
    assert zoo.main(argv) == 0
    text = out.read_text()
    assert "## Test shot: plain (as drawn)" in text and "## Test shot: gamma-0.6" in text
    rows = [line for line in text.splitlines() if line.startswith("| classic |")]
    assert len(rows) == 2  # one row per condition, the same three pairs under each


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [(0, 100, 0.0, 0.0362), (1, 36, 0.0007, 0.1453), (3, 120, 0.0052, 0.0713)],
)
def test_good_flagged_gets_an_exact_interval_even_at_zero(k, n, low, high):
    """0 of n has a bootstrap interval of [0, 0]; the Clopper-Pearson one says how rare."""
    rate, lo, hi, kk, nn = zoo.exact_interval([True] * k + [False] * (n - k))
    assert (kk, nn) == (k, n) and rate == k / n
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_the_exact_interval_is_a_column_and_decides_shown_or_not():
    goods = [zoo.Outcome(defective=False, vit_flag=False) for _ in range(150)]
    few = zoo.figures(goods[:40], with_models=True)
    many = zoo.figures(goods, with_models=True)
    assert many["vit_false_alarm"][1:] == (0.0, 0.0)  # the bootstrap says nothing at 0 of n
    header, _, row = zoo.table([("held", many)], with_models=True, vit_only=True)
    column = [c.strip() for c in header.strip("|").split("|")].index(
        "ViT good flagged, k/n [exact 95 %]"
    )
    assert [c.strip() for c in row.strip("|").split("|")][column] == "0/150 [0.0, 2.4] %"
    assert "<= 0.03 shown" in "\n".join(zoo.goal_lines(many, vit_only=True))
    assert "**not shown**" in "\n".join(zoo.goal_lines(few, vit_only=True))
