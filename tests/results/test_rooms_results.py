"""Users in rooms in the results: users.csv carries each user's RT60 and talker-to-microphone distance (only when
the world has rooms), summary.json and `fedpse report` give the gains per RT60 bin."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math

import pytest

import fedpse.federation.strategies  # noqa: F401  each mode registers its colour and order for reports
from fedpse.cli import main
from fedpse.config import load_config
from fedpse.results.report import build_report
from fedpse.results.rooms import bin_order, bin_stats, room_columns, rt60_bin
from fedpse.results.store import ROOM_COLUMNS, RunStore

# user -> (RT60 s, generic, personalized, teacher SI-SDR dB)
USERS = {
    "u0000": (0.25, 5.0, 6.0, 8.0),
    "u0001": (0.39, 4.0, 3.5, 6.0),
    "u0002": (0.40, 3.0, 4.0, 4.5),
    "u0003": (0.80, 1.0, 2.0, 3.0),
    "u0004": (0.95, 0.0, 0.5, 1.0),
}


def test_bins_are_half_open_the_last_holds_its_edge_and_outside_values_get_their_own():
    assert [rt60_bin(x) for x in (0.2, 0.3999, 0.4, 0.6, 0.8)] == [
        "0.2–0.4 s",
        "0.2–0.4 s",
        "0.4–0.6 s",
        "0.6–0.8 s",
        "0.6–0.8 s",
    ]
    assert rt60_bin(0.15) == "below 0.2 s" and rt60_bin(1.2) == "above 0.8 s"
    assert rt60_bin(math.nan) is None
    assert bin_order()[0] == "below 0.2 s" and bin_order()[-1] == "above 0.8 s"


def test_room_columns_from_a_users_plan():
    room = {"dims_m": [5, 4, 3], "rt60_s": 0.512, "source_m": [1, 1, 1.5], "mic_m": [4, 5, 1.5], "seed": 3}
    assert room_columns(room) == {"rt60_s": 0.512, "source_mic_m": pytest.approx(5.0)}
    assert room_columns(None) == {}


def test_bin_stats_count_users_gains_and_the_teachers_lead():
    rows = [
        {"rt60_s": rt60, "si_sdr_generic": g, "si_sdr_personalized": p, "si_sdr_teacher": t}
        for rt60, g, p, t in USERS.values()
    ]
    rows.append({"rt60_s": 0.3, "si_sdr_generic": 2.0})  # not scored (its device failed)
    stats = bin_stats(rows)
    assert list(stats) == ["0.2–0.4 s", "0.4–0.6 s", "0.6–0.8 s", "above 0.8 s"]
    low = stats["0.2–0.4 s"]
    assert (low["users"], low["scored"], low["improved"]) == (3, 2, 1)
    assert low["mean_gain_db"] == pytest.approx((1.0 - 0.5) / 2)
    assert low["teacher_lead_db"] == pytest.approx(2.5)  # the unscored user has no teacher score either
    assert stats["0.4–0.6 s"]["gap_closure_of_means"] == pytest.approx(1.0 / 1.5)


def _write_run(root, rooms: bool):
    overrides = ["world.room.enabled=true", "world.room.target=early"] if rooms else []
    store = RunStore.create(root, load_config(overrides=overrides))
    rows = []
    for user, (rt60, g, p, t) in USERS.items():
        row = {"user": user, "status": "ok", "si_sdr_noisy": g - 5, "si_sdr_generic": g}
        row |= {"si_sdr_personalized": p, "si_sdr_teacher": t, "gain_db": p - g}
        rows.append({**row, "rt60_s": rt60, "source_mic_m": 1.5})
    store.write_table("users", rows)
    store.write_summary({"mode": "pseudo_targets", "users": len(rows), "mean": {}, "wall_seconds": 1.0})
    return root


def test_room_columns_only_in_runs_with_rooms(tmp_path):
    with_rooms = _write_run(tmp_path / "rooms", rooms=True)
    without = _write_run(tmp_path / "dry", rooms=False)
    header = next(csv.reader(open(with_rooms / "users.csv")))
    assert header[:4] == ["user", "status", *ROOM_COLUMNS]
    assert not set(ROOM_COLUMNS) & set(next(csv.reader(open(without / "users.csv"))))


def test_report_shows_gains_per_rt60_bin_only_for_runs_with_rooms(tmp_path):
    report = build_report([_write_run(tmp_path / "rooms", rooms=True)], tmp_path / "out")
    text = report.markdown.read_text()
    assert "By room reverberation time (RT60)" in text
    assert "| pseudo_targets | 0.2–0.4 s | 2/2 | +0.25 | 1/2 (50 %) | +2.50 | 0.10 |" in text
    assert "| pseudo_targets | 0.4–0.6 s | 1/1 | +1.00 | 1/1 (100 %) | +1.50 | 0.67 |" in text
    assert "| pseudo_targets | above 0.8 s | 1/1 | +0.50 | 1/1 (100 %) | +1.00 | 0.50 |" in text
    assert "RT60" in report.html.read_text()
    plain = build_report([_write_run(tmp_path / "dry", rooms=False)], tmp_path / "out2")
    assert "RT60" not in plain.markdown.read_text()


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.ray
def test_simulate_in_rooms_writes_each_users_room_and_the_bins(tmp_path, monkeypatch):
    """`fedpse simulate` on users in rooms (stand-in dereverberation checkpoints): users.csv has each user's RT60
    and distance as its world plan says, summary.json the per-bin gains, the report the RT60 table."""
    from fedpse.models import zoo
    from fedpse.world.cache import build_world
    from tests.config.test_room_models import standin_builtins
    from tests.conftest import tiny_config

    monkeypatch.setattr(zoo, "BUILTIN_DIR", standin_builtins(tmp_path / "checkpoints"))
    rooms = ["world.room.enabled=true", "world.room.target=early", "world.room.rt60_s=[0.3, 0.7]"]
    cfg = tiny_config(tmp_path / "worlds", *rooms)
    world = build_world(cfg, progress=False)
    fast = ["federation.num_rounds=1", "federation.steps_per_round=2", "adapt.eval_every=1"]
    out = tmp_path / "run"
    argv = [
        "simulate",
        "--out",
        str(out),
        "--quiet",
        *[f"--set={o}" for o in [*TINY_OVERRIDES(cfg), *rooms, *fast]],
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    assert "fedpse: users are in rooms" in printed.getvalue()
    assert "RT60" in printed.getvalue()
    users = list(csv.DictReader(open(out / "users.csv")))
    for row in users:
        expected = room_columns(world.user(row["user"])["room"])
        assert float(row["rt60_s"]) == pytest.approx(expected["rt60_s"])
        assert float(row["source_mic_m"]) == pytest.approx(expected["source_mic_m"], abs=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert sum(b["users"] for b in summary["rt60_bins"].values()) == len(users)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", str(out)]) == 0
    assert "By room reverberation time (RT60)" in (out / "report" / "report.md").read_text()


def TINY_OVERRIDES(cfg) -> list[str]:  # noqa: N802  the tiny world's keys, as --set overrides
    from tests.conftest import TINY_WORLD

    return [
        *TINY_WORLD,
        f"world.cache_dir={cfg.world.cache_dir}",
        f"federation.cache_dir={cfg.federation.cache_dir}",
    ]
