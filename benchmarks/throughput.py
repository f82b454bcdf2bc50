"""Benchmark `fedpse simulate`: the same users and work (a) through Flower + Ray and (b) as a bare loop.

    python benchmarks/throughput.py                          # 100 and 300 users, both on one core
    python benchmarks/throughput.py --users 20 --label smoke
    python benchmarks/throughput.py --users 300 --cpus 2     # (a) may use both cores (users/hour), (b) one

(a) runs `fedpse.federation.runner.simulate` (delivery mode `pseudo_targets` unless ``--set`` says otherwise): Ray
start-up, one Flower ClientApp per user, messages, uploads encoded as FLAC, pseudo-targets sent down, device state
on disk, the evaluator scoring every user after every round. (b) does the arithmetic of the same run in one Python
process without Flower or Ray: for each round and each selected user, the teacher's pseudo-targets for the user's new
chunks, ``distill.adapt`` on the same chunks with the same seed and step budget, and the same evaluator scores.

Both run in a fresh subprocess; the parent samples the RSS (and PSS) of that subprocess's whole process tree (Ray's
GCS, raylet and worker processes included) and its wall time, imports and start-up included. With ``--cpus 1``
(default) both are pinned to the same core (``taskset``) and Ray gets one CPU, so (a)/(b) is the framework's
overhead on equal hardware. The per-user personalized SI-SDR of (a) and (b) are compared: the work is the same when
they agree (targets are sent in fp32 and uploads as lossless FLAC for this reason).

Results: printed as a table and written to ``benchmarks/results/throughput-<label>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from proctree import PeakRSS

HERE = Path(__file__).resolve().parent
WORKLOAD = [
    "world.adaptation_minutes=1.0",
    "federation.mode=pseudo_targets",
    "federation.num_rounds=2",
    "federation.chunks_per_round=1",
    "federation.steps_per_round=10",
    "federation.targets_precision=fp32",
    "federation.upload_codec=flac",
    "federation.cache_dir=null",  # both sides do all the work (no teacher outputs or scores from earlier runs)
]


def bench_config(users: int, cpus: int, extra: list[str], world_users: int):
    from fedpse.config import load_config

    return load_config(
        overrides=[
            *WORKLOAD,
            f"world.num_users={world_users}",
            f"federation.num_users={users}",
            f"federation.ray_num_cpus={cpus}",
            *extra,
        ]
    )


# ------------------------------------------------------------------------------------------------ phases
def phase_flower(cfg, run_dir: Path) -> dict:
    from fedpse.federation.runner import simulate
    from fedpse.results.store import RunStore

    summary = simulate(cfg, run_dir, progress=False)
    rows = RunStore(run_dir).read_table("users")
    return {
        "personalized": {
            r["user"]: float(r["si_sdr_personalized"]) for r in rows if r["si_sdr_personalized"]
        },
        "ray_start_seconds": summary["simulation"].get("ray_start_seconds"),
        "run_wall_seconds": summary["wall_seconds"],
    }


def phase_bare(cfg, run_dir: Path) -> dict:
    """The same work as the Flower run, in one process: teacher targets, ``distill.adapt``, scoring."""
    import torch

    from fedpse.distill.adapt import adapt, pseudo_targets
    from fedpse.federation.device import generic_student
    from fedpse.federation.evaluator import Evaluator
    from fedpse.federation.plan import select_users
    from fedpse.federation.prepare import prepare

    torch.set_num_threads(1)
    plan = prepare(cfg, run_dir)
    fed, world = cfg.federation, plan.world
    teacher, evaluator = plan.teacher(), Evaluator(plan)
    students: dict = {}
    targets: dict[str, dict] = {u: {} for u in plan.users}
    scores: dict[str, float] = {}
    for r in range(1, fed.num_rounds + 1):
        for user in select_users(plan.users, fed.fraction, cfg.seed, r):
            available = plan.chunks_available(user, r)
            new = [n for n in available if n not in targets[user]]
            if new:
                with torch.inference_mode():
                    outs = pseudo_targets(teacher, [world.load(user, n) for n in new])
                targets[user].update(zip(new, outs, strict=True))
            train_on = available if fed.adapt_on == "all" else new
            student = students.get(user) or generic_student(plan)
            adapt(
                student,
                [world.load(user, n) for n in train_on],
                [targets[user][n] for n in train_on],
                plan.round_adapt(),
                seed=plan.adapt_seed(user, r),
            )
            students[user] = student
            evaluator.baseline(user)
            scores[user] = evaluator.personalized(user, student)["si_sdr_personalized"]
    return {"personalized": scores}


# ------------------------------------------------------------------------------------------------ driver
def run_phase(
    phase: str, users: int, cpus: int, extra: list[str], world_users: int, work: Path, core: int = 0
) -> dict:
    """Run one phase in a fresh subprocess (pinned to core 0 when ``cpus`` is 1); measure wall and tree memory."""
    out = work / f"{phase}.json"
    cmd = [
        sys.executable,
        str(Path(__file__)),
        "--phase",
        phase,
        "--users",
        str(users),
        "--cpus",
        str(cpus),
        "--world-users",
        str(world_users),
        "--work",
        str(work),
        *sum((["--set", s] for s in extra), []),
    ]
    if cpus == 1 and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core), *cmd]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    with PeakRSS(interval=0.5, pid=proc.pid) as mem:
        rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"benchmark phase {phase} with {users} users failed (exit {rc})")
    result = json.loads(out.read_text())
    result.update(
        wall_seconds=wall,
        users_per_hour=users * 3600 / wall,
        peak_rss_mb=mem.peak / 2**20,
        peak_pss_mb=mem.peak_pss / 2**20,
        cpu_seconds=sum(mem.cpu_by_name().values()),
        cpu_seconds_by_process={k: round(v, 1) for k, v in mem.cpu_by_name().items() if v >= 0.5},
    )
    return result


def bench(users: int, cpus: int, extra: list[str], world_users: int, keep: bool, core: int = 0) -> dict:
    from fedpse.world.cache import open_world

    cfg = bench_config(users, cpus, extra, world_users)
    t0 = time.perf_counter()
    open_world(cfg, progress=True)  # built once, outside the timings
    world_seconds = time.perf_counter() - t0
    work = Path("runs") / f"bench-throughput-{users}u-core{core}-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    a = run_phase("flower", users, cpus, extra, world_users, work, core)
    b = run_phase("bare", users, cpus, extra, world_users, work, core)
    common = sorted(set(a["personalized"]) & set(b["personalized"]))
    diffs = [abs(a["personalized"][u] - b["personalized"][u]) for u in common]
    result = {
        "users": users,
        "world_users": world_users,
        "cpus": cpus,
        "workload": [*WORKLOAD, *extra],
        "teacher": {
            "arch": cfg.teacher.arch,
            "checkpoint": cfg.teacher.checkpoint,
            "magnitude": cfg.teacher.magnitude,
        },
        "world_open_or_build_seconds": round(world_seconds, 1),
        "flower_ray": {k: v for k, v in a.items() if k != "personalized"},
        "bare_loop": {k: v for k, v in b.items() if k != "personalized"},
        "ratio_wall": a["wall_seconds"] / b["wall_seconds"],
        "users_compared": len(common),
        "max_abs_diff_personalized_db": max(diffs) if diffs else None,
    }
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def print_table(results: list[dict]) -> None:
    print(
        f"{'users':>6}{'cpus':>5}{'(a) wall s':>11}{'(b) wall s':>11}{'ratio':>7}{'(a) users/h':>12}"
        f"{'(b) users/h':>12}{'(a) CPU s':>10}{'(b) CPU s':>10}{'(a) peak RSS MB':>16}{'(a) PSS MB':>11}"
        f"{'(b) RSS MB':>11}{'max |Δ| dB':>11}"
    )
    for r in results:
        a, b = r["flower_ray"], r["bare_loop"]
        diff = r["max_abs_diff_personalized_db"]
        print(
            f"{r['users']:>6}{r['cpus']:>5}{a['wall_seconds']:>11.1f}{b['wall_seconds']:>11.1f}"
            f"{r['ratio_wall']:>7.3f}{a['users_per_hour']:>12.0f}{b['users_per_hour']:>12.0f}"
            f"{a['cpu_seconds']:>10.0f}{b['cpu_seconds']:>10.0f}"
            f"{a['peak_rss_mb']:>16.0f}{a['peak_pss_mb']:>11.0f}{b['peak_rss_mb']:>11.0f}"
            f"{'-' if diff is None else format(diff, '.2e'):>11}"
        )
        print(f"  (a) CPU seconds by process: {a['cpu_seconds_by_process']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--cpus", type=int, default=1, help="cores for (a); 1 = both phases pinned to one core")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra config override")
    ap.add_argument(
        "--world-users", type=int, default=0, help="users in the world (default: the largest --users)"
    )
    ap.add_argument(
        "--label", default="latest", help="results file: benchmarks/results/throughput-LABEL.json"
    )
    ap.add_argument("--core", type=int, default=0, help="with --cpus 1: the core both phases are pinned to")
    ap.add_argument("--keep", action="store_true", help="keep the run directories under runs/")
    ap.add_argument("--phase", choices=["flower", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    world_users = args.world_users or max(args.users)
    if args.phase:  # inside the measured subprocess
        cfg = bench_config(args.users[0], args.cpus, args.extra, world_users)
        fn = phase_flower if args.phase == "flower" else phase_bare
        result = fn(cfg, (args.work / args.phase).resolve())
        (args.work / f"{args.phase}.json").write_text(json.dumps(result))
        return
    results = [bench(n, args.cpus, args.extra, world_users, args.keep, args.core) for n in args.users]
    print_table(results)
    out = HERE / "results" / f"throughput-{args.label}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
