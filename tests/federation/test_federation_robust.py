"""Devices, faults, resume and determinism: what a long federated run relies on.

The first half needs no Ray (device profiles, availability windows, selection, deadlines, fault draws, the undo
note, the run store). The second half runs real Flower + Ray simulations on the 3-user tiny world: one
``simulate_many`` (one Ray start-up) runs the faulty config twice and a charging-window config once; a separate
``fedpse simulate`` process is killed with SIGKILL mid-run and resumed.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fedpse.cli import main
from fedpse.config import dump_config, load_config
from fedpse.federation.fleet import DAY_S, HOUR_S, Fleet, InjectedFaultError, draw_faults
from fedpse.federation.interrupts import processes_with_marker
from fedpse.federation.ledger import Ledger
from fedpse.federation.plan import RunPlan, select_round, select_users
from fedpse.federation.prepare import resume_dirs
from fedpse.federation.resume import RoundUndo
from fedpse.federation.runner import simulate_many
from fedpse.models.checkpoints import load_checkpoint, save_checkpoint
from fedpse.models.gru import GRUMaskNet
from fedpse.results.lock import read_note
from fedpse.results.store import TABLES, TIMING_COLUMNS, RunStore
from tests.federation.test_federation_parts import tiny_run_config

USERS = ["u0000", "u0001", "u0002"]


def charging(*extra: str):
    return load_config(overrides=["federation.devices.availability=charging", *extra])


# ---------------------------------------------------------------------------------------------- profiles
def test_a_users_device_is_the_same_in_every_run_and_differs_between_users():
    fleet, again, other_seed = Fleet(charging()), Fleet(charging()), Fleet(charging("seed=5"))
    profiles = [fleet.profile(f"u{i:04d}") for i in range(200)]
    assert profiles[7] == again.profile("u0007") != other_seed.profile("u0007")
    speeds = np.array([p.speed for p in profiles])
    # log-normal around the reference device, sigma 0.5
    assert 0.8 < np.median(speeds) < 1.25 and speeds.min() < 0.7 and speeds.max() > 1.4
    assert all(1.0 <= p.uplink_mbps <= 20.0 and 5.0 <= p.downlink_mbps <= 100.0 for p in profiles)
    assert all(5.0 <= p.window_hours <= 9.0 for p in profiles)
    equal = Fleet(load_config(overrides=["federation.devices.speed_sigma=0"]))
    assert {equal.profile(f"u{i:04d}").speed for i in range(20)} == {1.0}


def test_charging_windows_open_nightly_around_the_configured_hour():
    fleet = Fleet(charging())
    for user in USERS:
        habit = fleet.profile(user).window_start_hour
        for day in range(3):
            w = fleet.window(user, day)
            opens = w.start_s / HOUR_S - 24 * day
            assert abs(opens - habit) < 3.0  # daily jitter, sigma 0.5 h
            assert fleet.available(user, w.start_s + 60) and not fleet.available(user, w.end_s + 60)
            assert fleet.window_left_s(user, w.start_s + 60) == pytest.approx(w.end_s - w.start_s - 60)
    starts = [Fleet(charging(f"seed={s}")).profile("u0000").window_start_hour for s in range(300)]
    offsets = [(h - 22.0 + 12) % 24 - 12 for h in starts]
    assert abs(np.mean(offsets)) < 0.3 and 1.2 < np.std(offsets) < 1.8  # 22:00 +- 1.5 h
    always = Fleet(load_config())
    assert always.window_left_s("u0000", 3.7 * DAY_S) == math.inf and always.window("u0000", 0) is None


def test_rounds_follow_the_schedule_unless_the_previous_one_ran_over():
    fleet = Fleet(
        load_config(
            overrides=["federation.devices.start_hour=1", "federation.devices.round_interval_hours=2"]
        )
    )
    assert fleet.round_start_s(1, 0.0) == HOUR_S
    assert fleet.round_start_s(3, 2 * HOUR_S) == 5 * HOUR_S
    assert fleet.round_start_s(3, 6 * HOUR_S) == 6 * HOUR_S


# ---------------------------------------------------------------------------------------------- selection
def test_only_users_inside_their_window_are_selected_and_failed_users_come_first():
    users = [f"u{i:04d}" for i in range(12)]
    eligible = users[3:9]
    for r in range(1, 6):
        picked = select_round(users, 0.25, 0, r, eligible=eligible).selected
        assert len(picked) == 3 and set(picked) <= set(eligible)
    retry = ["u0008", "u0001", "u0004"]  # u0001 is not inside its window: it waits for a later round
    selection = select_round(users, 0.25, 0, 1, eligible=eligible, retry=retry)
    assert selection.retried == ["u0008", "u0004"] and set(selection.retried) < set(selection.selected)
    # fewer available than wanted: all of them
    assert select_round(users, 0.5, 0, 1, eligible=users[:2]).selected == users[:2]
    assert select_round(users, 0.5, 0, 1, eligible=[]).selected == []


def test_with_everyone_eligible_and_nothing_to_retry_selection_is_the_plain_seeded_draw():
    users = [f"u{i:04d}" for i in range(30)]
    for r in range(1, 6):
        assert select_round(users, 0.3, 4, r, eligible=users).selected == select_users(users, 0.3, 4, r)


# ---------------------------------------------------------------------------------------------- time and faults
def test_a_messages_time_is_its_transfer_plus_the_compute_that_produced_it():
    cfg = load_config(
        overrides=[
            "federation.devices.speed_sigma=0",
            "federation.devices.uplink_mbps=[2, 2]",
            "federation.devices.downlink_mbps=[8, 8]",
            "federation.devices.reference_macs_per_s=1000000000",
            "federation.devices.server_macs_per_s=10000000000",
            "federation.faults.straggler_probability=1",
            "federation.faults.straggler_slowdown=4",
        ]
    )
    fleet = Fleet(cfg)
    assert fleet.message_seconds("u0000", 0, "up", 250_000, 3e9, 0.0) == pytest.approx((1.0, 3.0, 0.0))
    assert fleet.message_seconds("u0000", 2, "up", 250_000, 3e9, 0.0) == pytest.approx((1.0, 12.0, 0.0))
    assert fleet.message_seconds("u0000", 2, "down", 1_000_000, 0.0, 5e10) == pytest.approx((1.0, 0.0, 5.0))
    assert fleet.message_seconds("u0000", 2, "down", 0, 0.0, math.nan) == (0.0, 0.0, 0.0)  # ONNX: not counted


def test_a_round_ends_at_the_deadline_or_when_the_device_is_unplugged():
    fleet = Fleet(charging("federation.faults.round_deadline_s=600"))
    w = fleet.window("u0001", 0)
    assert fleet.deadline_s("u0001", w.start_s + 60) == (600.0, "missed_deadline")
    left, binding = fleet.deadline_s("u0001", w.end_s - 100)
    assert left == pytest.approx(100.0) and binding == "left_window"
    assert Fleet(load_config()).deadline_s("u0001", 0.0) == (math.inf, "")


def test_fault_draws_are_fixed_per_user_and_round_and_match_their_probabilities():
    faults = load_config(
        overrides=[
            "federation.faults.crash_probability=0.1",
            "federation.faults.dropout_probability=0.2",
            "federation.faults.straggler_probability=0.3",
        ]
    ).federation.faults
    draws = [draw_faults(faults, 0, f"u{i:04d}", r) for i in range(200) for r in range(1, 11)]
    assert draws == [draw_faults(faults, 0, f"u{i:04d}", r) for i in range(200) for r in range(1, 11)]
    assert draws != [draw_faults(faults, 1, f"u{i:04d}", r) for i in range(200) for r in range(1, 11)]
    n = len(draws)
    assert abs(sum(d.crash for d in draws) / n - 0.1) < 0.02
    assert abs(sum(d.dropout for d in draws) / n - 0.9 * 0.2) < 0.025  # a crash pre-empts a dropout
    assert abs(sum(d.straggler for d in draws) / n - 0.3) < 0.03
    assert not any(d.crash and d.dropout for d in draws)


def test_a_crash_strikes_the_rounds_first_message_and_a_dropout_its_training_message():
    fleet = Fleet(
        load_config(
            overrides=["federation.faults.crash_probability=0.5", "federation.faults.dropout_probability=0.5"]
        )
    )
    crash = next((u, r) for u in USERS for r in range(1, 20) if fleet.faults(u, r).crash)
    dropout = next((u, r) for u in USERS for r in range(1, 20) if fleet.faults(u, r).dropout)
    with pytest.raises(InjectedFaultError, match="injected crash"):
        fleet.inject(*crash, "train.upload")
    fleet.inject(*dropout, "train.upload")  # the upload goes through ...
    with pytest.raises(InjectedFaultError, match="injected dropout .* on train.adapt"):
        fleet.inject(*dropout, "train.adapt")  # ... then the device drops out


# ---------------------------------------------------------------------------------------------- undo and store
def test_a_failed_round_is_undone_on_the_device_and_on_the_server(tmp_path):
    plan = RunPlan(load_config(), tmp_path)
    device, server = plan.device_dir("u0000"), plan.server_dir("u0000")
    before = GRUMaskNet(num_layers=1, hidden=4)
    save_checkpoint(device / "student.pt", before, dtype="fp32")
    (device / "targets").mkdir(parents=True)
    np.save(device / "targets" / "adapt_000.npy", np.zeros(4))
    undo = RoundUndo(plan, "u0000")
    undo.begin(2)
    assert undo.pending_round() == 2
    # the round's work: a new student, new targets, a server copy and a teacher download
    save_checkpoint(device / "student.pt", GRUMaskNet(num_layers=1, hidden=4), dtype="fp32")
    np.save(device / "targets" / "adapt_001.npy", np.ones(4))
    save_checkpoint(server / "student.pt", GRUMaskNet(num_layers=1, hidden=4), dtype="fp32")
    save_checkpoint(device / "teacher.pt", GRUMaskNet(num_layers=1, hidden=4), dtype="fp32")
    undo.rollback()
    undo.rollback()  # idempotent (a kill during a rollback is finished on resume)
    restored = load_checkpoint(device / "student.pt")[0]
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in before.state_dict().items())
    assert sorted(p.name for p in (device / "targets").iterdir()) == ["adapt_000.npy"]
    assert not (server / "student.pt").exists()  # the server's copy did not exist before the round
    assert (device / "teacher.pt").exists()  # a downloaded teacher stays cached
    assert undo.pending_round() is None and not undo.root.exists()


def test_a_last_line_cut_short_by_a_kill_is_not_a_row(tmp_path):
    store = RunStore.create(tmp_path / "run", load_config())
    store.append("rounds", {"round": 1, "selected": 3})
    with open(store.path("rounds"), "a") as fh:
        fh.write("2,0.0,1.0")  # a writer killed mid-row
    assert [r["round"] for r in store.read_table("rounds")] == ["1"]


def test_ledger_totals_do_not_depend_on_the_order_messages_arrive_in():
    values = [1e9 / 3, 2.5e10 / 7, 123.456789123, 7e11 / 11, 0.1, 0.2]
    totals = []
    for order in (values, values[::-1], sorted(values)):
        ledger = Ledger()
        ledger.restore(
            [
                {
                    "round": "1",
                    "user": "u",
                    "direction": "up",
                    "bytes": "1",
                    "audio_seconds": "0",
                    "device_macs": repr(v),
                    "server_macs": "",
                }
                for v in order
            ]
        )
        totals.append(ledger.round_totals(1))
    assert totals[0] == totals[1] == totals[2] and math.isnan(totals[0]["server_macs"])


def test_resume_errors_name_the_file_the_key_or_the_finished_run(tmp_path, capsys):
    assert main(["simulate", "--resume", str(tmp_path / "nothing")]) == 2
    assert f"{tmp_path / 'nothing' / 'config.yaml'}: not found" in capsys.readouterr().err
    RunStore.create(tmp_path / "run", load_config())
    assert main(["simulate", "--resume", str(tmp_path / "run"), "--set", "federation.num_rounds=5"]) == 2
    assert "federation.num_rounds: run has 2, given 5" in capsys.readouterr().err
    assert main(["simulate", "--resume", str(tmp_path / "run"), "--out", str(tmp_path / "x")]) == 2
    assert "leave out --out and --modes" in capsys.readouterr().err
    RunStore(tmp_path / "run").write_summary({"mode": "pseudo_targets"})
    assert main(["simulate", "--resume", str(tmp_path / "run")]) == 2
    assert "already finished" in capsys.readouterr().err
    assert resume_dirs(tmp_path) == [tmp_path / "run"]  # a --modes folder: each run in it
    assert main(["simulate", "--resume", str(tmp_path)]) == 2
    assert "already finished" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- simulations
FAST = [
    "federation.num_rounds=3",
    "federation.chunks_per_round=1",
    "federation.steps_per_round=2",
    "adapt.eval_every=2",
]
# 10 % crashes, 10 % dropouts, 15 % stragglers (100x slower) against a 5 s deadline that others meet easily.
# Fault seed 1 draws: u0001 crashes in round 1, u0002 straggles in round 2, u0000 drops out in round 3.
FAULTY = [
    *FAST,
    "federation.faults.crash_probability=0.1",
    "federation.faults.dropout_probability=0.1",
    "federation.faults.straggler_probability=0.15",
    "federation.faults.straggler_slowdown=100",
    "federation.faults.round_deadline_s=5",
    "federation.faults.seed=1",
    "federation.devices.speed_sigma=0",
    "federation.devices.uplink_mbps=[100, 100]",
    "federation.devices.downlink_mbps=[100, 100]",
]
CHARGING = [
    *FAST,
    "federation.mode=teacher_weights",
    "federation.devices.availability=charging",
    "federation.devices.start_hour=21",
    "federation.devices.round_interval_hours=1.5",
]


def comparable(run_dir: Path, table: str) -> list[tuple]:
    """A table's rows without its timing columns, in a canonical order (rows within a round follow completion)."""
    drop = set(TIMING_COLUMNS.get(table, ()))
    return sorted(
        tuple(v for k, v in row.items() if k not in drop) for row in RunStore(run_dir).read_table(table)
    )


@pytest.fixture(scope="module")
def sims(tiny_world, tmp_path_factory):
    """The faulty config twice (dirs of equal name length: the run dir travels in every message's task record)
    and the charging config once, in one Ray session."""
    root = tmp_path_factory.mktemp("robust")
    private = f"federation.cache_dir={root / 'results'}"  # teacher outputs computed by these runs only
    runs = {
        "one": (tiny_run_config(tiny_world, *FAULTY, private), root / "one"),
        "two": (tiny_run_config(tiny_world, *FAULTY, private), root / "two"),
        "plug": (tiny_run_config(tiny_world, *CHARGING, private), root / "plug"),
    }
    summaries = simulate_many(list(runs.values()), progress=False)
    return root, {
        name: (cfg, run_dir, s) for (name, (cfg, run_dir)), s in zip(runs.items(), summaries, strict=True)
    }


@pytest.mark.ray
def test_with_injected_crashes_dropouts_and_stragglers_every_user_is_accounted_for(sims):
    _, runs = sims
    cfg, run_dir, summary = runs["one"]
    store, fleet = RunStore(run_dir), Fleet(cfg)
    attempts = {(int(a["round"]), a["user"]): a for a in store.read_table("attempts")}
    assert sorted(attempts) == [(r, u) for r in (1, 2, 3) for u in USERS]  # fraction 1: everyone, every round
    expected = {"crash": "failed", "dropout": "failed", "straggler": "missed_deadline", "": "ok"}
    for (r, user), a in attempts.items():
        assert a["injected"] == fleet.faults(user, r).label
        assert a["status"] == expected[a["injected"]], (r, user, a)
    assert {k for k, a in attempts.items() if a["status"] != "ok"} == {
        (1, "u0001"),
        (2, "u0002"),
        (3, "u0000"),
    }
    assert "injected crash" in attempts[(1, "u0001")]["error"]
    assert "injected dropout" in attempts[(3, "u0000")]["error"]
    assert float(attempts[(2, "u0002")]["sim_seconds"]) > 5.0 > float(attempts[(1, "u0002")]["sim_seconds"])
    assert attempts[(2, "u0001")]["retry"] == "1" and attempts[(3, "u0002")]["retry"] == "1"
    evaluations = {(int(e["round"]), e["user"]) for e in store.read_table("evaluations")}
    assert evaluations == {
        k for k, a in attempts.items() if a["status"] == "ok"
    }  # failed rounds are not scored
    users = {u["user"]: u for u in store.read_table("users")}
    assert users["u0001"]["status"] == users["u0002"]["status"] == "ok"  # retried and completed
    last_good = [e for e in store.read_table("evaluations") if e["user"] == "u0000" and e["round"] == "2"][0]
    u0 = users["u0000"]  # completed rounds 1 and 2, dropped out in round 3: its round-2 scores are kept
    assert u0["status"] == "failed" and "injected dropout" in u0["error"] and u0["scored_round"] == "2"
    assert u0["si_sdr_personalized"] == last_good["si_sdr_personalized"]
    assert (u0["rounds_completed"], u0["rounds_failed"], users["u0002"]["retries"]) == ("2", "1", "1")
    rounds = store.read_table("rounds")
    assert [(r["completed"], r["failed"], r["late"]) for r in rounds] == [
        ("2", "1", "0"),
        ("2", "1", "1"),
        ("2", "1", "0"),
    ]
    assert summary["attempts"] == {"failed": 2, "missed_deadline": 1, "ok": 6}


@pytest.mark.ray
def test_a_late_update_is_discarded_and_the_student_continues_from_before_it(sims):
    _, runs = sims
    cfg, run_dir, _ = runs["one"]
    student, card = load_checkpoint(RunPlan(cfg, run_dir).device_dir("u0002") / "student.pt")
    # round 2's late update was rolled back; round 3 trained on from round 1's student
    assert card["round"] == 3
    rows = {(int(e["round"]), e["user"]): e for e in RunStore(run_dir).read_table("evaluations")}
    assert rows[(3, "u0002")]["steps"] == "2" and (2, "u0002") not in rows
    assert not (run_dir / "undo").exists()  # no undo note outlives its round


@pytest.mark.ray
def test_the_same_config_and_seed_give_identical_tables(sims):
    _, runs = sims
    (_, one, s1), (_, two, s2) = runs["one"], runs["two"]
    for table in TABLES:
        assert comparable(one, table) == comparable(two, table), table
    assert RunStore(one).path("users").read_bytes() == RunStore(two).path("users").read_bytes()
    for key in ("mean", "totals", "attempts", "injected_faults", "sim"):
        assert s1[key] == s2[key], key


@pytest.mark.ray
def test_no_user_is_selected_outside_its_availability_window(sims):
    _, runs = sims
    cfg, run_dir, summary = runs["plug"]
    fleet, store = Fleet(cfg), RunStore(run_dir)
    outside = []
    for rnd in store.read_table("rounds"):
        start = float(rnd["sim_start_s"])
        selected = {a["user"] for a in store.read_table("attempts") if a["round"] == rnd["round"]}
        assert selected == {u for u in USERS if fleet.available(u, start)}  # fraction 1: every eligible user
        assert int(rnd["eligible"]) == len(selected)
        outside += [(rnd["round"], u) for u in USERS if not fleet.available(u, start)]
    assert outside  # the check is not vacuous: some users were unplugged at some rounds
    devices = {d["user"]: d for d in store.read_table("devices")}
    assert all(d["availability"] == "charging" and d["window_start_hour"] for d in devices.values())
    users = {u["user"]: u for u in store.read_table("users")}
    assert [int(users[u]["rounds_available"]) for u in USERS] == [
        sum(fleet.available(u, float(r["sim_start_s"])) for r in store.read_table("rounds")) for u in USERS
    ]
    assert summary["sim"]["start_s"] == 21 * HOUR_S


def _descendants_of_group(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and not _zombie(int(entry)):
                    pids.append(int(entry))
            except ProcessLookupError:
                pass
    return pids


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _start_run(config: Path, cut: Path, attempts: int) -> subprocess.Popen:
    """``fedpse simulate`` in its own process group (as from a terminal), returned once ``attempts`` user rounds
    have committed."""
    command = [sys.executable, "-m", "fedpse.cli", "simulate", str(config), "--quiet", "--out", str(cut)]
    proc = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while len(RunStore(cut).read_table("attempts")) < attempts:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    return proc


def _reap(proc: subprocess.Popen, cut: Path) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pid in _descendants_of_group(proc.pid):
        os.kill(pid, signal.SIGKILL)
    proc.stderr.close()
    for link in Path(tempfile.gettempdir()).glob("fedpse-*/r"):  # the killed run's short path for Ray
        if link.is_symlink() and Path(os.readlink(link)).is_relative_to(cut.resolve()):
            shutil.rmtree(link.parent)


@pytest.mark.ray
def test_a_run_killed_with_sigkill_resumes_to_exactly_the_rows_of_an_uninterrupted_run(sims, capsys):
    root, runs = sims
    cfg, reference, _ = runs["one"]
    cut = root / "cut"  # as long a name as the reference's
    config = dump_config(cfg, root / "faulty.yaml")  # the reference run's resolved config
    proc = _start_run(config, cut, attempts=4)  # round 1 done, round 2 under way
    marker = read_note(cut)["ray_owner"]
    try:
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as the OOM killer would
        proc.wait()
        orphans = processes_with_marker(marker)  # Ray's agents outlive a killed driver for a minute or two
        assert not RunStore(cut).finished
        assert main(["simulate", "--resume", str(cut), "--quiet"]) == 0  # cleans them up first
        left = [p for p in processes_with_marker(marker) if not _zombie(p)]
    finally:
        _reap(proc, cut)
    if orphans:
        assert "Ray process(es) left by a killed run" in capsys.readouterr().err
    assert not left
    for table in TABLES:
        assert comparable(cut, table) == comparable(reference, table), table
    assert main(["simulate", "--resume", str(cut)]) == 2  # finished now


@pytest.mark.ray
def test_ctrl_c_stops_within_seconds_and_resume_equals_an_uninterrupted_run(sims, capsys):
    root, runs = sims
    cfg, reference, _ = runs["one"]
    cut = root / "ctc"  # as long a name as the reference's (the run dir travels in every message)
    config = dump_config(cfg, root / "faulty-c.yaml")
    proc = _start_run(config, cut, attempts=4)
    try:
        # one writer per run directory: a second one is refused at once, naming the holder
        assert main(["simulate", "--resume", str(cut)]) == 2
        err = capsys.readouterr().err
        assert (
            f"{cut.resolve()}: another fedpse process (pid {proc.pid}" in err and len(err.splitlines()) == 1
        )
        assert main(["simulate", str(config), "--quiet", "--out", str(cut)]) == 2
        assert f"(pid {proc.pid}" in capsys.readouterr().err
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        sent = time.monotonic()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the run did not stop within 60 s of Ctrl-C")
        stopped_s = time.monotonic() - sent
        message = proc.stderr.read().decode()
        deadline = time.monotonic() + 10
        while _descendants_of_group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _descendants_of_group(proc.pid)
    finally:
        _reap(proc, cut)
    assert proc.returncode == 130 and stopped_s < 20, (proc.returncode, stopped_s, message[-2000:])
    assert f"fedpse simulate --resume {cut}" in message and "Traceback" not in message
    assert not left  # the Ray session it started is shut down
    attempts = RunStore(cut).read_table("attempts")
    assert not any("KeyboardInterrupt" in a["error"] or "interrupt" in a["error"] for a in attempts)
    assert main(["simulate", "--resume", str(cut), "--quiet"]) == 0
    for table in TABLES:
        assert comparable(cut, table) == comparable(reference, table), table
