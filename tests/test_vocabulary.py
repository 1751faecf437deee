"""The shared vocabulary: positions, findings, answer text and bbox_str, written and read back."""

from __future__ import annotations

import random
import string

import pytest

from qeu_space.vocabulary import (
    ALL_POSITIONS,
    CLASS_LABELS,
    PASSED_ANSWER,
    DefectKind,
    Direction,
    Finding,
    Position,
    class_labels,
    dequantize,
    format_answer,
    format_bbox_str,
    kinds_in_order,
    od_categories,
    parse_answer,
    parse_bbox_str,
    quantize,
)


@pytest.mark.parametrize(
    "text, name",
    [("U1", "U1"), ("1U", "U1"), ("U-1", "U1"), ("u 1", "U1"), (" c7 ", "C7"), ("9d", "D9"),
     ("D_5", "D5")],
)  # fmt: skip
def test_position_parse_accepts_the_design_forms(text, name):
    assert Position.parse(text).name == name


@pytest.mark.parametrize("text", ["X1", "U0", "U10", "", "UU", "1", "C7 C8", "row"])
def test_position_parse_rejects_non_positions(text):
    with pytest.raises(ValueError, match="grid position"):
        Position.parse(text)


def test_positions_sort_u_to_d_then_by_column():
    names = [p.name for p in sorted(ALL_POSITIONS, reverse=True)][::-1]
    assert names[:3] == ["U1", "U2", "U3"] and names[9] == "C1" and names[-1] == "D9"


@pytest.mark.parametrize(
    "args, message",
    [
        (("C7", "missing pin", "left"), "takes no direction"),
        (("C7", "sideways pin"), "unknown defect kind"),
        (("Z7", "missing pin"), "grid position"),
        (("C7", "bent pin", "diagonal"), "diagonal"),
        (("C7", "missing pin", None, (5, 5, 4, 9)), "x2 > x1"),
        (("C7", "missing pin", None, (0, 0, float("nan"), 1)), "finite"),
    ],
)
def test_finding_rejects_inconsistent_fields(args, message):
    with pytest.raises(ValueError, match=message):
        Finding(*args)


@pytest.mark.parametrize(
    "text, kind",
    [("bent pin", "BENT"), ("BENDNG", "BENT"), ("bent", "BENT"), ("missing pin", "MISSING"),
     ("NUKENG", "MISSING"), ("short pin", "SHORT"), ("SHORTNG", "SHORT"), ("Short", "SHORT")],
)  # fmt: skip
def test_defect_kinds_parse_from_name_label_or_keyword(text, kind):
    assert DefectKind.parse(text) is DefectKind[kind]


def test_short_pin_has_a_name_a_label_and_no_direction():
    f = Finding("C4", "short pin")
    assert (f.kind.value, f.kind.label, f.kind.keyword, f.describe()) == (
        "short pin", "SHORTNG", "short", "C4 short pin"
    )  # fmt: skip
    with pytest.raises(ValueError, match="takes no direction"):
        Finding("C4", "short pin", "up")
    assert Finding.from_dict(f.to_dict()) == f


def test_opt_in_kinds_add_labels_and_categories_after_the_default_ones():
    assert CLASS_LABELS == class_labels() == ("OK", "BENDNG", "NUKENG")
    assert class_labels(["short", "bent", "missing"]) == ("OK", "BENDNG", "NUKENG", "SHORTNG")
    assert class_labels(["short"]) == ("OK", "BENDNG", "NUKENG", "SHORTNG")  # ids never move
    assert od_categories() == ("bent pin", "missing pin")
    assert od_categories(DefectKind) == ("bent pin", "missing pin", "short pin")
    assert kinds_in_order(["SHORTNG", "missing", "missing pin"]) == (
        DefectKind.MISSING, DefectKind.SHORT
    )  # fmt: skip
    with pytest.raises(ValueError, match="at least one"):
        kinds_in_order([])


def test_finding_accepts_labels_and_round_trips_as_dict():
    f = Finding("7c", "BENDNG", "Up", (1, 2, 3, 4))
    assert (f.position.name, f.kind, f.direction) == ("C7", DefectKind.BENT, Direction.UP)
    assert Finding.from_dict(f.to_dict()) == f and Finding.from_dict(f.to_dict()).box == f.box


def test_canonical_answer_orders_findings_u_to_d_then_columns():
    findings = [Finding("C7", "missing pin"), Finding("U3", "bent pin", "left")]
    assert format_answer(findings) == "Defective. 2 defects: U3 bent pin (left); C7 missing pin."
    assert format_answer([Finding("C4", "short pin"), *findings]) == (
        "Defective. 3 defects: U3 bent pin (left); C4 short pin; C7 missing pin."
    )
    assert format_answer([findings[0]]) == "Defective. 1 defect: C7 missing pin."
    assert format_answer([]) == PASSED_ANSWER == "Passed. No defects found."


def _random_findings(rng: random.Random) -> list[Finding]:
    positions = rng.sample(ALL_POSITIONS, rng.randint(0, 5))
    out = []
    for p in positions:
        kind = rng.choice(list(DefectKind))
        direction = rng.choice(list(Direction)) if kind.has_direction else None
        out.append(Finding(p, kind, direction))
    return out


def test_every_canonical_answer_parses_back_to_its_findings():
    rng = random.Random(0)
    for _ in range(500):
        findings = _random_findings(rng)
        parsed = parse_answer(format_answer(findings))
        assert set(parsed.findings) == set(findings)
        assert parsed.verdict == ("defective" if findings else "passed")
        assert parsed.stated_count == (len(findings) or None)


U3L = Finding("U3", "bent pin", "left")
C7M = Finding("C7", "missing pin")
C4S = Finding("C4", "short pin")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Defective. 2 defects: C7 missing pin; U3 bent pin (left).", {U3L, C7M}),
        ("defective. 2 defects: u3 bent pin (left); c7 missing pin.", {U3L, C7M}),
        ("DEFECTIVE. 2 DEFECTS: U3 BENT PIN (LEFT); C7 MISSING PIN.", {U3L, C7M}),
        ("The pin at position C7 is missing.", {C7M}),
        ("position 7C is missing", {C7M}),
        ("Missing pin at C7; bent pin (left) at U3", {U3L, C7M}),
        ("The pin at U3 is bent to the left and C7 is missing.", {U3L, C7M}),
        ("I found a bent pin (left) at U-3 and an empty socket at 7-C.", {U3L, C7M}),
        ("Row C, column 7: missing pin.", {C7M}),
        ("C7: missing pin. U3: bent pin, pointing left", {U3L, C7M}),
        ("Sure! Looking closely, pin U3 leans leftwards. Also, C7 is absent.", {U3L, C7M}),
        ("C7\nmissing", {C7M}),
        (
            "Pins U3 and U4 are missing",
            {Finding("U3", "missing pin"), Finding("U4", "missing pin")},
        ),
        ("U3 is bent", {Finding("U3", "bent pin")}),  # direction not stated
        # short pins: the canonical text and what a model may say instead
        ("Defective. 1 defect: C4 short pin.", {C4S}),
        ("Defective. 2 defects: U3 bent pin (left); C4 short pin.", {U3L, C4S}),
        ("The pin at C4 is short.", {C4S}),
        ("C4 looks shorter than its neighbours", {C4S}),
        ("Pin C4 is pushed in; C7 is missing.", {C4S, C7M}),
        ("a pushed-in pin at 4C", {C4S}),
        ("C4 is pushed into the housing and U3 is bent left", {C4S, U3L}),
        ("C4: recessed terminal", {C4S}),
        ("The terminal at row C column 4 has sunk", {C4S}),
        ("SHORTNG at C4", {C4S}),
        ("In short, C7 is missing.", {C7M}),  # "in short" names no kind
        ("in short C7 is missing", {C7M}),
        ("U3 bent, pushed down", {Finding("U3", "bent pin", "down")}),  # pushed aside: not short
    ],
)
def test_parser_reads_paraphrases(text, expected):
    parsed = parse_answer(text)
    assert set(parsed.findings) == expected
    assert parsed.verdict == "defective"


@pytest.mark.parametrize(
    "text, verdict",
    [
        ("Passed. No defects found.", "passed"),
        ("All pins are present; the product looks good.", "passed"),
        ("no defects", "passed"),
        ("In short: no defects.", "passed"),
        ("The short answer: passed.", "passed"),
        ("The product is defective.", "defective"),
        ("This is a poster of a connector.", None),
        ("", None),
        ("<loc_12><loc_500>", None),
        ("Z9 bent, X1 missing", None),
        ("🙂" * 50, None),
    ],
)
def test_parser_turns_nonsense_into_no_findings(text, verdict):
    parsed = parse_answer(text)
    assert parsed.findings == () and parsed.verdict == verdict


def test_parser_never_raises_on_random_text():
    rng = random.Random(1)
    alphabet = string.printable + "ÜÇ漢字→"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        parse_answer(text)
    assert parse_answer(None).findings == ()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "coord, size, expected",
    [(0, 448, 0), (0.447, 448, 0), (0.448, 448, 1), (447.9, 448, 999), (448, 448, 999),
     (-3, 448, 0), (5000, 448, 999), (224, 448, 500)],
)  # fmt: skip
def test_quantize_is_florence2_floor_rule_clamped(coord, size, expected):
    assert quantize(coord, size) == expected


def test_bbox_str_round_trip_within_one_bin():
    rng = random.Random(2)
    size = (448, 448)
    for _ in range(200):
        findings = []
        for f in _random_findings(rng):
            x1, y1 = rng.uniform(0, 400), rng.uniform(0, 400)
            findings.append(
                Finding(
                    f.position,
                    f.kind,
                    f.direction,
                    (x1, y1, x1 + rng.uniform(1, 48), y1 + rng.uniform(1, 48)),
                )
            )
        text = format_bbox_str(findings, size)
        assert "<loc_1000>" not in text
        back = parse_bbox_str(text, size)
        assert [label for label, _ in back] == [
            f.kind.value for f in sorted(findings, key=lambda f: f.sort_key)
        ]
        for (_, box), f in zip(back, sorted(findings, key=lambda f: f.sort_key), strict=True):
            assert all(abs(a - b) <= 448 / 1000 for a, b in zip(box, f.box, strict=True))


def test_bbox_str_needs_boxes_and_dequantize_is_bin_centre():
    with pytest.raises(ValueError, match="no box"):
        format_bbox_str([C7M], (448, 448))
    assert dequantize(0, 1000) == 0.5 and dequantize(999, 448) == pytest.approx(447.776)
