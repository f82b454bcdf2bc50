"""The dereverb study: its preset, its tables per RT60 bin, and its --quick run end to end (2 users of a tiny world
in rooms, stand-in dereverberation checkpoints while the shipped ones are not there)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

SIMULATIONS = Path(__file__).resolve().parents[2] / "simulations"
sys.path.insert(0, str(SIMULATIONS))

import dereverb  # noqa: E402
import readme_results  # noqa: E402
from studylib import StudyError  # noqa: E402

from fedpse.models import zoo  # noqa: E402
from tests.config.test_room_models import standin_builtins  # noqa: E402


def _row(user, rt60, models="dereverb", snr=0.0, generic=5.0, personalized=6.0, teacher=8.0, oracle=7.0):
    row = {"snr_db": snr, "user": user, "models": models, "rt60_s": rt60, "source_mic_m": 1.0}
    for name, si_sdr in (("noisy", 0.0), ("generic", generic), ("personalized", personalized)):
        row |= {
            f"si_sdr_{name}": si_sdr,
            f"pesq_{name}": 1.0 + si_sdr / 10,
            f"stoi_{name}": 0.7 + si_sdr / 100,
        }
    for name, si_sdr in (("teacher", teacher), ("oracle", oracle)):
        row |= {
            f"si_sdr_{name}": si_sdr,
            f"pesq_{name}": 1.0 + si_sdr / 10,
            f"stoi_{name}": 0.7 + si_sdr / 100,
        }
    return row | {"gain_db": personalized - generic}


def test_full_preset_is_both_model_sets_on_users_in_rooms_scored_against_early_reverberation():
    s = dereverb.resolve(dereverb.parse_args([]))
    assert s["users"] == 24 and s["snr_db"] == [0.0, 5.0]
    assert list(s["models"]) == ["dereverb", "denoise"]
    assert "student.checkpoint=builtin:student-2x32-dereverb" in s["models"]["dereverb"]["set"]
    assert "teacher.checkpoint=builtin:teacher-gru-log" in s["models"]["denoise"]["set"]
    from fedpse.config import load_config

    cfg = load_config(overrides=s["overrides"])
    dereverb.check_rooms(cfg)
    assert cfg.world.room.rt60_s == [0.2, 0.8] and cfg.world.adaptation_minutes == 2.0


def test_bad_requests_are_one_line_errors():
    with pytest.raises(StudyError, match="unknown model set 'wet'"):
        dereverb.resolve(dereverb.parse_args(["--models", "wet"]))
    with pytest.raises(StudyError, match="model set 'x'"):
        dereverb.model_sets({"x": {"about": "no overrides"}}, None)
    from fedpse.config import load_config

    with pytest.raises(StudyError, match="world.room.target=dry"):
        dereverb.check_rooms(load_config(overrides=["world.room.enabled=true", "world.room.target=dry"]))
    with pytest.raises(StudyError, match="needs users in rooms"):
        dereverb.check_rooms(load_config())


def test_tables_bin_users_by_rt60_and_give_n_gain_improved_lead_and_closure():
    rows = [
        _row("u0", 0.25, personalized=6.0),
        _row("u1", 0.35, personalized=4.0),
        _row("u2", 0.70, personalized=7.0, teacher=9.0),
        _row("u0", 0.25, models="denoise", personalized=5.5, teacher=6.0),
    ]
    table = dereverb.tabulate(rows)
    low, high, everyone = (table["dereverb"]["0"][b] for b in ("0.2–0.4 s", "0.6–0.8 s", "all"))
    assert (low["users"], low["improved"]) == (2, 1) and low["mean_gain_db"] == pytest.approx(0.0)
    assert low["teacher_lead_db"] == pytest.approx(3.0) and low["gap_closure_of_means"] == pytest.approx(0.0)
    assert high["mean_gain_db"] == pytest.approx(2.0) and high["oracle_gain_db"] == pytest.approx(2.0)
    assert everyone["users"] == 3 and everyone["means"]["si_sdr_generic"] == pytest.approx(5.0)
    assert "0.4–0.6 s" not in table["dereverb"]["0"]  # no user there: no column
    text = dereverb.markdown(table, {"dereverb": {"about": "DR models"}, "denoise": {"about": "DN models"}})
    assert "0 dB, 0.2–0.4 s (n=2)" in text and "0 dB, all (n=3)" in text
    assert "| DR | 0 dB | 0.6–0.8 s | 1 | +2.00 | 100 % | +4.00 | 0.50 | +2.00 |" in text
    assert "| DN 2×32 fine-tuned by DN T | 5.50 |" in text
    json.dumps(table)  # results.json is plain JSON


def test_readme_block_is_the_studys_table(tmp_path):
    assert "dereverb" in readme_results.STUDIES and "dereverb" in readme_results.TABLE_MD_STUDIES
    (tmp_path / "table.md").write_text("| a |\n")
    assert readme_results.generate("dereverb", tmp_path, "x") == "| a |\n"


def test_quick_run_end_to_end_and_resumed_without_recomputing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "BUILTIN_DIR", standin_builtins(tmp_path / "checkpoints"))
    out = tmp_path / "out"
    argv = ["--quick", "--out", str(out), "--set", f"world.cache_dir={tmp_path / 'worlds'}"]
    argv += ["--set", f"federation.cache_dir={tmp_path / 'results'}"]
    results = dereverb.main(argv)
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert sorted((r["user"], r["models"]) for r in rows) == [
        ("u0000", "denoise"),
        ("u0000", "dereverb"),
        ("u0001", "denoise"),
        ("u0001", "dereverb"),
    ]
    for r in rows:
        assert 0.2 <= r["rt60_s"] <= 0.8 and 0.5 <= r["source_mic_m"] <= 4.0
        for metric in dereverb.METRICS:
            for model in dereverb.MODELS:
                assert math.isfinite(r[f"{metric}_{model}"]), (metric, model)
        assert r["personalized_steps"] >= 1 and r["oracle_steps"] >= 1
    # the two model sets score the same mixtures, their models differ
    by_user = {(r["user"], r["models"]): r for r in rows}
    assert by_user[("u0000", "dereverb")]["si_sdr_noisy"] == by_user[("u0000", "denoise")]["si_sdr_noisy"]
    assert by_user[("u0000", "dereverb")]["si_sdr_generic"] != by_user[("u0000", "denoise")]["si_sdr_generic"]
    assert results["table"]["dereverb"]["5"]["all"]["users"] == 2
    text = (out / "table.md").read_text()
    assert "5 dB, all (n=2)" in text and "Wide-band PESQ" in text and "STOI" in text
    capsys.readouterr()
    again = dereverb.main([*argv, "--no-compute"])
    assert "4 rows reused" in capsys.readouterr().out
    assert again["table"] == json.loads(json.dumps(results["table"]))
