"""The personalization and held-out studies: presets, the paper_table runs they make, their tables (no compute)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

SIMULATIONS = Path(__file__).resolve().parents[2] / "simulations"
sys.path.insert(0, str(SIMULATIONS))

import heldout  # noqa: E402
import paper_table  # noqa: E402
import personalization  # noqa: E402
from studylib import StudyError  # noqa: E402


def _row(user, teacher="gru", snr=0.0, generic=7.0, personalized=8.0, teacher_db=9.0, **extra):
    return {
        "snr_db": snr,
        "user": user,
        "student": 32,
        "teacher": teacher,
        "si_sdr_noisy": 0.0,
        "si_sdr_generic": generic,
        "si_sdr_personalized": personalized,
        "si_sdr_teacher": teacher_db,
        "gain_db": personalized - generic,
        "device_macs": 10.0,
        **extra,
    }


def test_presets_resolve_with_per_teacher_user_counts():
    s = personalization.resolve(personalization.parse_args([]))
    assert s["users"] == 40 and s["snr_db"] == [0.0, 5.0]
    guard = s["variants"]["guard"]
    assert guard["set"] == ["adapt.guard=on"]
    assert personalization.users_of(s, guard, "gru") == 40
    assert personalization.users_of(s, guard, "identity") == 20
    forced = personalization.resolve(personalization.parse_args(["--users", "3"]))
    assert personalization.users_of(forced, forced["variants"]["guard"], "identity") == 3
    h = heldout.resolve(heldout.parse_args([]))
    assert set(h["worlds"]) == {"builtin", "synth", "noise"}
    for spec in h["worlds"].values():
        assert spec.get("config") is None or (SIMULATIONS.parent / spec["config"]).is_file()


def test_unknown_variant_or_world_is_a_one_line_error():
    with pytest.raises(StudyError, match="unknown variant 'nope'"):
        personalization.resolve(personalization.parse_args(["--variants", "nope"]))
    with pytest.raises(StudyError, match="unknown world 'mars'"):
        heldout.resolve(heldout.parse_args(["--worlds", "mars"]))
    with pytest.raises(StudyError, match="variant 'x'"):
        personalization.variant_spec("x", {"set": [], "colour": "red"}, ["gru"])


def test_paper_table_command_line_of_a_variant(tmp_path):
    s = personalization.resolve(personalization.parse_args(["--quick"]))
    argv = personalization.paper_table_argv(s, 3, ["gru"], tmp_path, ["adapt.guard=on"])
    args = paper_table.parse_args(argv)
    assert args.users == 3 and args.teachers == ["gru"] and args.out == str(tmp_path)
    assert "adapt.guard=on" in args.overrides and "adapt.steps=10" in args.overrides


def test_world_config_becomes_overrides_applied_first(tmp_path):
    overrides = paper_table.config_file_overrides(str(SIMULATIONS.parent / "configs" / "heldout-noise.yaml"))
    assert overrides == ['world.noise.families=["wind", "rain"]']
    s = paper_table.resolve(
        paper_table.parse_args(
            [
                "--world-config",
                str(SIMULATIONS.parent / "configs/heldout-noise.yaml"),
                "--set",
                "adapt.steps=5",
            ]
        )
    )
    assert s["overrides"][0].startswith("world.noise.families") and s["overrides"][-1] == "adapt.steps=5"
    with pytest.raises(StudyError, match="no such file"):
        paper_table.config_file_overrides(str(tmp_path / "missing.yaml"))


def test_new_adapt_keys_left_off_keep_the_rows_setting_key():
    """Rows computed before the guard and refresh keys existed are reused by plain-KD runs (same computation)."""
    from fedpse.config import load_config

    plain = paper_table.setting_key(load_config(), "w", "s", "t", None)
    assert (
        paper_table.setting_key(load_config(overrides=["adapt.guard_margin_db=1"]), "w", "s", "t", None)
        == plain
    )
    assert paper_table.setting_key(load_config(overrides=["adapt.guard=on"]), "w", "s", "t", None) != plain
    assert (
        paper_table.setting_key(load_config(overrides=["adapt.refresh=remix"]), "w", "s", "t", None) != plain
    )


def test_personalization_table_counts_losers_kept_users_and_cost():
    plain = [_row("u0", personalized=8.0), _row("u1", personalized=6.5)]
    guard = [
        _row("u0", personalized=8.0, guard_decision="adopted", device_macs=12.0),
        _row("u1", personalized=7.0, guard_decision="kept_generic", device_macs=12.0),
    ]
    bad = [_row("u0", teacher="identity", personalized=1.0, teacher_db=0.0)]
    table = personalization.tabulate({"plain": plain + bad, "guard": guard})
    p, g = table["plain"]["gru"]["0"], table["guard"]["gru"]["0"]
    assert p["below_generic_by_0_1"] == 1 and p["worst_gain"] == pytest.approx(-0.5)
    assert (
        g["kept_generic"] == 1 and g["worst_gain"] == 0.0 and g["device_macs_vs_plain"] == pytest.approx(1.2)
    )
    assert math.isnan(
        table["plain"]["identity"]["0"]["gap_closure_of_means"]
    )  # the teacher is below the student
    text = personalization.markdown(table, {"plain": {"set": []}, "guard": {"set": ["adapt.guard=on"]}})
    assert "`guard`: `adapt.guard=on`" in text and "| 0 dB | GRU T | guard | +0.50 |" in text


def test_heldout_table_finds_each_teachers_weakest_world(tmp_path):
    by_world = {
        "builtin": [_row("u0", teacher_db=10.0), _row("u0", teacher="gru-log", teacher_db=11.0)],
        "synth": [_row("u0", teacher_db=8.0), _row("u0", teacher="gru-log", teacher_db=7.5)],
    }
    table = heldout.tabulate(by_world)
    worst = heldout.worst_leads(table)
    assert worst["gru"]["lead"] == pytest.approx(1.0) and worst["gru"]["where"] == "synth 0 dB"
    assert worst["gru-log"]["lead"] == pytest.approx(0.5)
    text = heldout.markdown(table, {"builtin": {"about": "default"}, "synth": {"config": "x.yaml"}})
    assert "smallest lead over generic" in text and "`synth`: x.yaml" in text
    json.dumps(table)  # results.json is plain JSON
