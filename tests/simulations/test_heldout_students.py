"""The held-out study over every shipped student: presets (old and new form), the runs per world, the tables, the
cards and the copied built-in rows (no compute)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "simulations"))

import heldout  # noqa: E402
import paper_table  # noqa: E402
import paper_table_setup  # noqa: E402
from studylib import StudyError  # noqa: E402

from tests.simulations.test_personalization_heldout import _row  # noqa: E402

SHIPPED = ["gru", "gru-log", "convtasnet", "nsnet2", "dtln"]
SYNTH = ["gru", "gru-log", "convtasnet", "convtasnet-voices", "nsnet2", "dtln"]  # the synth world's own list


def _resolve(*argv: str) -> dict:
    return heldout.resolve(heldout.parse_args(list(argv)))


def test_full_preset_measures_every_student_on_synth_with_the_default_teacher_only():
    s = _resolve()
    worlds = s["worlds"]
    assert worlds["builtin"]["students"] == [32] and worlds["noise"]["students"] == [32]
    assert worlds["synth"]["students"] == [32, 64, 128, 256] and s["students"] == [32, 64, 128, 256]
    assert worlds["noise"]["teachers"] == ["gru", "gru-log", "convtasnet"]
    assert heldout.world_runs("synth", worlds["synth"]) == [([32], SYNTH), ([64, 128, 256], ["gru-log"])]
    assert heldout.world_runs("builtin", worlds["builtin"]) == [([32], SHIPPED)]


def test_old_student_key_still_loads(tmp_path):
    preset = tmp_path / "old.yaml"
    preset.write_text(
        "full:\n  users: 3\n  snr_db: [5]\n  student: 64\n  teachers: [gru]\n"
        "  worlds:\n    builtin: {about: default}\n"
    )
    s = _resolve("--config", str(preset))
    assert s["worlds"]["builtin"]["students"] == [64] and s["worlds"]["builtin"]["student_teachers"] == {}
    assert _resolve("--quick")["worlds"]["noise"]["students"] == [32]  # the quick preset keeps `student: 32`


def test_command_line_students_and_teachers_meet_the_per_student_limits():
    s = _resolve("--worlds", "synth", "--students", "64", "128", "256", "--teachers", "gru-log")
    assert heldout.world_runs("synth", s["worlds"]["synth"]) == [([64, 128, 256], ["gru-log"])]
    s = _resolve("--worlds", "synth", "--students", "32", "64", "--teachers", "gru")
    assert heldout.world_runs("synth", s["worlds"]["synth"]) == [([32], ["gru"])]  # 2×64: gru-log only
    s = _resolve("--worlds", "synth", "--students", "64", "--teachers", "gru")
    with pytest.raises(StudyError, match="no \\(student, teacher\\) pair"):
        heldout.world_runs("synth", s["worlds"]["synth"])


def test_a_world_of_several_runs_computes_each_then_tabulates_all(tmp_path, monkeypatch):
    calls = []

    def fake_main(argv):
        args = paper_table.parse_args(argv)
        calls.append((args.students, args.teachers, args.no_compute, args.world_config))
        return {"rows": [_row("u0", teacher=t, student=h) for h in args.students for t in args.teachers]}

    monkeypatch.setattr(paper_table, "main", fake_main)
    s = _resolve("--worlds", "synth")
    rows = heldout.run_world(s, "synth", s["worlds"]["synth"], tmp_path)
    assert [c[:3] for c in calls] == [
        ([32], SYNTH, False),
        ([64, 128, 256], ["gru-log"], False),
        ([32, 64, 128, 256], SYNTH, True),
    ]
    assert calls[0][3].endswith("heldout-synth.yaml")
    assert {(r["student"], r["teacher"]) for r in rows} == {(32, t) for t in SYNTH} | {
        (h, "gru-log") for h in (64, 128, 256)
    }
    calls.clear()
    s = _resolve("--worlds", "synth", "--no-compute")
    heldout.run_world(s, "synth", s["worlds"]["synth"], tmp_path)
    assert [c[2] for c in calls] == [True]


def _students_rows() -> dict:
    rows = [_row("u0", teacher=t, teacher_db=10.0) for t in ("gru", "gru-log")]
    for h, personalized in ((64, 9.0), (128, 9.5)):
        rows.append(_row("u0", teacher="gru-log", teacher_db=10.0, personalized=personalized, student=h))
    return {
        "builtin": [_row("u0", teacher=t, teacher_db=11.0) for t in ("gru", "gru-log", "nsnet2")],
        "synth": rows,
    }


def test_students_table_beside_the_unchanged_2x32_table():
    table = heldout.tabulate(_students_rows())
    assert list(table["synth"]) == [32, 64, 128] and list(table["builtin"]) == [32]
    assert table["synth"][64]["gru-log"]["0"]["gain_mean"] == pytest.approx(2.0)
    worst = heldout.worst_leads(table)  # about the 2×32 only
    assert worst["gru-log"]["lead"] == pytest.approx(3.0) and worst["gru-log"]["worlds"] == [
        "builtin",
        "synth",
    ]
    assert worst["nsnet2"]["worlds"] == ["builtin"]
    text = heldout.markdown(table, {"builtin": {"about": "default"}, "synth": {"about": "tts"}})
    main, students = text.split("Every shipped student measured")
    assert "| synth | 0 dB | GRU-log T | 7.00 | 10.00 | +3.00 | 0 | 8.00 | +1.00 | 100 % |" in main
    assert "2×64" not in main and "NSNet2 T only on `builtin`" in main
    assert "| synth | 0 dB | 2×64 | GRU-log T | 7.00 | 10.00 | +3.00 | 9.00 | +2.00 | 100 % |" in students
    assert (
        "| builtin | 0 dB | 2×32 | GRU-log T |" in students
        and "| builtin | 0 dB | 2×32 | GRU T |" not in students
    )
    json.loads(json.dumps(table))  # results.json is plain JSON


def test_one_student_keeps_the_former_table():
    table = heldout.tabulate({"builtin": [_row("u0"), _row("u0", teacher="gru-log")]})
    text = heldout.markdown(table, {"builtin": {"about": "default"}})
    assert "Every shipped student" not in text and "some worlds only" not in text


def test_cards_get_every_students_figures(monkeypatch):
    written = {}
    monkeypatch.setattr(
        "fedpse.models.checkpoints.update_card", lambda path, entries: written.update({path.stem: entries})
    )
    table = heldout.tabulate(_students_rows())
    names = heldout.write_cards(table, {"synth": {"about": "tts"}})
    assert names == ["teacher-gru", "teacher-gru-log", "student-2x32", "student-2x64", "student-2x128"]
    synth = written["teacher-gru-log"]["held_out_worlds"]["synth"]["0dB"]
    assert set(synth) == {"users"} | {f"{k}_2x{h}" for k in ("minus_generic", "gain") for h in (32, 64, 128)}
    assert synth["gain_2x64"] == pytest.approx(2.0)
    student = written["student-2x64"]["held_out_worlds"]
    assert list(student) == ["synth"] and student["synth"]["0dB"]["si_sdr"] == pytest.approx(7.0)
    assert list(written["student-2x32"]["held_out_worlds"]) == ["builtin", "synth"]


def test_builtin_rows_are_topped_up_from_the_main_table(tmp_path, monkeypatch):
    main = tmp_path / "main.jsonl"
    rows = [_row(u, teacher=t, setting="k") for u in ("u0", "u1") for t in ("gru", "nsnet2")]
    main.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(paper_table_setup, "MAIN_ROWS", main)
    target = tmp_path / "w"
    target.mkdir()
    assert paper_table_setup.seed_plain_rows(target, 32, [0.0], ["gru"]) == 2
    assert (
        paper_table_setup.seed_plain_rows(target, 32, [0.0], ["gru", "nsnet2"]) == 0
    )  # a file there: left alone
    with open(target / "rows.jsonl", "a") as fh:
        fh.write('{"cut short')
    assert paper_table_setup.seed_plain_rows(target, 32, [0.0], ["gru", "nsnet2"], top_up=True) == 2
    assert paper_table_setup.seed_plain_rows(target, 32, [0.0], ["gru", "nsnet2"], top_up=True) == 0
    kept = paper_table.read_rows(target / "rows.jsonl")
    assert sorted((r["user"], r["teacher"]) for r in kept) == sorted((r["user"], r["teacher"]) for r in rows)
