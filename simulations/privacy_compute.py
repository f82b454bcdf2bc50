"""privacy_compute: how much personalization gain per byte, per exposed second of raw audio, per device MAC?

What it answers: for the three delivery modes (pseudo_targets, teacher_weights, cloud_student) × payload precision
(fp32 / fp16 / int8) × upload codec (flac / lossy Opus) × adaptation minutes, the mean SI-SDR gain per user and what
it cost per user: MB up and down, seconds of raw audio that left the device, device and server GMAC — and the
ratios gain per MB, gain per exposed minute, gain per device GMAC.

    python simulations/privacy_compute.py              # full: 15 runs × 12 users, minutes 0.5 / 1 / 2
    python simulations/privacy_compute.py --quick      # smoke test: 5 runs × 3 users, minutes 0.5 / 1, 5 steps/round
    python simulations/privacy_compute.py --users 8 --precisions fp16 int8 --codecs flac --minutes 1 2

Durations on the 2-core machine: --quick 1 min 10 s (measured at load 6–7); full (15 runs × 12 users × 4 rounds =
720 user-rounds, one Ray start-up) 26 min 29 s on the idle machine (measured, 2026-11-24, with the earlier default
teacher teacher-gru; peak RSS of the driver 1.0 GB); 1 h 04 min with teacher-gru-log under load 3-5. Teacher
outputs and baseline scores come from the result cache ``federation.cache_dir`` after their first computation.

One ``fedpse simulate`` run per cell of the grid, all in ONE ``simulate_many`` call (one Ray start-up), on the default
world's first ``--users`` users (every user every round). The upload codec only matters for modes that upload audio,
so teacher_weights runs once per precision (15 runs for the full grid, not 18). Precision sets both
``federation.weights_precision`` and ``federation.targets_precision`` (each mode sends one kind of payload down).
Adaptation minutes are read off each run round by round: with ``federation.chunks_per_round`` chunks of 10 s per
round, the state after round r of a run is exactly that of an r-round run (the same chunks arrive, the same
per-(user, round) seeds), and its costs are ``ledger.csv`` summed up to round r — so minutes {0.5, 1, 2} cost one
4-round run per cell, not three runs.

Writes to --out (default ``simulations/results/privacy_compute``, ``…_quick`` with --quick): ``runs/<mode>/<precision>[-<codec>]/``
(run directories), ``tradeoff.md`` and ``results.json`` (the trade-off table), and ``report/`` (``fedpse report`` of all
runs: report.md, report.html, Pareto plots). Finished runs in --out with the same config are reused and interrupted
ones continued when the command is repeated; ``--fresh`` reruns them. The runs' ``devices/`` folders (device state,
10–20 MB per user and run) are removed once the tables are written, unless ``--keep-devices``. Checked: a 1-round run
gives the same per-user gains and costs as round 1 of a 2-round run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import shutil
import time
from pathlib import Path

import numpy as np
from studylib import (
    RESULTS_DIR,
    StudyError,
    duration,
    load_preset,
    md_table,
    num,
    prepare_out,
    ratio,
    run_main,
    write_json,
)

MODES = ("pseudo_targets", "teacher_weights", "cloud_student")
AUDIO_MODES = ("pseudo_targets", "cloud_student")  # modes that upload noisy audio: the codec matters
PRECISIONS = ("fp32", "fp16", "int8")
CODECS = ("flac", "lossy")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid. ``codec`` is None for a mode that uploads no audio."""

    mode: str
    precision: str
    codec: str | None

    @property
    def name(self) -> str:
        return f"{self.precision}-{self.codec}" if self.codec else self.precision

    def run_dir(self, runs: Path) -> Path:
        return runs / self.mode / self.name

    def overrides(self) -> list[str]:
        out = [
            f"federation.mode={self.mode}",
            f"federation.weights_precision={self.precision}",
            f"federation.targets_precision={self.precision}",
        ]
        return out + ([f"federation.upload_codec={self.codec}"] if self.codec else [])


def _check(kind: str, values, allowed) -> list[str]:
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise StudyError(
            f"--{kind}: unknown {kind[:-1]} {bad[0] if bad else '(none)'!r}; expected some of {', '.join(allowed)}"
        )
    return list(dict.fromkeys(values))


def build_grid(modes: list[str], precisions: list[str], codecs: list[str]) -> list[Cell]:
    """modes × precisions × codecs, without the redundant codec variants of modes that upload no audio."""
    modes, precisions, codecs = (
        _check("modes", modes, MODES),
        _check("precisions", precisions, PRECISIONS),
        _check("codecs", codecs, CODECS),
    )
    return [
        Cell(m, p, c if m in AUDIO_MODES else None)
        for m in modes
        for p in precisions
        for c in (codecs if m in AUDIO_MODES else [None])
    ]


def parse_cells(cells: list) -> list[Cell]:
    """An explicit list of ``[mode, precision, codec]`` (codec left out or null for teacher_weights)."""
    out = []
    for item in cells:
        if not isinstance(item, list | tuple) or len(item) not in (2, 3):
            raise StudyError(f"cells: expected [mode, precision, codec], got {item!r}")
        mode, precision, codec = (*item, None)[:3]
        _check("modes", [mode], MODES)
        _check("precisions", [precision], PRECISIONS)
        if mode in AUDIO_MODES:
            _check("codecs", [codec], CODECS)
        out.append(Cell(mode, precision, codec if mode in AUDIO_MODES else None))
    if len(set(out)) != len(out):
        raise StudyError("cells: a cell is listed twice")
    return out


def round_plan(
    minutes: list[float], chunk_seconds: float, available_minutes: float
) -> tuple[int, int, dict[float, int]]:
    """(chunks per round, rounds, {minutes: round to read}) for the requested adaptation minutes."""
    if not minutes or any(m <= 0 for m in minutes):
        raise StudyError(f"--minutes: expected positive minutes, got {minutes}")
    chunks = {}
    for m in sorted(set(minutes)):
        n = m * 60 / chunk_seconds
        if abs(n - round(n)) > 1e-6:
            raise StudyError(f"--minutes {m:g}: not a whole number of {chunk_seconds:g} s chunks")
        if m > available_minutes + 1e-9:
            raise StudyError(
                f"--minutes {m:g}: the world has {available_minutes:g} min of adaptation audio per user"
            )
        chunks[m] = round(n)
    per_round = math.gcd(*chunks.values())
    return per_round, max(chunks.values()) // per_round, {m: n // per_round for m, n in chunks.items()}


# ------------------------------------------------------------------------------------------------ reading runs
def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_run(run_dir: Path, rounds: dict[float, int]) -> list[dict]:
    """Per requested minutes: mean gain at that round and the per-user costs summed over rounds up to it."""
    users = len(_rows(run_dir / "users.csv"))
    ledger = _rows(run_dir / "ledger.csv")
    evaluations = _rows(run_dir / "evaluations.csv")
    out = []
    for minutes, r in sorted(rounds.items()):
        upto = [row for row in ledger if int(row["round"]) <= r]

        def total(column: str, direction: str | None = None, rows=upto) -> float:
            return sum(_float(x[column]) for x in rows if direction in (None, x["direction"])) / users

        scored = [e for e in evaluations if int(e["round"]) == r]
        gains = np.array([_float(e["gain_db"]) for e in scored])
        out.append(
            {
                "minutes": minutes,
                "round": r,
                "users": users,
                "users_scored": int(np.isfinite(gains).sum()),
                "gain_db": float(np.nanmean(gains)) if np.isfinite(gains).any() else math.nan,
                "improved_pct": float(100 * np.mean(gains[np.isfinite(gains)] > 0))
                if np.isfinite(gains).any()
                else math.nan,
                "si_sdr_generic": float(np.nanmean([_float(e["si_sdr_generic"]) for e in scored]))
                if scored
                else math.nan,
                "si_sdr_personalized": float(np.nanmean([_float(e["si_sdr_personalized"]) for e in scored]))
                if scored
                else math.nan,
                "mb_up": total("bytes", "up") / 1e6,
                "mb_down": total("bytes", "down") / 1e6,
                "audio_seconds_exposed": total("audio_seconds", "up"),
                "device_gmac": total("device_macs") / 1e9,
                "server_gmac": total("server_macs") / 1e9,
            }
        )
    return out


def add_ratios(row: dict) -> dict:
    gain = row["gain_db"]
    row["gain_per_mb"] = ratio(gain, row["mb_up"] + row["mb_down"])
    row["gain_per_exposed_minute"] = ratio(gain, row["audio_seconds_exposed"] / 60)
    row["gain_per_device_gmac"] = ratio(gain, row["device_gmac"])
    return row


def check_totals(run_dir: Path, last: dict) -> str | None:
    """The ledger sum at the last round must equal users.csv's per-user costs (a guard on the reading above)."""
    users = _rows(run_dir / "users.csv")
    expected = {
        "mb_up": sum(_float(u.get("bytes_up")) for u in users) / len(users) / 1e6,
        "mb_down": sum(_float(u.get("bytes_down")) for u in users) / len(users) / 1e6,
        "audio_seconds_exposed": sum(_float(u.get("audio_seconds_exposed")) for u in users) / len(users),
    }
    off = [k for k, v in expected.items() if math.isfinite(v) and abs(v - last[k]) > 1e-3 * max(1.0, abs(v))]
    return f"{run_dir}: ledger sums differ from users.csv for {off}" if off else None


# ------------------------------------------------------------------------------------------------ tables
COLUMNS = [
    "mode",
    "precision",
    "codec",
    "minutes",
    "gain dB",
    "users improved",
    "MB up/user",
    "MB down/user",
    "audio s exposed/user",
    "device GMAC/user",
    "server GMAC/user",
    "dB per MB",
    "dB per exposed min",
    "dB per device GMAC",
]


def table_rows(rows: list[dict]) -> list[list[str]]:
    return [
        [
            r["mode"],
            r["precision"],
            r["codec"] or "– (no upload)",
            f"{r['minutes']:g}",
            num(r["gain_db"], signed=True),
            f"{r['improved_pct']:.0f} %" if math.isfinite(r["improved_pct"]) else "–",
            num(r["mb_up"], 3),
            num(r["mb_down"], 3),
            num(r["audio_seconds_exposed"], 0),
            num(r["device_gmac"], 1),
            num(r["server_gmac"], 1),
            num(r["gain_per_mb"], 3),
            num(r["gain_per_exposed_minute"], 3),
            num(r["gain_per_device_gmac"], 4),
        ]
        for r in rows
    ]


def best_lines(rows: list[dict]) -> list[str]:
    """The answer to each question: the cell with the most gain per unit of each cost (among cells that gain)."""
    lines = []
    for key, what in (
        ("gain_per_mb", "gain per MB transferred"),
        ("gain_per_exposed_minute", "gain per exposed minute of raw audio"),
        ("gain_per_device_gmac", "gain per device GMAC"),
    ):
        gaining = [
            r for r in rows if math.isfinite(r["gain_db"]) and r["gain_db"] > 0 and not math.isnan(r[key])
        ]
        if not gaining:
            lines.append(f"- Most {what}: no cell gained.")
            continue
        top = max(r[key] for r in gaining)
        tied = [r for r in gaining if r[key] == top]
        best = max(tied, key=lambda r: r["gain_db"])
        free = " (costs nothing of this kind)" if math.isinf(top) else ""
        lines.append(
            f"- Most {what}: {best['mode']} {best['precision']}{' ' + best['codec'] if best['codec'] else ''}, "
            f"{best['minutes']:g} min — {num(best[key], 3)} dB per unit{free}, gain {num(best['gain_db'], signed=True)} dB"
            + (f" ({len(tied) - 1} more cells tie)" if len(tied) > 1 else "")
        )
    return lines


def markdown(rows: list[dict], meta: dict) -> str:
    text = (
        f"Per user, means over {meta['users']} users of the default world; gain = personalized − generic SI-SDR (dB) "
        f"after the given minutes of unlabeled audio ({meta['chunks_per_round']} × {meta['chunk_seconds']:g} s chunks "
        f"per round, {meta['steps_per_round']} steps per round, every user every round). ∞: the mode spends none of "
        "that cost.\n\n"
    )
    text += md_table(COLUMNS, table_rows(rows))
    return text + "\n" + "\n".join(best_lines(rows)) + "\n"


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="privacy_compute", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="the smoke-test preset (see configs/privacy_compute.yaml)"
    )
    ap.add_argument(
        "--config", default=None, help="preset file (default: simulations/configs/privacy_compute.yaml)"
    )
    ap.add_argument("--users", type=int, help="the default world's first N users")
    ap.add_argument("--modes", nargs="+", help=" ".join(MODES))
    ap.add_argument("--precisions", nargs="+", help=" ".join(PRECISIONS))
    ap.add_argument("--codecs", nargs="+", help=" ".join(CODECS))
    ap.add_argument("--minutes", type=float, nargs="+", help="adaptation minutes to read (multiples of 10 s)")
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override (repeatable)"
    )
    ap.add_argument("--fresh", action="store_true", help="rerun cells whose run directories exist in --out")
    ap.add_argument(
        "--keep-devices", action="store_true", help="keep each finished run's devices/ folder (device state)"
    )
    ap.add_argument("--no-report", action="store_true", help="skip the fedpse report of the runs")
    ap.add_argument(
        "--out", default=None, help="output folder (default simulations/results/privacy_compute[_quick])"
    )
    return ap.parse_args(argv)


def resolve(args: argparse.Namespace) -> dict:
    p = load_preset("privacy_compute", args.quick, args.config)
    grid_given = any(x is not None for x in (args.modes, args.precisions, args.codecs))
    s = {
        "users": args.users if args.users is not None else p.get("users"),
        "minutes": [float(m) for m in (args.minutes or p.get("minutes") or [])],
        "overrides": [*p.get("overrides", []), *args.overrides],
        "out": args.out or str(RESULTS_DIR / ("privacy_compute_quick" if args.quick else "privacy_compute")),
        "fresh": args.fresh,
        "report": not args.no_report,
        "keep_devices": args.keep_devices,
    }
    if p.get("cells") and not grid_given:
        s["cells"] = parse_cells(p["cells"])
    else:
        s["cells"] = build_grid(
            args.modes or p.get("modes") or list(MODES),
            args.precisions or p.get("precisions") or list(PRECISIONS),
            args.codecs or p.get("codecs") or list(CODECS),
        )
    if not isinstance(s["users"], int) or s["users"] < 1:
        raise StudyError(f"--users: expected >= 1, got {s['users']}")
    return s


def plan_runs(s: dict, runs: Path) -> tuple[list, dict]:
    """The config of every cell (checked), and the round plan."""
    from fedpse.config import load_config

    base = load_config(overrides=s["overrides"])
    per_round, num_rounds, rounds = round_plan(
        s["minutes"], base.world.chunk_seconds, base.world.adaptation_minutes
    )
    common = [
        f"federation.num_users={s['users']}",
        f"federation.num_rounds={num_rounds}",
        f"federation.chunks_per_round={per_round}",
        "federation.fraction=1.0",
    ]
    configs = [
        (cell, load_config(overrides=[*s["overrides"], *common, *cell.overrides()])) for cell in s["cells"]
    ]
    meta = {
        "users": s["users"],
        "chunks_per_round": per_round,
        "num_rounds": num_rounds,
        "chunk_seconds": base.world.chunk_seconds,
        "steps_per_round": base.federation.steps_per_round or base.adapt.steps,
        "rounds_read": {f"{m:g}": r for m, r in rounds.items()},
    }
    return configs, {"meta": meta, "rounds": rounds}


def same_config(run_dir: Path, cfg) -> bool:
    """The run directory was made from ``cfg`` (keys that only say where/how it ran may differ)."""
    from fedpse.config import load_config
    from fedpse.federation.prepare import config_changes

    return not config_changes(load_config(run_dir / "config.yaml"), cfg)


def run_grid(configs: list, runs: Path, fresh: bool) -> dict[str, str]:
    """Run every cell without a finished run directory in one Flower simulation; returns what was done per cell."""
    from fedpse.federation import prepare, runner
    from fedpse.results.store import RunStore

    new, resumed, status = [], [], {}
    for cell, cfg in configs:
        d = cell.run_dir(runs)
        if d.exists() and fresh:
            shutil.rmtree(d)
        if not (d / "config.yaml").is_file():
            new.append((cfg, d))
            status[str(d)] = "new"
        elif not same_config(d, cfg):
            raise StudyError(
                f"{d}: made with another config; remove it, pass --fresh, or choose another --out"
            )
        elif RunStore(d).finished:
            status[str(d)] = "reused"
        else:
            resumed.append(d)
            status[str(d)] = "continued"
    print(
        f"privacy_compute: {len(new)} new, {len(resumed)} continued, "
        f"{sum(v == 'reused' for v in status.values())} reused runs under {runs}",
        flush=True,
    )
    if resumed:
        plans = [prepare.resumable(d) for d in resumed]
        plans += [prepare.create(prepare.check(c, d)) for c, d in new]
        runner.run_plans(plans)
    elif new:
        runner.simulate_many(new)
    return status


def main(argv: list[str] | None = None) -> dict:
    s = resolve(parse_args(argv))
    out = prepare_out(s["out"])
    runs = out / "runs"
    configs, plan = plan_runs(s, runs)
    meta = plan["meta"]
    print(
        f"privacy_compute: {len(configs)} runs × {s['users']} users × {meta['num_rounds']} rounds of "
        f"{meta['chunks_per_round']} chunks; minutes read: {', '.join(meta['rounds_read'])}",
        flush=True,
    )
    t0 = time.perf_counter()
    status = run_grid(configs, runs, s["fresh"])
    wall = time.perf_counter() - t0
    rows, warnings = [], []
    for cell, _ in configs:
        d = cell.run_dir(runs)
        readings = read_run(d, plan["rounds"])
        warning = check_totals(d, read_run(d, {0: meta["num_rounds"]})[0])
        if warning:
            warnings.append(warning)
        rows += [
            add_ratios({"mode": cell.mode, "precision": cell.precision, "codec": cell.codec, **r})
            for r in readings
        ]
    rows.sort(
        key=lambda r: (
            MODES.index(r["mode"]),
            r["minutes"],
            PRECISIONS.index(r["precision"]),
            r["codec"] or "",
        )
    )
    text = markdown(rows, meta) + "".join(f"\nwarning: {w}\n" for w in warnings)
    (out / "tradeoff.md").write_text(text)
    results = {
        "settings": {**s, "cells": [dataclasses.asdict(c) for c in s["cells"]]},
        "meta": meta,
        "rows": rows,
    }
    results.update(
        runs={str(cell.run_dir(runs)): status[str(cell.run_dir(runs))] for cell, _ in configs},
        wall_seconds=wall,
    )
    if s["report"]:
        import fedpse.federation.strategies  # noqa: F401  each mode registers its colour and order for the report
        from fedpse.results.report import build_report

        report = build_report([cell.run_dir(runs) for cell, _ in configs], out / "report")
        results["report"] = str(report.html)
    write_json(out / "results.json", results)
    if not s["keep_devices"]:  # device state (students, cached teachers, targets): 10–20 MB per user and run
        for cell, _ in configs:
            shutil.rmtree(cell.run_dir(runs) / "devices", ignore_errors=True)
    print(text)
    print(
        f"privacy_compute: wrote {out / 'tradeoff.md'}, {out / 'results.json'}"
        + (f", {out / 'report'}" if s["report"] else "")
        + f" ({duration(wall)} of simulation)"
    )
    return results


if __name__ == "__main__":
    run_main("privacy_compute", main, resumable=True)
