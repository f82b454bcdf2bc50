"""scale: does ``fedpse simulate`` scale from 10 to 300 users on a 2-core machine — wall time, users/hour, memory?

What it answers: the wall time and the peak memory (RSS and PSS of the whole process tree: the driver, Ray's GCS,
raylet and worker processes) of one ``fedpse simulate`` run (delivery mode pseudo_targets, the default 2 rounds × 3
chunks of 10 s, 30 steps per round) at each user count, users per hour, and whether memory stays flat in users
(slope of a line fitted to peak memory vs users).

    python simulations/scale.py                # full: 10, 30, 100, 300 users of a 300-user world (1 min/user)
    python simulations/scale.py --quick        # smoke test: 3 and 6 users of a tiny world
    python simulations/scale.py --users 10 30  # some points; later calls add points to the same --out

Durations on the 2-core machine: --quick 2 min (measured at load ≈ 7, 25 s of it building the tiny world once).
Full, estimated from a 10- and a 30-user point measured at load 8–10 (3 min 38 s and 6 min 28 s: ≈ 133 s + 8.5 s
per user; CPU time of the process tree ≈ 25 s + 7.8 s per user): ≈ 1 h 10 min at that load, ≈ 30 min on an idle
machine; plus ≈ 3 min to build the 300-user world if ``~/.cache/fedpse/worlds`` does not hold it yet.

Each point runs ``python -m fedpse.cli simulate --quiet`` in a fresh subprocess (imports and Ray start-up included
in its wall time) while this process samples the subprocess tree's memory from /proc every 0.2 s
(``benchmarks/proctree.py``'s ``PeakRSS``). The result cache is off (``federation.cache_dir=null``) so that every
point does all its work. The world is opened (or built) before, outside the measurements. Writes ``scale.json``,
``scale.md`` and ``scale.png`` (wall time and memory vs users) to --out (default ``simulations/results/scale``,
``…/scale_quick`` with --quick), and the run directories to ``--out/runs/users-<N>`` (their per-device state folder
``devices/`` is removed after each point unless ``--keep-devices``). Points already in ``scale.json`` with the same
settings are kept unless measured again (``--fresh`` drops them all).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from studylib import (
    RESULTS_DIR,
    StudyError,
    duration,
    load_preset,
    md_table,
    num,
    peak_rss_sampler,
    prepare_out,
    run_main,
    write_json,
)

MB = 2**20
FLAT_TOLERANCE = 0.10  # memory is "flat" when the fitted line grows < 10 % over the measured range of users


# ------------------------------------------------------------------------------------------------ measuring
def point_command(users: int, run_dir: Path, overrides: list[str]) -> list[str]:
    sets = [f"federation.num_users={users}", *overrides]
    return [sys.executable, "-m", "fedpse.cli", "simulate", "--quiet", "--out", str(run_dir)] + sum(
        (["--set", s] for s in sets), []
    )


def measure_point(users: int, run_dir: Path, overrides: list[str], keep_devices: bool) -> dict:
    """Run one simulation in a fresh subprocess; its wall time, tree memory and summary figures."""
    PeakRSS = peak_rss_sampler()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{run_dir.name}.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(point_command(users, run_dir, overrides), stdout=fh, stderr=subprocess.STDOUT)
        with PeakRSS(interval=0.2, pid=proc.pid) as mem:
            rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise StudyError(f"the {users}-user point failed (exit {rc}): {tail[0]} — see {log}")
    summary = json.loads((run_dir / "summary.json").read_text())
    if not keep_devices:
        shutil.rmtree(run_dir / "devices", ignore_errors=True)
    cpu = mem.cpu_by_name()
    return {
        "users": users,
        "wall_seconds": wall,
        "users_per_hour": users * 3600 / wall,
        "run_wall_seconds": summary.get("wall_seconds"),
        "ray_start_seconds": (summary.get("simulation") or {}).get("ray_start_seconds"),
        "peak_rss_mb": mem.peak / MB,
        "peak_pss_mb": mem.peak_pss / MB,
        "cpu_seconds": sum(cpu.values()),
        "cpu_seconds_by_process": {k: round(v, 1) for k, v in cpu.items() if v >= 0.5},
        "users_ok": summary.get("users_ok"),
        "mean_gain_db": (summary.get("mean") or {}).get("gain_db"),
        "run_dir": str(run_dir),
    }


# ------------------------------------------------------------------------------------------------ analysis
def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, intercept) of a least-squares line; slope 0 through the mean for a single point."""
    if len(xs) < 2:
        return 0.0, float(np.mean(ys)) if ys else math.nan
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(slope), float(intercept)


def analyse(points: list[dict]) -> dict:
    """Per-user slopes of wall time and memory, and whether memory is flat in users."""
    users = [p["users"] for p in points]
    out: dict = {"users": users}
    for key in ("wall_seconds", "cpu_seconds", "peak_rss_mb", "peak_pss_mb"):
        slope, intercept = fit_line(users, [p[key] for p in points])
        out[key] = {"per_user": slope, "intercept": intercept}
    if len(points) >= 2:
        lo, hi = min(users), max(users)
        base = out["peak_pss_mb"]["intercept"] + out["peak_pss_mb"]["per_user"] * lo
        growth = out["peak_pss_mb"]["per_user"] * (hi - lo)
        out["pss_growth_over_range_mb"] = growth
        out["memory_flat"] = bool(abs(growth) < FLAT_TOLERANCE * base)
    return out


def estimate_seconds(fit: dict, users: list[int], cores: int | None = None) -> float:
    """Wall time of points at ``users`` from the fitted wall line (start-up + per-user time); with ``cores``, from
    the CPU-seconds line divided by the cores instead (what an otherwise idle machine would take, at best)."""
    line = fit["cpu_seconds"] if cores else fit["wall_seconds"]
    return float(sum(max(line["intercept"] + line["per_user"] * n, 0.0) for n in users)) / (cores or 1)


def markdown(points: list[dict], fit: dict, full_users: list[int]) -> str:
    rows = [
        [
            p["users"],
            duration(p["wall_seconds"]),
            f"{p['users_per_hour']:.0f}",
            num(p["ray_start_seconds"], 1),
            f"{p['peak_rss_mb']:.0f}",
            f"{p['peak_pss_mb']:.0f}",
            f"{p['cpu_seconds']:.0f}",
            f"{p['users_ok']}/{p['users']}",
            num(p["mean_gain_db"], signed=True),
        ]
        for p in points
    ]
    text = md_table(
        [
            "users",
            "wall",
            "users/hour",
            "Ray start s",
            "peak RSS MB (tree)",
            "peak PSS MB (tree)",
            "CPU s (tree)",
            "users ok",
            "mean gain dB",
        ],
        rows,
    )
    if len(points) >= 2:
        m, w = fit["peak_pss_mb"], fit["wall_seconds"]
        verdict = "flat" if fit["memory_flat"] else "not flat"
        text += (
            f"\nWall time ≈ {w['intercept']:.0f} s {_plus(w['per_user'])} s per user. Peak PSS ≈ "
            f"{m['intercept']:.0f} MB {_plus(m['per_user'])} MB per user (RSS: {_plus(fit['peak_rss_mb']['per_user'])} "
            f"MB per user): {num(fit['pss_growth_over_range_mb'], 0, signed=True)} MB from {min(fit['users'])} to "
            f"{max(fit['users'])} users — "
            f"memory is {verdict} in users (threshold {FLAT_TOLERANCE:.0%} of the smallest point).\n"
        )
        c, cores = fit["cpu_seconds"], os.cpu_count() or 1
        text += f"CPU time of the process tree ≈ {c['intercept']:.0f} s {_plus(c['per_user'])} s per user.\n"
        missing = [n for n in full_users if n not in fit["users"]]
        if missing:
            text += (
                f"\nEstimated: {', '.join(map(str, missing))} users would take "
                f"{duration(estimate_seconds(fit, missing))} at the load of these measurements "
                f"(wall-time line), {duration(estimate_seconds(fit, missing, cores))} on an idle machine "
                f"(CPU-time line ÷ {cores} cores, a lower bound); all of {', '.join(map(str, full_users))}: "
                f"{duration(estimate_seconds(fit, full_users))} / "
                f"{duration(estimate_seconds(fit, full_users, cores))}.\n"
            )
    return text


def _plus(value: float) -> str:
    """``+ 1.23`` / ``− 1.23``: a slope added to an intercept."""
    return f"{'+' if value >= 0 else '−'} {abs(value):.2f}"


def plot(points: list[dict], path: Path) -> None:
    """Wall time and peak memory vs users (PNG, matplotlib's Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    users = [p["users"] for p in points]
    fig = Figure(figsize=(9, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(users, [p["wall_seconds"] / 60 for p in points], "o-", color="#1f77b4")
    ax1.set(xlabel="users", ylabel="wall time (min)", title="wall time")
    ax2.plot(users, [p["peak_rss_mb"] for p in points], "o-", color="#d62728", label="peak RSS (tree)")
    ax2.plot(users, [p["peak_pss_mb"] for p in points], "s-", color="#2ca02c", label="peak PSS (tree)")
    ax2.set(xlabel="users", ylabel="MB", title="memory of the process tree")
    ax1.set_ylim(bottom=0)
    ax2.set_ylim(bottom=0)
    ax2.legend(frameon=False)
    for ax in (ax1, ax2):
        if len(users) > 1 and max(users) / max(min(users), 1) >= 10:
            ax.set_xscale("log")
        ax.set_xticks(users, [str(u) for u in users])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle("fedpse simulate (pseudo_targets) vs users")
    fig.tight_layout()
    fig.savefig(path)


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="scale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="the smoke-test preset (see configs/scale.yaml)")
    ap.add_argument("--config", default=None, help="preset file (default: simulations/configs/scale.yaml)")
    ap.add_argument("--users", type=int, nargs="+", help="user counts to measure")
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override (repeatable)"
    )
    ap.add_argument("--fresh", action="store_true", help="forget the points already in --out/scale.json")
    ap.add_argument(
        "--tables-only",
        action="store_true",
        help="measure nothing: rewrite the tables and plot from scale.json",
    )
    ap.add_argument("--keep-devices", action="store_true", help="keep each run's devices/ folder")
    ap.add_argument("--out", default=None, help="output folder (default simulations/results/scale[_quick])")
    return ap.parse_args(argv)


def resolve(args: argparse.Namespace) -> dict:
    p = load_preset("scale", args.quick, args.config)
    s = {
        "users": sorted(set(args.users or p.get("users") or [])),
        "preset_users": sorted(set(p.get("users") or [])),
        "overrides": [*p.get("world", []), *p.get("overrides", []), *args.overrides],
        "out": args.out or str(RESULTS_DIR / ("scale_quick" if args.quick else "scale")),
        "fresh": args.fresh,
        "keep_devices": args.keep_devices,
        "tables_only": args.tables_only,
    }
    if not s["users"] or min(s["users"]) < 1:
        raise StudyError(f"--users: expected user counts >= 1, got {args.users or p.get('users')}")
    return s


def main(argv: list[str] | None = None) -> dict:
    from fedpse.config import load_config
    from fedpse.federation.prepare import check_federation
    from fedpse.world.cache import open_world

    s = resolve(parse_args(argv))
    out = prepare_out(s["out"])
    cfg = load_config(overrides=[f"federation.num_users={max(s['users'])}", *s["overrides"]])
    check_federation(cfg)
    if max(s["users"]) > cfg.world.num_users:
        raise StudyError(
            f"--users {max(s['users'])}: the world has {cfg.world.num_users} users (world.num_users)"
        )
    t0 = time.perf_counter()
    open_world(cfg, progress=True)  # built once, outside the measurements
    world_seconds = time.perf_counter() - t0
    # the teacher is part of the setting even when no override names it: points measured under another default
    # teacher (pseudo-targets come from it) measured something else
    teacher = {
        "arch": cfg.teacher.arch,
        "checkpoint": cfg.teacher.checkpoint,
        "magnitude": cfg.teacher.magnitude,
    }
    setting = f"{zlib.crc32(json.dumps([s['overrides'], teacher]).encode()):08x}"
    old = {} if s["fresh"] else _read_points(out / "scale.json", setting)
    if s["tables_only"] and not old:
        raise StudyError(f"--tables-only: no points of these settings in {out / 'scale.json'}")

    def write(points: list[dict]) -> tuple[str, dict]:
        fit = analyse(points)
        text = markdown(points, fit, s["preset_users"])
        results = {
            "setting": setting,
            "overrides": s["overrides"],
            "teacher": teacher,
            "world_open_or_build_seconds": world_seconds,
            "points": points,
            "fit": fit,
        }
        write_json(out / "scale.json", results)
        (out / "scale.md").write_text(text)
        plot(points, out / "scale.png")
        return text, results

    for n in [] if s["tables_only"] else s["users"]:
        print(f"scale: {n} users …", flush=True)
        point = measure_point(n, out / "runs" / f"users-{n}", s["overrides"], s["keep_devices"])
        old[n] = point
        print(
            f"scale: {n} users: {duration(point['wall_seconds'])}, {point['users_per_hour']:.0f} users/h, "
            f"peak RSS {point['peak_rss_mb']:.0f} MB, PSS {point['peak_pss_mb']:.0f} MB",
            flush=True,
        )
        write([old[k] for k in sorted(old)])  # after every point: a stopped run keeps what it measured
    text, results = write([old[n] for n in sorted(old)])
    print(text)
    print(f"scale: wrote {out / 'scale.md'}, {out / 'scale.json'}, {out / 'scale.png'}")
    return results


def _read_points(path: Path, setting: str) -> dict[int, dict]:
    """Points measured before with the same settings (others are dropped: they measured something else)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("setting") != setting:
        return {}
    return {int(p["users"]): p for p in data.get("points", [])}


if __name__ == "__main__":
    run_main("scale", main)
