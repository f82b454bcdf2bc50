"""A simulation joins an existing two-node Ray cluster, started on loopback with the README's recipe
(`ray start --head` then `ray start --address=...`), and its client actors run on both nodes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fedpse.config import load_config
from fedpse.federation.prepare import RayClusterError
from fedpse.federation.runner import simulate
from tests.federation.test_federation_parts import tiny_run_config

RAY = shutil.which("ray")
pytestmark = [
    pytest.mark.ray,  # runs a real two-node Ray cluster
    pytest.mark.skipif(RAY is None, reason="the `ray` command is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_processes_mentioning(marker: str) -> None:
    """Stop only this cluster's processes (`ray stop` would stop every Ray on the machine)."""
    for _ in range(2):
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and int(pid) != os.getpid():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.5)


@pytest.fixture(scope="module")
def two_node_cluster():
    temp = tempfile.mkdtemp(prefix="fedpse-rc-", dir="/tmp")  # short: Ray's socket paths are length-limited
    port = _free_port()
    env = {**os.environ, "RAY_TMPDIR": temp, "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    head = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"]
    worker = [RAY, "start", f"--address=127.0.0.1:{port}"]
    try:
        for cmd in (head + common, worker + common):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        _kill_processes_mentioning(temp)
        _kill_processes_mentioning(f"127.0.0.1:{port}")
        shutil.rmtree(temp, ignore_errors=True)


def test_a_simulation_runs_across_both_nodes_of_an_existing_cluster(
    tiny_world, two_node_cluster, tmp_path, monkeypatch
):
    import ray
    import ray._private.state as ray_state

    cfg = tiny_run_config(
        tiny_world,
        f"federation.ray_address={two_node_cluster}",
        "federation.num_rounds=1",
        "federation.chunks_per_round=1",
        "federation.steps_per_round=2",
        "adapt.eval_every=1",
    )
    summary = simulate(cfg, tmp_path / "run", progress=False)
    assert summary["users_ok"] == summary["users"] == 3
    assert summary["simulation"]["ray_address"] == two_node_cluster
    assert summary["simulation"]["ray_nodes"] == 2
    assert summary["simulation"]["ray_cpus"] == 2
    # Which node each client actor lived on (dead actors stay in the cluster's table).
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray.init(address=two_node_cluster, logging_level="ERROR")
    try:
        actors = [a for a in ray_state.actors().values() if a.get("ActorClassName") == "ClientAppActor"]
        nodes = {a["Address"]["NodeID"] for a in actors}
    finally:
        ray.shutdown()
    assert len(actors) == 2 and len(nodes) == 2


def test_an_unreachable_cluster_address_is_a_clear_error(tiny_world, tmp_path):
    cfg = tiny_run_config(tiny_world, f"federation.ray_address=127.0.0.1:{_free_port()}")
    with pytest.raises(RayClusterError, match=r"federation.ray_address=.*nothing answers there"):
        simulate(cfg, tmp_path / "run", progress=False)


def test_ray_address_from_the_command_line_is_a_config_override():
    from fedpse.cli import _parser

    args = _parser().parse_args(["simulate", "--ray-address", "10.0.0.1:6379", "--set", "seed=3"])
    cfg = load_config(None, args.overrides)
    assert cfg.federation.ray_address == "10.0.0.1:6379" and cfg.seed == 3
