"""Run federated simulations on Flower's Ray backend with 2-core-friendly defaults.

``simulate(cfg, run_dir)`` runs one config; ``simulate_many([(cfg, run_dir), ...])`` runs several back to back in
one simulation, paying Ray's start-up once (e.g. every delivery mode on the same users). Defaults: one CPU per
client actor (``federation.num_cpus``), one torch/OpenMP thread per actor, Flower telemetry off, ``FLWR_HOME`` and
Ray's temp folder under the run directory (``<run dir>/flwr``, ``<run dir>/ray``; Ray's socket paths must stay
short, so a long run path is handed to Ray through a short ``/tmp/fedpse-*/r`` symlink, removed afterwards).
Checking and creating run directories before that is ``prepare``; what happens inside a run is ``server_app``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from fedpse.config import Config, FederationConfig
from fedpse.federation.interrupts import RAY_OWNER_ENV, STOP, Interrupted, trap_signals
from fedpse.federation.ledger import Observer
from fedpse.federation.plan import RunPlan
from fedpse.federation.prepare import (
    RayClusterError,
    check,
    create,
    default_run_dir,
    probe_cluster,
    release,
    resumable,
    resume_dirs,
)
from fedpse.results import lock as run_lock
from fedpse.results.store import RunDirError, RunStore

# Ray's unix sockets live under <tmp>/ray/session_<date>_<pid>/sockets/...; AF_UNIX paths max out at 107 bytes.
MAX_RAY_TMPDIR_CHARS = 40


# ------------------------------------------------------------------------------------------- environment
def _ray_tmpdir(run_dir: Path, configured: str | None) -> tuple[Path, Path | None]:
    """Ray's folder (``<run dir>/ray`` unless configured) and, when that path is too long for Ray's sockets, a
    short ``/tmp/fedpse-*/r`` symlink to it to hand to Ray instead (its parent is removed after the run)."""
    if configured:
        path = Path(configured).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path, None
    path = run_dir / "ray"
    path.mkdir(parents=True, exist_ok=True)
    if len(str(path)) <= MAX_RAY_TMPDIR_CHARS:
        return path, None
    link = Path(tempfile.mkdtemp(prefix="fedpse-")) / "r"
    link.symlink_to(path, target_is_directory=True)
    return link, link.parent


class _ClientErrorFilter(logging.Filter):
    """Device exceptions are recorded per user (ledger, users.csv); keep Flower from printing each traceback."""

    MARKERS = (
        "ClientAppException",
        "ClientAppActor.run",
        "An exception was raised when processing a message",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if STOP.is_set():  # stopping on a signal: actors dying of it are expected, not news
            return False
        text = str(record.getMessage())
        return not any(marker in text for marker in self.MARKERS)


def join_cluster(address: str, init_args: dict) -> None:
    """Connect this process to the running Ray cluster at ``address`` (see README: "Run on a Ray cluster")."""
    import ray

    probe_cluster(address)
    try:
        ray.init(address=address, **init_args)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise RayClusterError(
            f"federation.ray_address={address!r}: could not join a Ray cluster there ({err}); start one with "
            "`ray start --head --port=6379` and give its address as HOST:PORT"
        ) from None


@contextlib.contextmanager
def simulation_environment(
    run_dir: Path, fed: FederationConfig, verbose: bool = False, owner: str | None = None
) -> Iterator[dict]:
    """Environment variables, Ray start (unless a Ray session is already up) and quiet Flower logs. ``owner``
    marks the environment of every process of a Ray session started here (see ``interrupts.kill_orphans``)."""
    ray_tmp, short_link_dir = _ray_tmpdir(run_dir, fed.ray_tmpdir)
    env = {
        **({RAY_OWNER_ENV: owner} if owner else {}),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_HOME": str(run_dir / "flwr"),
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        # Ray starts its workers at nice 15; the client actors are the simulated devices and must not lose the CPU
        # to the server (nice 0) or to other jobs, or device work would look slower than it is.
        "RAY_worker_niceness": "0",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    flwr_logger = logging.getLogger("flwr")
    saved_level, error_filter = flwr_logger.level, _ClientErrorFilter()
    if not verbose:
        flwr_logger.setLevel(logging.ERROR)
        flwr_logger.addFilter(error_filter)
    info = {"ray_tmpdir": str(ray_tmp.resolve())}
    import ray

    started_ray = False
    try:
        if not ray.is_initialized():
            t0 = time.perf_counter()
            common = {
                "logging_level": logging.WARNING,
                "log_to_driver": verbose,
                "runtime_env": {
                    "env_vars": {
                        "PYTHONPATH": os.pathsep.join(sys.path),
                        "OMP_NUM_THREADS": "1",
                        "MKL_NUM_THREADS": "1",
                        "FLWR_TELEMETRY_ENABLED": "0",
                    }
                },
            }
            if fed.ray_address:
                join_cluster(fed.ray_address, common)
                info["ray_address"] = fed.ray_address
            else:
                ray.init(
                    num_cpus=fed.ray_num_cpus or os.cpu_count(),
                    object_store_memory=fed.ray_object_store_mb * 2**20,
                    include_dashboard=False,
                    **common,
                )
            started_ray = True
            info["ray_start_seconds"] = time.perf_counter() - t0
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]
        info["ray_nodes"] = len(nodes)
        info["ray_cpus"] = sum(n["Resources"]["CPU"] for n in nodes)
        yield info
    finally:
        if started_ray and ray.is_initialized():
            ray.shutdown()
        flwr_logger.setLevel(saved_level)
        flwr_logger.removeFilter(error_filter)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if short_link_dir is not None:
            shutil.rmtree(short_link_dir, ignore_errors=True)  # the symlink only; Ray's files stay in the run


# ------------------------------------------------------------------------------------------- running
def simulate_many(
    runs: list[tuple[Config, str | Path | None]],
    progress: bool = True,
    observers: tuple[Observer, ...] = (),
    verbose: bool = False,
) -> list[dict]:
    """Run each (config, run dir) in turn inside one Flower simulation; return their summaries.

    Ray and client resources come from the first config's ``federation.*``; the simulation has as many
    devices (supernodes) as the largest run has users. This process holds each run directory's lock throughout.
    """
    if not runs:
        return []
    dirs = [
        Path(run_dir or default_run_dir(cfg.federation.mode)).expanduser().resolve() for cfg, run_dir in runs
    ]
    if len(set(dirs)) != len(dirs):
        raise ValueError(f"each run needs its own run directory, got {[str(d) for d in dirs]}")
    plans: list[RunPlan] = []
    try:
        for (cfg, _), run_dir in zip(runs, dirs, strict=True):
            plans.append(check(cfg, run_dir, progress))
        for plan in plans:  # only once every run has passed its checks
            create(plan)
        return run_plans(plans, progress, observers, verbose)
    finally:
        for plan in plans:
            release(plan.run_dir)


def run_plans(
    plans: list[RunPlan], progress: bool = True, observers: tuple[Observer, ...] = (), verbose: bool = False
) -> list[dict]:
    """Run prepared (new or resumed) run directories, whose locks this process holds, one after another in one
    Flower simulation. SIGINT / SIGTERM stop it within seconds (``Interrupted``), leaving them resumable."""
    dirs = [p.run_dir for p in plans]
    fed = plans[0].cfg.federation
    summaries: list[dict] = []
    from flwr.simulation import run_simulation

    from fedpse.federation.client_app import app as client_app
    from fedpse.federation.engine import fast_engine
    from fedpse.federation.server_app import make_server_app

    owner = None if fed.ray_address else f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    if owner:  # noted before Ray starts, so a kill -9 at any moment leaves a findable trail
        for plan in plans:
            run_lock.hold(plan.run_dir).write_note(ray_owner=owner)
    server_done, server_interrupted = threading.Event(), []
    started = time.perf_counter()
    with (
        simulation_environment(plans[0].run_dir, fed, verbose, owner) as info,
        fast_engine(fed.fast_engine) as fast,
        trap_signals(),  # after Ray's start: its driver installs its own SIGTERM handler, which aborts
    ):
        info["fast_engine"] = fast
        try:
            run_simulation(
                server_app=make_server_app(
                    plans, summaries, progress, observers, server_done, server_interrupted
                ),
                client_app=client_app,
                num_supernodes=max(len(p.users) for p in plans),
                backend_config={"client_resources": {"num_cpus": fed.num_cpus, "num_gpus": fed.num_gpus}},
            )
        except Interrupted:
            # The server thread stops at its next check (within a poll interval, or after the server-side step
            # it is in); wait for it, so nothing is written to the run directories after this returns.
            server_done.wait(timeout=60)
            raise
        if server_interrupted:  # the server thread stopped on an interrupt the main thread did not see
            raise server_interrupted[0]
    if len(summaries) != len(plans):
        raise RuntimeError(
            f"the simulation ended after {len(summaries)} of {len(plans)} runs; see the log above "
            f"and the run directories {[str(d) for d in dirs]}"
        )
    total = time.perf_counter() - started
    for plan, summary in zip(plans, summaries, strict=True):
        summary["simulation"] = {
            **info,
            "runs_in_session": len(plans),
            "session_wall_seconds": total,
            "client_cpus": fed.num_cpus,
        }
        RunStore(plan.run_dir).write_summary(summary)
    return summaries


def simulate(
    cfg: Config,
    run_dir: str | Path | None = None,
    progress: bool = True,
    observers: tuple[Observer, ...] = (),
    verbose: bool = False,
) -> dict:
    """Run one federated simulation of ``cfg`` into ``run_dir``; return its summary (also in summary.json)."""
    return simulate_many([(cfg, run_dir)], progress, observers, verbose)[0]


# ------------------------------------------------------------------------------------------- resuming
def resume(
    run_dir: str | Path,
    config: str | Path | None = None,
    overrides: list[str] = (),
    progress: bool = True,
    observers: tuple[Observer, ...] = (),
    verbose: bool = False,
) -> list[dict]:
    """Continue the interrupted run(s) in ``run_dir`` from their last committed work; return their summaries.

    A run killed at any point (even ``kill -9``) ends up with exactly the rows an uninterrupted run would have
    written, apart from ``store.TIMING_COLUMNS`` (see ``server_app.Federation``). Finished runs are left alone.
    """
    dirs = resume_dirs(run_dir)
    todo = [d for d in dirs if not RunStore(d).finished]
    if not todo:
        raise RunDirError(
            f"{Path(run_dir)}: already finished (summary.json is written); nothing to resume "
            "(`fedpse report` reads it)"
        )
    plans: list[RunPlan] = []
    try:
        for d in todo:
            plans.append(resumable(d, config, overrides, progress))
        return run_plans(plans, progress, observers, verbose)
    finally:
        for plan in plans:
            run_lock.release(plan.run_dir)


# ------------------------------------------------------------------------------------------- printing
def summary_table(summaries: list[dict]) -> str:
    """A short fixed-width table: one line per run."""
    head = (
        f"{'mode':<16}{'users':>6}{'noisy':>7}{'generic':>8}{'person.':>8}{'teacher':>8}{'gain dB':>8}"
        f"{'gap':>6}{'MB up':>8}{'MB down':>8}{'audio s up':>11}{'dev GMAC/u':>11}{'srv GMAC/u':>11}{'wall s':>8}"
    )
    lines = [head, "-" * len(head)]

    def num(value, fmt: str, scale: float = 1.0) -> str:
        width = int(fmt.split(".")[0])
        return f"{'-':>{width}}" if value is None else format(value / scale, fmt)

    for s in summaries:
        m, t, n = s["mean"], s["totals"], max(s["users"], 1)
        ok = f"{s['users_ok']}/{s['users']}"
        lines.append(
            f"{s['mode']:<16}{ok:>6}{num(m['si_sdr_noisy'], '7.2f')}{num(m['si_sdr_generic'], '8.2f')}"
            f"{num(m['si_sdr_personalized'], '8.2f')}{num(m['si_sdr_teacher'], '8.2f')}{num(m['gain_db'], '8.2f')}"
            f"{num(m['gap_closure'], '6.2f')}{num(t['bytes_up'], '8.2f', 1e6)}{num(t['bytes_down'], '8.2f', 1e6)}"
            f"{num(t['audio_seconds_exposed'], '11.1f')}{num(t['device_macs'], '11.2f', n * 1e9)}"
            f"{num(t['server_macs'], '11.2f', n * 1e9)}{s['wall_seconds']:8.1f}"
        )
    lines.append("SI-SDR in dB (means over scored users); gap = gap closure toward the teacher; u = user")
    return "\n".join(lines)
