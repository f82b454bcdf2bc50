"""Everything before a run starts: check a config and the folders it writes, take its run directory, create it;
or find an interrupted run directory and ready it to continue (``resumable``).

Nothing here starts Ray or Flower: ``runner`` runs prepared plans in a simulation, and the ``flwr run`` ServerApp
prepares its run with ``prepare_run``. Every check that can fail runs before anything is written but the world
and the run directory's lock, and fails with one line naming the key or path at fault.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from fedpse.config import Config, ConfigError, config_to_dict, flatten, load_config
from fedpse.distill.guard import check_guard
from fedpse.federation.interrupts import kill_orphans
from fedpse.federation.plan import RunPlan, load_models
from fedpse.federation.strategies import load_plugins, strategy_class
from fedpse.models.accelerator import check_devices
from fedpse.models.dnsmos import require_dnsmos
from fedpse.paths import ensure_writable_dir
from fedpse.results import lock as run_lock
from fedpse.results.store import TABLES, RunDirError, RunStore
from fedpse.world.cache import open_world


def default_run_dir(label: str = "simulate") -> Path:
    return Path("runs") / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_federation(cfg: Config) -> None:
    """Federation settings that ``load_config`` cannot check (it knows no delivery mode): the modules of
    ``federation.plugins`` imported, ``federation.mode`` a registered mode, and that mode's own ``check``; the
    torch devices of the server, the scoring and the client actors usable here; DNSMOS installed when
    ``scoring.dnsmos`` or ``adapt.guard=dnsmos`` asks for it; raises ``ConfigError``."""
    load_plugins(cfg.federation.plugins)
    strategy_class(cfg.federation.mode).check(cfg)
    check_devices(cfg)
    if cfg.scoring.dnsmos:
        require_dnsmos("scoring.dnsmos")  # the evaluator's DNSMOS columns: the package that ships its weights
    check_guard(cfg.adapt)  # adapt.guard=dnsmos: the same package, on the devices (or the cloud)


def check_writable(cfg: Config) -> None:
    """Every folder a simulation writes besides the run directory, checked before any work: an unwritable one is a
    one-line error naming the path and the key that sets it (the run directory is checked by taking its lock)."""
    fed = cfg.federation
    if fed.cache_dir:
        ensure_writable_dir(fed.cache_dir, "federation.cache_dir")
    if fed.ray_tmpdir:
        ensure_writable_dir(fed.ray_tmpdir, "federation.ray_tmpdir")
    ensure_writable_dir(tempfile.gettempdir(), "TMPDIR (the environment variable; Ray's short socket paths)")


class RayClusterError(ValueError):
    """``federation.ray_address`` names a Ray cluster this process cannot join."""


def probe_cluster(address: str) -> None:
    """Fail fast when nothing listens at a Ray head's ``HOST:PORT`` (``ray.init`` retries for minutes)."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as err:
        raise RayClusterError(
            f"federation.ray_address={address!r}: nothing answers there ({err}); expected HOST:PORT of a "
            "running Ray head (`ray start --head --port=6379` prints it), or 'auto'"
        ) from None


def take_run_dir(run_dir: Path, key: str = "--out") -> run_lock.RunLock:
    """This process becomes the only writer of ``run_dir`` (``RunLockedError`` if another process writes it);
    Ray processes left behind by a killed earlier writer of the same directory are cleaned up."""
    try:
        lock = run_lock.hold(run_dir)
    except OSError as err:
        raise RunDirError(
            f"{run_dir}: cannot create or write the run directory ({err.strerror or err}); "
            f"give {key} a folder you can write"
        ) from None
    found = kill_orphans(lock.previous)
    if found:
        print(
            f"fedpse: stopped {found} Ray process(es) left by a killed run of {run_dir} (pid {lock.previous['pid']})",
            file=sys.stderr,
        )
    return lock


def check(cfg: Config, run_dir: str | Path, progress: bool = False) -> RunPlan:
    """Everything that can fail before a simulation starts. Creates nothing but the world and the run directory
    with its lock, which this process then holds (released by ``release``; removed again if the checks fail).
    The plan carries the models it loaded to check them, for ``create`` to write."""
    check_federation(cfg)
    run_dir = Path(run_dir).expanduser().resolve()
    check_writable(cfg)
    take_run_dir(run_dir)
    try:
        RunStore.check_free(run_dir)
        if cfg.federation.ray_address:
            probe_cluster(cfg.federation.ray_address)
        open_world(cfg, progress)
        plan = RunPlan(cfg, run_dir)
        _ = plan.users  # num_users within the world, fault-injection users known
        plan.models = load_models(cfg)  # checkpoints resolvable and matching the architecture
    except BaseException:
        release(run_dir)
        raise
    return plan


def release(run_dir: str | Path) -> None:
    """Give up the lock of a run directory this process holds (and the directory, if nothing was written)."""
    run_lock.release(run_dir, remove_if_unused=True)


def create(plan: RunPlan) -> RunPlan:
    """The run directory: resolved config and the run's frozen generic student and teacher."""
    RunStore.create(plan.run_dir, plan.cfg)
    plan.freeze_models()
    return plan


def prepare(cfg: Config, run_dir: str | Path, progress: bool = False) -> RunPlan:
    """``check`` then ``create``."""
    return create(check(cfg, run_dir, progress))


def prepare_run(config: str | None, overrides: list[str], run_dir: str | Path) -> RunPlan:
    return prepare(load_config(config, overrides), run_dir)


# ------------------------------------------------------------------------------------------- resuming
# Keys that say how a run is executed (where, on what resources), not what it computes: ``--resume`` may change
# them (e.g. continue on a Ray cluster). Any other difference from the run's config.yaml is refused.
EXECUTION_KEYS = (
    "world.workers",
    "federation.num_cpus",
    "federation.num_gpus",
    "federation.ray_address",
    "federation.ray_num_cpus",
    "federation.ray_object_store_mb",
    "federation.ray_tmpdir",
    "federation.reply_timeout_s",
    "federation.max_in_flight",
)


def config_changes(ran: Config, given: Config) -> list[tuple[str, object, object]]:
    """(dotted key, value in ``ran``, value in ``given``) for each key that differs, ``EXECUTION_KEYS`` aside."""
    before, after = flatten(config_to_dict(ran)), flatten(config_to_dict(given))
    return [
        (k, before[k], after.get(k)) for k in before if before[k] != after.get(k) and k not in EXECUTION_KEYS
    ]


def resume_dirs(run_dir: str | Path) -> list[Path]:
    """The run directories ``--resume RUN_DIR`` continues: RUN_DIR, or each run of a ``--modes`` folder."""
    run_dir = Path(run_dir).expanduser().resolve()
    if (run_dir / "config.yaml").is_file():
        return [run_dir]
    runs = sorted(d for d in run_dir.iterdir() if (d / "config.yaml").is_file()) if run_dir.is_dir() else []
    if not runs:
        raise RunDirError(
            f"{run_dir / 'config.yaml'}: not found; --resume expects a run directory written by "
            "`fedpse simulate` (or a --modes folder of them)"
        )
    return runs


def resumable(
    run_dir: Path, config: str | Path | None = None, overrides: list[str] = (), progress: bool = False
) -> RunPlan:
    """The plan of an interrupted run, from its own config.yaml. ``config`` / ``overrides`` may only repeat it,
    or change ``EXECUTION_KEYS``. This process takes the run directory's lock (``release`` gives it up)."""
    take_run_dir(run_dir, "--resume")
    try:
        return _resumable(run_dir, config, overrides, progress)
    except BaseException:
        run_lock.release(run_dir)
        raise


def _resumable(run_dir: Path, config: str | Path | None, overrides: list[str], progress: bool) -> RunPlan:
    cfg = load_config(run_dir / "config.yaml")
    if config is not None or overrides:
        given = load_config(config or run_dir / "config.yaml", overrides)
        changed = config_changes(cfg, given)
        if changed:
            detail = "; ".join(f"{k}: run has {a!r}, given {b!r}" for k, a, b in changed[:5])
            raise ConfigError(
                f"--resume continues {run_dir} with its own config.yaml; the given config changes {detail} "
                f"(only {', '.join(EXECUTION_KEYS)} may change on resume)"
            )
        cfg = given
    check_federation(cfg)
    check_writable(cfg)
    if RunStore(run_dir).finished:  # finished by another process before this one took the lock
        raise RunDirError(f"{run_dir}: already finished (summary.json is written); nothing to resume")
    for table in TABLES:  # readable, and written by this version (before Ray starts)
        RunStore(run_dir).read_table(table)
    if cfg.federation.ray_address:
        probe_cluster(cfg.federation.ray_address)
    open_world(cfg, progress)
    plan = RunPlan(cfg, run_dir)
    _ = plan.users
    if not (
        plan.generic_student_path.is_file() and (plan.teacher_path.is_file() or cfg.teacher.arch == "onnx")
    ):
        plan.freeze_models()  # killed while the run directory was being created (deterministic: seeded)
    return plan
