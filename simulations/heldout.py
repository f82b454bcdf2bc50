"""heldout: do the shipped teachers keep their lead over the generic student, and does distilling from them still
pay, on worlds the models never trained on? The built-in world against a held-out synthesizer (users' voices from a
neural TTS no model trained on, ``configs/heldout-synth.yaml``) and held-out noise (procedural families held out of
every shipped model's pretraining, ``configs/heldout-noise.yaml``); every shipped student size where the preset asks.

    python simulations/heldout.py                   # preset: configs/heldout.yaml (worlds × 0/5 dB × students × teachers)
    python simulations/heldout.py --quick           # smoke test: the built-in and held-out-noise worlds, 2 users
    python simulations/heldout.py --worlds noise    # one world
    python simulations/heldout.py --worlds synth --students 64 128 256 --teachers gru-log   # more students

Each world is one ``paper_table.py`` run (bare per-user loop, fixed-SNR worlds) with the world's config file applied
first (``--world-config``), in ``--out/<world>/`` (resumable through its ``rows.jsonl``): its students (preset
``students``, or a world's own ``students``; ``--students`` for every world) × its teachers (``teachers``, a world's
own, or ``--teachers``), where ``student_teachers`` can limit a student size to some teachers (students grouped by
their teachers make one run each, then one ``--no-compute`` run tabulates the world). The built-in world's rows are
the main paper table's (``results/paper_table/rows.jsonl``; rows with the same setting key are the same computation,
so they are copied in, not recomputed). Writes ``results.json`` and ``table.md``: per (world, teacher, SNR) the
teacher's lead over the generic 2×32 student, the gain of the fine-tuned student, users improved, gap closure, the
worst user; per teacher its smallest lead over all worlds (what the default teacher is chosen by, see README); and per
(world, SNR, student) the same figures of every student measured, distilled from the default teacher.
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
    StudyError,
    check_names,
    duration,
    load_preset,
    md_table,
    num,
    prepare_out,
    run_main,
    write_json,
)

# the main table and the teachers' weakest leads (what the default teacher is chosen by) are about the 2×32
MAIN_STUDENT = 32
# the every-student table's teacher (another teacher only where it has no rows for a student)
DEFAULT_TEACHER = "gru-log"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="heldout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="the smoke-test preset")
    ap.add_argument("--config", help="preset file (default: simulations/configs/heldout.yaml)")
    ap.add_argument("--worlds", nargs="+", help="names of the preset's worlds")
    ap.add_argument("--users", type=int)
    ap.add_argument(
        "--students", type=int, nargs="+", help="student sizes H of 2×H for every world: 32 64 128 256"
    )
    ap.add_argument("--teachers", nargs="+", help="teachers for every world")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--no-compute", action="store_true", help="tabulate the rows already computed")
    ap.add_argument(
        "--write-cards",
        action="store_true",
        help="record each teacher's lead (and each student's SI-SDR) per world in the shipped model cards",
    )
    ap.add_argument("--out")
    return ap.parse_args(argv)


def _sizes(block: dict) -> list[int] | None:
    """A preset block's student sizes: ``students: [32, 64]``, or the older ``student: 32``."""
    if "students" in block:
        return [int(h) for h in block["students"]]
    return [int(block["student"])] if "student" in block else None


def world_spec(p: dict, spec: dict, args: argparse.Namespace) -> dict:
    """One world's block with its students, teachers and per-student teacher limits resolved."""
    limits = spec.get("student_teachers", p.get("student_teachers")) or {}
    return {
        **spec,
        "students": list(args.students or _sizes(spec) or _sizes(p) or [MAIN_STUDENT]),
        "teachers": list(args.teachers or spec.get("teachers") or p["teachers"]),
        "student_teachers": {int(h): list(ts) for h, ts in limits.items()},
    }


def world_runs(name: str, spec: dict) -> list[tuple[list[int], list[str]]]:
    """The world's ``paper_table`` runs: its students grouped by the teachers each is measured with."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for h in spec["students"]:
        only = spec["student_teachers"].get(h)
        teachers = tuple(t for t in spec["teachers"] if only is None or t in only)
        if teachers:
            groups.setdefault(teachers, []).append(h)
        else:
            print(f"heldout: world {name}: 2×{h} is measured only with {', '.join(only or [])}; skipped")
    if not groups:
        raise StudyError(
            f"world {name}: no (student, teacher) pair to measure; student_teachers limits "
            + ", ".join(f"2×{h} to {' '.join(ts)}" for h, ts in spec["student_teachers"].items())
        )
    return [(hs, list(ts)) for ts, hs in groups.items()]


def resolve(args: argparse.Namespace) -> dict:
    p = load_preset("heldout", args.quick, args.config)
    worlds = dict(p["worlds"])
    names = args.worlds or list(worlds)
    check_names(names, worlds, "--worlds", "world")
    specs = {w: world_spec(p, worlds[w], args) for w in names}
    return {
        "worlds": specs,
        "users": args.users or p["users"],
        "snr_db": [float(x) for x in p["snr_db"]],
        "students": sorted({h for spec in specs.values() for h in spec["students"]}),
        "teachers": list(dict.fromkeys(t for spec in specs.values() for t in spec["teachers"])),
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
        for h in spec["students"]:
            seed_plain_rows(wdir, h, s["snr_db"], spec["teachers"], top_up=True)
    study = {**s, "adapt_minutes": spec.get("adapt_minutes", s["adapt_minutes"])}
    world_config = ["--world-config", str(REPO / config)] if config else []

    def run(students: list[int], teachers: list[str], no_compute: bool) -> list[dict]:
        argv = paper_table_argv(
            {**study, "no_compute": no_compute},
            spec.get("users") or s["users"],
            teachers,
            wdir,
            spec.get("overrides") or [],
            students=students,
        )
        return paper_table.main(argv + world_config).get("rows", [])

    print(f"heldout: world {name} ({config or 'built-in'})", flush=True)
    runs = world_runs(name, spec)
    if len(runs) == 1:
        return run(*runs[0], s["no_compute"])
    if not s["no_compute"]:
        for students, teachers in runs:
            run(students, teachers, False)
    # one run over every student and teacher tabulates the world (its own table.md and results.json hold them all)
    pairs = {(h, t) for students, teachers in runs for h in students for t in teachers}
    print(f"heldout: world {name}: tabulating its {len(pairs)} (student, teacher) pairs", flush=True)
    rows = run(sorted({h for h, _ in pairs}), list(dict.fromkeys(t for _, ts in runs for t in ts)), True)
    return [r for r in rows if (int(r["student"]), r["teacher"]) in pairs]


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
    """``table[world][student H][teacher][SNR]``: a cell's summary (students ascending, teachers in row order)."""
    table: dict = {}
    for world, rows in by_world.items():
        cells: dict = {}
        for r in rows:
            by_t = cells.setdefault(int(r["student"]), {})
            by_t.setdefault(r["teacher"], {}).setdefault(f"{r['snr_db']:g}", []).append(r)
        for h in sorted(cells):
            for teacher, by_snr in cells[h].items():
                for snr, rs in sorted(by_snr.items(), key=lambda kv: float(kv[0])):
                    table.setdefault(world, {}).setdefault(h, {}).setdefault(teacher, {})[snr] = summarise(rs)
    return table


def main_student(table: dict) -> int:
    """The student of the main table: the 2×32 where measured, else the smallest measured."""
    sizes = {h for by_h in table.values() for h in by_h}
    return MAIN_STUDENT if MAIN_STUDENT in sizes or not sizes else min(sizes)


def worst_leads(table: dict) -> dict:
    """Per teacher: its smallest lead over the generic (main) student and its smallest KD gain over every (world,
    SNR) it was measured in, and those worlds."""
    out: dict = {}
    h = main_student(table)
    for world, by_h in table.items():
        for teacher, by_snr in by_h.get(h, {}).items():
            o = out.setdefault(teacher, {"lead": math.inf, "gain": math.inf, "where": "", "worlds": []})
            o["worlds"].append(world)
            for snr, c in by_snr.items():
                if c["teacher_minus_generic"] < o["lead"]:
                    o["lead"], o["where"] = c["teacher_minus_generic"], f"{world} {snr} dB"
                o["gain"] = min(o["gain"], c["gain_mean"])
    return out


def _figures(c: dict, below: bool) -> list:
    """generic, teacher, lead, [users teacher < generic], fine-tuned, gain, improved, worst user, closure, users."""
    cells = [num(c["generic"]), num(c["teacher"]), num(c["teacher_minus_generic"], signed=True)]
    cells += [c["teacher_below_generic"]] if below else []
    cells += [num(c["adapted"]), num(c["gain_mean"], signed=True), f"{c['improved_pct']:.0f} %"]
    return [*cells, num(c["worst_gain"], signed=True), num(c["gap_closure_of_means"]), c["users"]]


def md_students(table: dict) -> str:
    """Per (world, SNR, student): the default teacher's cells (another teacher's where it has none for a student)."""
    rows = []
    for world, by_h in table.items():
        snrs = sorted(
            {snr for by_t in by_h.values() for by_snr in by_t.values() for snr in by_snr}, key=float
        )
        for snr in snrs:
            for h, by_t in by_h.items():
                teachers = [DEFAULT_TEACHER] if DEFAULT_TEACHER in by_t else list(by_t)
                for t in teachers:
                    if snr in by_t[t]:
                        label = TEACHER_LABELS.get(t, t)
                        rows.append(
                            [
                                world,
                                f"{num(float(snr), 0)} dB",
                                f"2×{h}",
                                label,
                                *_figures(by_t[t][snr], False),
                            ]
                        )
    headers = ["world", "input SNR", "student", "teacher", "generic", "teacher", "teacher − generic (dB)"]
    headers += ["fine-tuned", "gain (dB)", "users improved", "worst user (dB)", "gap closure", "users"]
    label = TEACHER_LABELS.get(DEFAULT_TEACHER, DEFAULT_TEACHER)
    return (
        f"\nEvery shipped student measured: per world, SNR and student, the generic student, the teacher and the "
        f"student fine-tuned on its pseudo-targets, with {label} (the default teacher; another teacher only where "
        f"{label} has no rows for that student); SI-SDR (dB), mean over users.\n\n" + md_table(headers, rows)
    )


def markdown(table: dict, worlds: dict) -> str:
    h = main_student(table)
    rows = []
    for world, by_h in table.items():
        for teacher, by_snr in by_h.get(h, {}).items():
            for snr, c in by_snr.items():
                label = TEACHER_LABELS.get(teacher, teacher)
                rows.append([world, f"{num(float(snr), 0)} dB", label, *_figures(c, True)])
    headers = ["world", "input SNR", "teacher", f"2×{h} generic", "teacher", "teacher − generic (dB)"]
    headers += [
        "users teacher < generic",
        f"2×{h} fine-tuned",
        "gain (dB)",
        "users improved",
        "worst user (dB)",
    ]
    headers += ["gap closure", "users"]
    text = f"SI-SDR (dB), mean over users; fine-tuned = the 2×{h} student distilled from that teacher's pseudo-targets.\n\n"
    text += md_table(headers, rows)
    leads = worst_leads(table)
    text += "\nPer teacher, its weakest figures over every world and SNR above:\n\n" + md_table(
        ["teacher", "smallest lead over generic (dB)", "where", "smallest mean gain (dB)"],
        [
            [TEACHER_LABELS.get(t, t), num(o["lead"], signed=True), o["where"], num(o["gain"], signed=True)]
            for t, o in sorted(leads.items(), key=lambda kv: -kv[1]["lead"])
        ],
    )
    partial = [
        f"{TEACHER_LABELS.get(t, t)} only on {', '.join(f'`{w}`' for w in o['worlds'])}"
        for t, o in leads.items()
        if len(o["worlds"]) < len(table)
    ]
    if partial:
        text += f"\nTeachers measured on some worlds only, their weakest figures over those: {'; '.join(partial)}.\n"
    if len({h for by_h in table.values() for h in by_h}) > 1:
        text += md_students(table)
    legend = "; ".join(
        f"`{w}`: {spec.get('about', spec.get('config') or 'built-in')}" for w, spec in worlds.items()
    )
    return text + f"\nWorlds: {legend}.\n"


CARD_TEACHERS = {
    "gru": "teacher-gru",
    "gru-log": "teacher-gru-log",
    "convtasnet": "teacher-convtasnet",
    "convtasnet-voices": "teacher-convtasnet-voices",
}


def write_cards(table: dict, worlds: dict) -> list[str]:
    """``held_out_worlds`` in the shipped cards: per world and SNR, each teacher's lead over (and gain it gives) each
    generic student measured, and each student's own SI-SDR, next to the built-in world's figures."""
    from fedpse.models.checkpoints import update_card
    from fedpse.models.zoo import BUILTIN_DIR

    teachers: dict = {}
    students: dict = {}
    for world, by_h in table.items():
        about = worlds.get(world, {}).get("about", world)
        for h, by_t in by_h.items():
            for teacher, by_snr in by_t.items():
                for snr, c in by_snr.items():
                    figures = teachers.setdefault(teacher, {}).setdefault(world, {"world": about})
                    cell = figures.setdefault(f"{snr}dB", {"users": c["users"]})
                    cell[f"minus_generic_2x{h}"] = c["teacher_minus_generic"]
                    cell[f"gain_2x{h}"] = c["gain_mean"]
            # the generic student's own figures, over the users of its most-measured teacher
            for snr in sorted({snr for by_snr in by_t.values() for snr in by_snr}, key=float):
                c = max((by_snr[snr] for by_snr in by_t.values() if snr in by_snr), key=lambda c: c["users"])
                generic = {"users": c["users"], "si_sdr": c["generic"], "mixture": c["mixture"]}
                students.setdefault(h, {}).setdefault(world, {"world": about})[f"{snr}dB"] = generic
    written = []
    for teacher, figures in teachers.items():
        if teacher in CARD_TEACHERS:
            update_card(BUILTIN_DIR / f"{CARD_TEACHERS[teacher]}.pt", {"held_out_worlds": figures})
            written.append(CARD_TEACHERS[teacher])
    for h, figures in sorted(students.items()):
        update_card(BUILTIN_DIR / f"student-2x{h}.pt", {"held_out_worlds": figures})
        written.append(f"student-2x{h}")
    return written


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
        print("heldout: updated the model cards of " + ", ".join(write_cards(table, s["worlds"])))
    print(text)
    print(f"heldout: wrote {out / 'table.md'} in {duration(results['wall_seconds'])}")
    return results


if __name__ == "__main__":
    run_main("heldout", main, resumable=True)
