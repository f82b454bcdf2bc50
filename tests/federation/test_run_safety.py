"""Run safety: one writer per run directory, folders checked before any work, server-side failures that stop a run
instead of failing every user, runs that did nothing useful do not exit 0, Ray processes of a killed run cleaned up.

(Ctrl-C / SIGKILL of a real ``fedpse simulate`` followed by ``--resume`` live in ``test_federation_robust.py``.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedpse.cli import main
from fedpse.config import dump_config
from fedpse.federation import interrupts
from fedpse.results.lock import LOCK_NAME, RunLock, RunLockedError, read_note
from fedpse.results.store import RunStore
from tests.federation.test_federation_parts import tiny_run_config

HOLD = """
import sys, time
from fedpse.results.lock import RunLock
RunLock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def hold_in_child(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir``'s lock (as a running ``fedpse simulate`` would)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def tiny_yaml(tiny_world, folder: Path, *extra: str) -> str:
    """The tiny federation config (tests/federation/test_federation_parts.py) as a YAML file for the command line."""
    folder.mkdir(parents=True, exist_ok=True)
    return str(dump_config(tiny_run_config(tiny_world, *extra), folder / f"tiny-{len(extra)}.yaml"))


# ---------------------------------------------------------------------------------------------- the lock
def test_a_second_writer_is_refused_naming_the_directory_and_the_holders_pid(tiny_world, tmp_path, capsys):
    run = tmp_path / "run"
    child = hold_in_child(run)
    try:
        config = tiny_yaml(tiny_world, tmp_path / "configs")
        assert main(["simulate", config, "--out", str(run), "--quiet"]) == 2
        note = read_note(run)
        assert capsys.readouterr().err.strip() == (
            f"fedpse: error: {run.resolve()}: another fedpse process (pid {child.pid} on {note['host']} since "
            f"{note['started']}) is writing this run directory; wait for it to finish (or stop it), or choose "
            "another --out"
        )
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # the refused writer wrote nothing
    finally:
        child.kill()
        child.wait()
    # the OS released the killed holder's lock: never stale
    lock = RunLock.acquire(run)
    assert lock.previous["pid"] == child.pid
    lock.release()


def test_resume_of_a_run_being_written_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    child = hold_in_child(run)
    try:
        assert main(["simulate", "--resume", str(run)]) == 2
        assert f"another fedpse process (pid {child.pid}" in capsys.readouterr().err
    finally:
        child.kill()
        child.wait()


def test_the_lock_is_exclusive_within_one_process_too_and_release_is_idempotent(tmp_path):
    first = RunLock.acquire(tmp_path / "r")
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        RunLock.acquire(tmp_path / "r")
    first.release()
    first.release()
    RunLock.acquire(tmp_path / "r").release(remove_if_unused=True)
    assert (tmp_path / "r").exists()  # not created by that lock: kept
    RunLock.acquire(tmp_path / "s").release(remove_if_unused=True)
    assert not (tmp_path / "s").exists()  # created by the lock, nothing else written: removed


# ---------------------------------------------------------------------------------------------- folders
def not_writable(tmp_path: Path) -> Path:
    """A folder nobody can create, root included: its parent is a regular file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return blocker / "sub"


@pytest.mark.parametrize(
    ("key", "where"),
    [("federation.cache_dir", "set"), ("federation.ray_tmpdir", "set"), ("--out", "out")],
)
def test_an_unwritable_folder_is_a_one_line_error_before_any_work(tiny_world, tmp_path, capsys, key, where):
    bad = not_writable(tmp_path)
    out = bad if where == "out" else tmp_path / "run"
    extra = [f"{key}={bad}"] if where == "set" else []
    started = time.perf_counter()
    config = tiny_yaml(tiny_world, tmp_path / "configs", *extra)
    assert main(["simulate", config, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(bad) in err and key in err, err
    assert "Traceback" not in err and time.perf_counter() - started < 30  # before Ray or the world
    assert not (tmp_path / "run").exists()  # nothing created


# ---------------------------------------------------------------------------------------------- orphans
def test_only_processes_marked_by_a_dead_holder_are_stopped(tmp_path):
    marker = f"test-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, interrupts.RAY_OWNER_ENV: marker}
    orphan = subprocess.Popen(["sleep", "300"], env=env)
    other = subprocess.Popen(["sleep", "300"], env={**os.environ, interrupts.RAY_OWNER_ENV: marker + "x"})
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        assert interrupts.processes_with_marker(marker) == [orphan.pid]
        # while the holder that noted the marker is alive, nothing is touched
        assert interrupts.kill_orphans({"pid": os.getpid(), "ray_owner": marker}) == 0
        assert orphan.poll() is None
        assert interrupts.kill_orphans({"pid": dead.pid, "ray_owner": marker}) == 1
        assert orphan.wait(timeout=10) == -signal.SIGTERM
        assert other.poll() is None  # another run's processes
    finally:
        for p in (orphan, other):
            p.kill()
            p.wait()


# ---------------------------------------------------------------------------------------------- server-side errors
@pytest.mark.ray
def test_a_server_side_failure_stops_the_run_instead_of_failing_every_user(
    tiny_world, tmp_path, capsys, monkeypatch
):
    from fedpse.federation.strategies.base import ServerSide

    def disk_full(self, chunks, user=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ServerSide, "teacher_outputs", disk_full)
    run = tmp_path / "run"
    assert main(["simulate", tiny_yaml(tiny_world, tmp_path), "--out", str(run), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fedpse: error: server-side pseudo_targets work for user u000")
    assert "OSError: [Errno 28] No space left on device" in err[-1] and "the run stops here" in err[-1]
    assert RunStore(run).read_table("attempts") == []  # nobody's round charged as a device failure
    assert not RunStore(run).finished
    monkeypatch.undo()  # the disk has space again: the run continues where it stopped
    assert main(["simulate", "--resume", str(run), "--quiet"]) == 0
    assert {u["status"] for u in RunStore(run).read_table("users")} == {"ok"}


@pytest.mark.ray
def test_a_run_where_no_user_succeeded_exits_non_zero_and_says_so(tiny_world, tmp_path, capsys):
    run = tmp_path / "run"
    everyone = "federation.fail_users=[u0000, u0001, u0002]"
    assert main(["simulate", tiny_yaml(tiny_world, tmp_path, everyone), "--out", str(run), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "0 of 3 users ok, 3 failed (u0000, u0001, u0002)" in captured.out
    assert "no user's round succeeded" in captured.err


@pytest.mark.ray
def test_a_teacher_that_outputs_nan_stops_the_run_naming_the_teacher_and_the_user(
    tiny_world, tmp_path, capsys
):
    from tests.models.test_numbers_safety import SqrtOfNegative
    from tests.models.test_onnx_teacher import dynamic_wave_model

    path = dynamic_wave_model(SqrtOfNegative(), tmp_path / "broken.onnx")
    teacher = ["teacher.arch=onnx", f"teacher.onnx.path={path}", "teacher.checkpoint=null"]
    run = tmp_path / "run"
    assert main(["simulate", tiny_yaml(tiny_world, tmp_path, *teacher), "--out", str(run), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "NonFiniteOutputError: teacher onnx" in err and "broken.onnx for user u000" in err, err
    assert RunStore(run).read_table("attempts") == [] and not RunStore(run).finished
