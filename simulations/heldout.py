"""heldout: do the shipped teachers keep their lead over the generic student, and does distilling from them still
pay, on worlds the models never trained on? The built-in world against a held-out synthesizer (users' voices from a
neural TTS no model trained on, ``configs/heldout-synth.yaml``) and held-out noise (procedural families held out of
every shipped model's pretraining, ``configs/heldout-noise.yaml``).

    python simulations/heldout.py                   # preset: configs/heldout.yaml (worlds × 0/5 dB × teachers)
    python simulations/heldout.py --quick           # smoke test: the built-in and held-out-noise worlds, 2 users
    python simulations/heldout.py --worlds noise    # one world

Each (world) is one ``paper_table.py`` run (bare per-user loop, fixed-SNR worlds, 2×32 student) with the world's
config file applied first (``--world-config``), in ``--out/<world>/`` (resumable through its ``rows.jsonl``). The
built-in world's rows are the main paper table's (``results/paper_table/rows.jsonl``; rows with the same setting
key are the same computation, so they are copied in, not recomputed). Writes ``results.json`` and ``table.md``:
per (world, teacher, SNR) the teacher's lead over the generic 2×32 student, the gain of the fine-tuned student,
users improved, gap closure, the worst user; and per teacher its smallest lead over all worlds (what the default
teacher is chosen by, see README).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
from paper_table_setup import TEACHER_LABELS, paper_table_argv, seed_plain_rows
from studylib import (
    REPO,
    RESULTS_DIR,
    check_names,
    duration,
    load_preset,
    md_table,
    num,
    prepare_out,
    run_main,
    write_json,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="heldout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="the smoke-test preset")
    ap.add_argument("--config", help="preset file (default: simulations/configs/heldout.yaml)")
    ap.add_argument("--worlds", nargs="+", help="names of the preset's worlds")
    ap.add_argument("--users", type=int)
    ap.add_argument("--teachers", nargs="+")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--no-compute", action="store_true", help="tabulate the rows already computed")
    ap.add_argument(
        "--write-cards",
        action="store_true",
        help="record each teacher's lead (and the 2×32 student's SI-SDR) per world in the shipped model cards",
    )
    ap.add_argument("--out")
    return ap.parse_args(argv)


def resolve(args: argparse.Namespace) -> dict:
    p = load_preset("heldout", args.quick, args.config)
    worlds = dict(p["worlds"])
    names = args.worlds or list(worlds)
    check_names(names, worlds, "--worlds", "world")
    return {
        "worlds": {w: worlds[w] for w in names},
        "users": args.users or p["users"],
        "snr_db": [float(x) for x in p["snr_db"]],
        "student": int(p.get("student", 32)),
        "teachers": list(args.teachers or p["teachers"]),
        "overrides": list(p.get("overrides") or []),
        "adapt_minutes": p.get("adapt_minutes"),
        "workers": args.workers or p.get("workers", 2),
        "no_compute": args.no_compute,
        "write_cards": args.write_cards,
        "out": args.out or str(RESULTS_DIR / ("heldout_quick" if args.quick else "heldout")),
    }


def run_world(s: dict, name: str, spec: dict, out: Path) -> list[dict]:
    import paper_table

    wdir = out / name
    wdir.mkdir(parents=True, exist_ok=True)
    config = spec.get("config")
    if config is None:  # the built-in world: the main paper table's rows
        seed_plain_rows(wdir, s["student"], s["snr_db"], s["teachers"])
    study = {**s, "adapt_minutes": spec.get("adapt_minutes", s["adapt_minutes"])}
    argv = paper_table_argv(
        study, spec.get("users") or s["users"], s["teachers"], wdir, spec.get("overrides") or []
    )
    if config:
        argv += ["--world-config", str(REPO / config)]
    print(f"heldout: world {name} ({config or 'built-in'})", flush=True)
    return paper_table.main(argv).get("rows", [])


def summarise(rows: list[dict]) -> dict:
    gains = np.array([r["gain_db"] for r in rows])
    lead = np.array([r["si_sdr_teacher"] - r["si_sdr_generic"] for r in rows])
    return {
        "users": len(rows),
        "mixture": float(np.mean([r["si_sdr_noisy"] for r in rows])),
        "generic": float(np.mean([r["si_sdr_generic"] for r in rows])),
        "teacher": float(np.mean([r["si_sdr_teacher"] for r in rows])),
        "adapted": float(np.mean([r["si_sdr_personalized"] for r in rows])),
        "teacher_minus_generic": float(lead.mean()),
        "teacher_below_generic": int(np.sum(lead < 0)),
        "gain_mean": float(gains.mean()),
        "improved_pct": float(100 * np.mean(gains > 0)),
        "worst_gain": float(gains.min()),
        "gap_closure_of_means": float(gains.mean() / lead.mean()) if lead.mean() > 1e-9 else math.nan,
    }


def tabulate(by_world: dict[str, list[dict]]) -> dict:
    table: dict = {}
    for world, rows in by_world.items():
        cells: dict = {}
        for r in rows:
            cells.setdefault(r["teacher"], {}).setdefault(f"{r['snr_db']:g}", []).append(r)
        for teacher, by_snr in cells.items():
            for snr, rs in sorted(by_snr.items(), key=lambda kv: float(kv[0])):
                table.setdefault(world, {}).setdefault(teacher, {})[snr] = summarise(rs)
    return table


def worst_leads(table: dict) -> dict:
    """Per teacher: its smallest lead over the generic student and its smallest KD gain over every (world, SNR)."""
    out: dict = {}
    for world, by_t in table.items():
        for teacher, by_snr in by_t.items():
            for snr, c in by_snr.items():
                o = out.setdefault(teacher, {"lead": math.inf, "gain": math.inf, "where": ""})
                if c["teacher_minus_generic"] < o["lead"]:
                    o["lead"], o["where"] = c["teacher_minus_generic"], f"{world} {snr} dB"
                o["gain"] = min(o["gain"], c["gain_mean"])
    return out


def markdown(table: dict, worlds: dict) -> str:
    rows = []
    for world, by_t in table.items():
        for teacher, by_snr in by_t.items():
            for snr, c in by_snr.items():
                rows.append(
                    [
                        world,
                        f"{num(float(snr), 0)} dB",
                        TEACHER_LABELS.get(teacher, teacher),
                        num(c["generic"]),
                        num(c["teacher"]),
                        num(c["teacher_minus_generic"], signed=True),
                        c["teacher_below_generic"],
                        num(c["adapted"]),
                        num(c["gain_mean"], signed=True),
                        f"{c['improved_pct']:.0f} %",
                        num(c["worst_gain"], signed=True),
                        num(c["gap_closure_of_means"]),
                        c["users"],
                    ]
                )
    headers = [
        "world",
        "input SNR",
        "teacher",
        "2×32 generic",
        "teacher",
        "teacher − generic (dB)",
        "users teacher < generic",
        "2×32 fine-tuned",
        "gain (dB)",
        "users improved",
        "worst user (dB)",
        "gap closure",
        "users",
    ]
    text = "SI-SDR (dB), mean over users; fine-tuned = the 2×32 student distilled from that teacher's pseudo-targets.\n\n"
    text += md_table(headers, rows)
    leads = worst_leads(table)
    text += "\nPer teacher, its weakest figures over every world and SNR above:\n\n" + md_table(
        ["teacher", "smallest lead over generic (dB)", "where", "smallest mean gain (dB)"],
        [
            [TEACHER_LABELS.get(t, t), num(o["lead"], signed=True), o["where"], num(o["gain"], signed=True)]
            for t, o in sorted(leads.items(), key=lambda kv: -kv[1]["lead"])
        ],
    )
    legend = "; ".join(
        f"`{w}`: {spec.get('about', spec.get('config') or 'built-in')}" for w, spec in worlds.items()
    )
    return text + f"\nWorlds: {legend}.\n"


CARD_TEACHERS = {"gru": "teacher-gru", "gru-log": "teacher-gru-log", "convtasnet": "teacher-convtasnet"}


def write_cards(table: dict, worlds: dict, student: int) -> list[str]:
    """``held_out_worlds`` in the shipped cards: per world and SNR, each teacher's lead over (and gain it gives) the
    generic student, and that student's own SI-SDR, next to the built-in world's figures."""
    from fedpse.models.checkpoints import update_card
    from fedpse.models.zoo import BUILTIN_DIR

    teachers: dict = {}
    students: dict = {}
    for world, by_t in table.items():
        about = worlds.get(world, {}).get("about", world)
        for teacher, by_snr in by_t.items():
            for snr, c in by_snr.items():
                cell = {"users": c["users"], f"minus_generic_2x{student}": c["teacher_minus_generic"]}
                cell[f"gain_2x{student}"] = c["gain_mean"]
                teachers.setdefault(teacher, {}).setdefault(world, {"world": about})[f"{snr}dB"] = cell
                generic = {"users": c["users"], "si_sdr": c["generic"], "mixture": c["mixture"]}
                students.setdefault(world, {"world": about})[f"{snr}dB"] = generic
    written = []
    for teacher, figures in teachers.items():
        if teacher in CARD_TEACHERS:
            update_card(BUILTIN_DIR / f"{CARD_TEACHERS[teacher]}.pt", {"held_out_worlds": figures})
            written.append(CARD_TEACHERS[teacher])
    update_card(BUILTIN_DIR / f"student-2x{student}.pt", {"held_out_worlds": students})
    return [*written, f"student-2x{student}"]


def main(argv: list[str] | None = None) -> dict:
    s = resolve(parse_args(argv))
    out = prepare_out(s["out"])
    t0 = time.perf_counter()
    by_world = {w: run_world(s, w, spec, out) for w, spec in s["worlds"].items()}
    table = tabulate(by_world)
    results = {
        "settings": s,
        "table": table,
        "worst": worst_leads(table),
        "wall_seconds": time.perf_counter() - t0,
    }
    write_json(out / "results.json", results)
    text = markdown(table, s["worlds"])
    (out / "table.md").write_text(text)
    if s["write_cards"]:
        print(
            "heldout: updated the model cards of " + ", ".join(write_cards(table, s["worlds"], s["student"]))
        )
    print(text)
    print(f"heldout: wrote {out / 'table.md'} in {duration(results['wall_seconds'])}")
    return results


if __name__ == "__main__":
    run_main("heldout", main)
