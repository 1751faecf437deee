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
