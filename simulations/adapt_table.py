"""The paper-shaped table for single-user zero-shot adaptation (no federation), on held-out users.

    python simulations/adapt_table.py                        # 40 users, input 0 and 5 dB, GRU and ConvTasNet teachers
    python simulations/adapt_table.py --users 8 --snr 5      # quicker
    python simulations/adapt_table.py --sweep 100 250 500 1000 2000 4000 --sweep-users 12   # gain vs steps

For each input SNR a world with every mixture at exactly that SNR is built (same seed, voices and places as the
default world), the shipped generic 2×32 student is adapted per user with each teacher's pseudo-targets
(`distill.adapt.personalize_user`, the function the federation calls), and every model is scored on the user's
held-out test mixtures. Writes JSON + Markdown to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
import zlib
from pathlib import Path

import numpy as np

TEACHERS = {
    "gru": ["teacher.arch=gru", "teacher.checkpoint=builtin:teacher-gru"],
    "convtasnet": ["teacher.arch=convtasnet", "teacher.checkpoint=builtin:teacher-convtasnet"],
}


def _world_overrides(snr: float, users: int) -> list[str]:
    return [f"world.num_users={users}", f"world.snr_db=[{snr}, {snr}]", "world.snr_spread_db=0"]


def _load(overrides: list[str]):
    from fedpse.config import load_config
    from fedpse.models.zoo import load_student, load_teacher
    from fedpse.world.cache import World

    cfg = load_config(overrides=overrides)
    return cfg, World.open(cfg), load_student(cfg)[0], load_teacher(cfg)[0]


_STATE: dict = {}


def _init(overrides: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    _STATE["cfg"], _STATE["world"], _STATE["student"], _STATE["teacher"] = _load(overrides)


def _one_user(uid: str) -> dict:
    from fedpse.distill.adapt import personalize_user

    cfg = _STATE["cfg"]
    seed = zlib.crc32(f"{cfg.seed}:{uid}".encode())
    return personalize_user(_STATE["world"], uid, _STATE["student"], _STATE["teacher"], cfg.adapt, seed=seed)


def _sweep_user(args: tuple[str, list[int]]) -> dict:
    """Adapt without early stopping and score the test set at each step count in ``points``."""
    import copy
    import dataclasses

    from fedpse.distill.adapt import adapt, pseudo_targets, score

    uid, points = args
    cfg, world, student, teacher = _STATE["cfg"], _STATE["world"], _STATE["student"], _STATE["teacher"]
    noisy = world.adaptation_chunks(uid)
    targets = pseudo_targets(teacher, noisy)
    test = world.test_set(uid)
    base = score({"generic": student}, test)["generic"]
    curve: dict[int, float] = {}

    def on_step(step, model):
        if step in points:
            curve[step] = score({"p": model}, test)["p"] - base
            model.train()

    acfg = dataclasses.replace(cfg.adapt, steps=max(points), patience=0)
    adapt(copy.deepcopy(student), noisy, targets, acfg, seed=zlib.crc32(uid.encode()), on_step=on_step)
    return {"user": uid, "generic": base, "gain_by_steps": curve}


def _pool_map(fn, items, overrides, workers):
    if workers <= 1:
        _init(overrides)
        return [fn(i) for i in items]
    with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(overrides,)) as pool:
        return pool.map(fn, items, chunksize=1)


def summarise(rows: list[dict]) -> dict:
    gains = np.array([r["gain_db"] for r in rows])
    closure = np.array([r["gap_closure"] for r in rows], dtype=float)
    return {
        "users": len(rows),
        "mixture": float(np.mean([r["si_sdr_noisy"] for r in rows])),
        "generic": float(np.mean([r["si_sdr_generic"] for r in rows])),
        "adapted": float(np.mean([r["si_sdr_personalized"] for r in rows])),
        "teacher": float(np.mean([r["si_sdr_teacher"] for r in rows])),
        "gain_mean": float(gains.mean()),
        "improved_pct": float(100 * np.mean(gains > 0)),
        "gap_closure_mean": float(np.nanmean(closure)) if np.isfinite(closure).any() else math.nan,
        "gap_closure_median": float(np.nanmedian(closure)) if np.isfinite(closure).any() else math.nan,
        # Per-user closure explodes where the teacher barely beats the generic student; the ratio of means does not.
        "gap_closure_of_means": float(gains.mean())
        / max(float(np.mean([r["si_sdr_teacher"] - r["si_sdr_generic"] for r in rows])), 1e-9),
        "teacher_minus_generic": float(np.mean([r["si_sdr_teacher"] - r["si_sdr_generic"] for r in rows])),
        "steps_mean": float(np.mean([r["steps"] for r in rows])),
        "adapt_wall_seconds_mean": float(np.mean([r["adapt_wall_seconds"] for r in rows])),
    }


def markdown(results: dict) -> str:
    lines = [
        "| input SNR | mixture | generic 2×32 | adapted (GRU teacher) | adapted (ConvTasNet teacher) | GRU teacher | ConvTasNet teacher |",
        "|---|---|---|---|---|---|---|",
    ]
    for snr, by_teacher in results["table"].items():
        g, c = by_teacher.get("gru"), by_teacher.get("convtasnet")
        any_ = g or c
        cell = lambda s, k: f"{s[k]:.2f}" if s else "–"  # noqa: E731
        lines.append(
            f"| {snr} dB | {any_['mixture']:.2f} | {any_['generic']:.2f} | {cell(g, 'adapted')} | {cell(c, 'adapted')} "
            f"| {cell(g, 'teacher')} | {cell(c, 'teacher')} |"
        )
    lines += [
        "",
        "| input SNR | teacher | mean gain (dB) | users improved | gap closure: of means / per-user median | teacher − generic (dB) | steps | adapt s/user |",
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for snr, by_teacher in results["table"].items():
        for name, s in by_teacher.items():
            lines.append(
                f"| {snr} dB | {name} | {s['gain_mean']:+.2f} | {s['improved_pct']:.0f} % | "
                f"{s['gap_closure_of_means']:.2f} / {s['gap_closure_median']:.2f} | {s['teacher_minus_generic']:+.2f} "
                f"| {s['steps_mean']:.0f} | {s['adapt_wall_seconds_mean']:.1f} |"
            )
    if results.get("sweep"):
        sw = results["sweep"]
        lines += [
            "",
            f"Gain vs fine-tuning steps ({sw['teacher']} teacher, {sw['snr']} dB, {sw['users']} users, no early stop):",
            "",
        ]
        lines.append("| steps | " + " | ".join(str(k) for k in sw["mean_gain"]) + " |")
        lines.append("|---|" + "---|" * len(sw["mean_gain"]))
        lines.append("| mean gain (dB) | " + " | ".join(f"{v:+.2f}" for v in sw["mean_gain"].values()) + " |")
    return "\n".join(lines) + "\n"


CARD_FILES = {"gru": "teacher-gru", "convtasnet": "teacher-convtasnet"}


def write_cards(results: dict) -> None:
    """Record held-out-user figures in the shipped model cards (the teachers' premise: >= 3 dB over the student)."""
    from fedpse.models.checkpoints import update_card
    from fedpse.models.zoo import BUILTIN_DIR

    student: dict = {}
    teachers: dict = {}
    for snr, by_teacher in results["table"].items():
        for name, s in by_teacher.items():
            entry = {
                "users": s["users"],
                "si_sdr": s["teacher"],
                "minus_generic_2x32": s["teacher_minus_generic"],
            }
            teachers.setdefault(name, {})[f"{snr}dB"] = entry
            student[f"{snr}dB"] = {"users": s["users"], "si_sdr": s["generic"], "mixture": s["mixture"]}
    for name, entries in teachers.items():
        update_card(BUILTIN_DIR / f"{CARD_FILES[name]}.pt", {"held_out_users": entries})
    old = json.loads((BUILTIN_DIR / "student-2x32.pt.card.json").read_text()).get("held_out_users", {})
    update_card(BUILTIN_DIR / "student-2x32.pt", {"held_out_users": {**old, **student}})


def merge(dirs: list[str]) -> dict:
    """Combine results.json files of runs made per teacher (e.g. in parallel processes)."""
    merged: dict = {"table": {}, "rows": {}, "sources": dirs}
    for d in dirs:
        part = json.loads((Path(d) / "results.json").read_text())
        for key in ("table", "rows"):
            for snr, by_teacher in part[key].items():
                merged[key].setdefault(snr, {}).update(by_teacher)
        if part.get("sweep"):
            merged["sweep"] = part["sweep"]
    merged["table"] = {
        snr: {name: summarise(rows) for name, rows in by_teacher.items()}
        for snr, by_teacher in sorted(merged["rows"].items(), key=lambda kv: float(kv[0]))
    }
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--snr", type=float, nargs="+", default=[0.0, 5.0])
    ap.add_argument("--teachers", nargs="+", default=list(TEACHERS), choices=list(TEACHERS))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--sweep", type=int, nargs="*", default=[], help="step counts for the gain-vs-steps curve"
    )
    ap.add_argument("--sweep-users", type=int, default=12)
    ap.add_argument("--sweep-teacher", default="convtasnet", choices=list(TEACHERS))
    ap.add_argument(
        "--sweep-only", action="store_true", help="skip the table, run only the gain-vs-steps sweep"
    )
    ap.add_argument("--out", default="simulations/results/adapt_table")
    ap.add_argument(
        "--merge", nargs="+", default=None, help="merge the results.json of these run folders into --out"
    )
    ap.add_argument(
        "--write-cards", action="store_true", help="record held-out-user figures in the shipped cards"
    )
    args = ap.parse_args()
    if args.merge:
        results = merge(args.merge)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "table.md").write_text(markdown(results))
        if args.write_cards:
            write_cards(results)
        print(markdown(results))
        return

    from fedpse.config import load_config
    from fedpse.world.cache import build_world

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"table": {}, "rows": {}, "args": vars(args)}
    t0 = time.perf_counter()
    for snr in [] if args.sweep_only else args.snr:
        base = _world_overrides(snr, args.users) + args.overrides
        build_world(load_config(overrides=base), progress=False)
        for name in args.teachers:
            overrides = base + TEACHERS[name] + args.overrides
            world = build_world(load_config(overrides=overrides), progress=False)
            rows = _pool_map(_one_user, world.user_ids(), overrides, args.workers)
            key = f"{snr:g}"
            results["rows"].setdefault(key, {})[name] = rows
            results["table"].setdefault(key, {})[name] = summarise(rows)
            print(
                f"[{time.perf_counter() - t0:7.0f}s] {key} dB {name}: {json.dumps(results['table'][key][name])}",
                flush=True,
            )
    if args.sweep:
        snr = args.snr[-1]
        overrides = _world_overrides(snr, args.users) + TEACHERS[args.sweep_teacher] + args.overrides
        world = build_world(load_config(overrides=overrides), progress=False)
        users = world.user_ids()[: args.sweep_users]
        rows = _pool_map(_sweep_user, [(u, sorted(args.sweep)) for u in users], overrides, args.workers)
        mean_gain = {s: float(np.mean([r["gain_by_steps"][s] for r in rows])) for s in sorted(args.sweep)}
        results["sweep"] = {
            "teacher": args.sweep_teacher,
            "snr": snr,
            "users": len(users),
            "mean_gain": mean_gain,
            "rows": rows,
        }
        print(f"[{time.perf_counter() - t0:7.0f}s] sweep: {mean_gain}", flush=True)
    results["wall_seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "table.md").write_text(markdown(results))
    if args.write_cards:
        write_cards(results)
    print(markdown(results))


if __name__ == "__main__":
    main()
