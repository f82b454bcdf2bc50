"""paper_table: the paper's table for zero-shot test-time personalization (Kim & Kim 2021, Table 1 shape).

What it answers: per input SNR, how much does each generic GRU student (2×32, 2×64, 2×128, 2×256) gain on held-out
users when it is fine-tuned on the unlabeled noisy audio of each user with the pseudo-targets of each teacher (GRU,
ConvTasNet), and how close does it get to the teacher? No federation: the bare per-user loop.

    python simulations/paper_table.py                  # full: 40 users × SNR {−5, 0, 5, 10} × 4 students × 2 teachers
    python simulations/paper_table.py --quick          # smoke test: 4 users, 0/5 dB, 2×32 and 2×256, 10 steps
    python simulations/paper_table.py --students 32 256                     # only the students shipped so far
    python simulations/paper_table.py --snr 5 --sweep 25 50 100 200 400 --sweep-users 6 --sweep-only  # gain vs steps

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
``results.json`` (every row, summaries), ``rows.jsonl`` and ``table.md`` to --out (default
``simulations/results/paper_table``; ``…/paper_table_quick`` with --quick). ``--write-cards`` records the held-out
figures in the shipped model cards. Replaces the former ``simulations/adapt_table.py``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import multiprocessing as mp
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
    prepare_out,
    run_main,
    write_json,
)

STUDENT_SIZES = (32, 64, 128, 256)
TEACHERS = {
    "gru": ["teacher.arch=gru", "teacher.checkpoint=builtin:teacher-gru"],
    "gru-log": [
        "teacher.arch=gru",
        "teacher.hidden=256",
        "teacher.magnitude=log1p",
        "teacher.checkpoint=builtin:teacher-gru-log",
    ],
    "convtasnet": ["teacher.arch=convtasnet", "teacher.checkpoint=builtin:teacher-convtasnet"],
}
TEACHER_LABELS = {"gru": "GRU T", "gru-log": "GRU-log T", "convtasnet": "CTN T"}


# ------------------------------------------------------------------------------------------------ settings
def student_overrides(hidden: int) -> list[str]:
    return ["student.layers=2", f"student.hidden={hidden}", f"student.checkpoint=builtin:student-2x{hidden}"]


def world_overrides(snr_db: float, world_users: int) -> list[str]:
    """The default world with every mixture at exactly ``snr_db`` (same seed, voices and places)."""
    return [
        f"world.num_users={world_users}",
        f"world.snr_db=[{snr_db:g}, {snr_db:g}]",
        "world.snr_spread_db=0",
    ]


def check_students(sizes: list[int], builtin_dir: Path | None = None) -> list[int]:
    """The requested 2×H students, each a known size with a shipped checkpoint; else a one-line StudyError."""
    from fedpse.models.zoo import BUILTIN_DIR

    builtin_dir = builtin_dir or BUILTIN_DIR
    if not sizes:
        raise StudyError("--students: give at least one of " + ", ".join(map(str, STUDENT_SIZES)))
    unknown = [h for h in sizes if h not in STUDENT_SIZES]
    if unknown:
        raise StudyError(
            f"--students: unknown student size {unknown[0]} (2×{unknown[0]}); expected some of "
            + ", ".join(map(str, STUDENT_SIZES))
        )
    for h in sizes:
        path = builtin_dir / f"student-2x{h}.pt"
        if not path.is_file():
            have = sorted(int(p.stem.split("x")[-1]) for p in builtin_dir.glob("student-2x*.pt"))
            raise StudyError(
                f"student 2×{h}: checkpoint builtin:student-2x{h} is missing ({path} not found); copy it there or "
                f"run with --students {' '.join(map(str, have))}"
            )
    return list(dict.fromkeys(sizes))


def check_teachers(names: list[str], builtin_dir: Path | None = None) -> list[str]:
    """The requested teachers, each a known preset whose shipped checkpoint exists; else a one-line StudyError."""
    from fedpse.models.zoo import BUILTIN_DIR

    builtin_dir = builtin_dir or BUILTIN_DIR
    unknown = [t for t in names if t not in TEACHERS]
    if unknown or not names:
        raise StudyError(
            f"--teachers: unknown teacher {unknown[0] if unknown else '(none)'!r}; expected some of {', '.join(TEACHERS)}"
        )
    for t in names:
        path = _teacher_file(t, builtin_dir)
        if not path.is_file():
            have = [n for n in TEACHERS if n != t and _teacher_file(n, builtin_dir).is_file()]
            raise StudyError(
                f"teacher {t}: checkpoint builtin:{path.stem} is missing ({path} not found); "
                f"run with --teachers {' '.join(have)}"
            )
    return list(dict.fromkeys(names))


def _teacher_file(name: str, builtin_dir: Path) -> Path:
    ref = next(o.split("=", 1)[1] for o in TEACHERS[name] if o.startswith("teacher.checkpoint="))
    return builtin_dir / f"{ref.removeprefix('builtin:')}.pt"


def chunk_count(adapt_minutes: float | None, chunk_seconds: float, available: int) -> int:
    """How many of a user's adaptation chunks ``adapt_minutes`` of audio is (all of them for ``None``)."""
    if adapt_minutes is None:
        return available
    n = round(adapt_minutes * 60 / chunk_seconds)
    if n < 1 or n > available:
        raise StudyError(
            f"--adapt-minutes {adapt_minutes:g}: expected 1 to {available} chunks of {chunk_seconds:g} s "
            f"(at most {available * chunk_seconds / 60:g} min)"
        )
    return n


# ------------------------------------------------------------------------------------------------ workers
_STATE: dict = {}


def _init(base: list[str], students: list[int], teachers: list[str], world_users: int) -> None:
    import torch

    from fedpse.config import load_config
    from fedpse.distill.cache import ResultCache, model_key
    from fedpse.models.zoo import load_student, load_teacher

    torch.set_num_threads(1)
    cfg = load_config(overrides=base)
    _STATE.update(
        cfg=cfg, base=base, world_users=world_users, worlds={}, cache=ResultCache(cfg.federation.cache_dir)
    )
    _STATE["students"] = {
        h: load_student(load_config(overrides=base + student_overrides(h)))[0] for h in students
    }
    _STATE["teachers"] = {t: load_teacher(load_config(overrides=base + TEACHERS[t]))[0] for t in teachers}
    _STATE["keys"] = {
        **{("student", h): model_key(m) for h, m in _STATE["students"].items()},
        **{("teacher", t): model_key(m) for t, m in _STATE["teachers"].items()},
    }


def _world(snr_db: float):
    from fedpse.config import load_config
    from fedpse.world.cache import World

    if snr_db not in _STATE["worlds"]:
        cfg = load_config(overrides=_STATE["base"] + world_overrides(snr_db, _STATE["world_users"]))
        _STATE["worlds"][snr_db] = World.open(cfg)
    return _STATE["worlds"][snr_db]


def _cached_score(world, uid: str, role: str, name, test_set) -> float:
    """SI-SDR of a generic student or a teacher on ``uid``'s test set, via the result cache."""
    from fedpse.distill.adapt import score

    model = _STATE["students" if role == "student" else "teachers"][name]
    key = f"paper_table:{world.manifest['key']}:{uid}:{_STATE['keys'][(role, name)]}"
    return _STATE["cache"].scores(key, lambda: score({"m": model}, test_set))["m"]


def _user_job(job: tuple[float, str, list[tuple[int, str]], int | None]) -> list[dict]:
    """Every (student, teacher) pair of ``todo`` for one user at one SNR: one row each."""
    from fedpse.distill.adapt import adapt, gap_closure, score
    from fedpse.distill.cache import model_key

    snr_db, uid, todo, chunks = job
    cfg, cache, world = _STATE["cfg"], _STATE["cache"], _world(snr_db)
    noisy = world.adaptation_chunks(uid, "noisy")[:chunks]
    test_set = world.test_set(uid)
    noisy_db = score({}, test_set)["noisy"]
    seed = zlib.crc32(
        f"{cfg.seed}:{uid}".encode()
    )  # as adapt_table / personalize_user callers: one seed per user
    rows = []
    for teacher in dict.fromkeys(t for _, t in todo):
        model = _STATE["teachers"][teacher]
        targets = cache.targets(model, model_key(model), noisy)
        teacher_db = _cached_score(world, uid, "teacher", teacher, test_set)
        for student, _ in [p for p in todo if p[1] == teacher]:
            generic_db = _cached_score(world, uid, "student", student, test_set)
            personalized = copy.deepcopy(_STATE["students"][student])
            result = adapt(personalized, noisy, targets, cfg.adapt, seed=seed)
            personalized_db = score({"p": personalized}, test_set)["p"]
            rows.append(
                {
                    "snr_db": snr_db,
                    "user": uid,
                    "student": student,
                    "teacher": teacher,
                    "si_sdr_noisy": noisy_db,
                    "si_sdr_generic": generic_db,
                    "si_sdr_personalized": personalized_db,
                    "si_sdr_teacher": teacher_db,
                    "gain_db": personalized_db - generic_db,
                    "gap_closure": gap_closure(generic_db, personalized_db, teacher_db),
                    "steps": result.steps,
                    "stopped_early": result.stopped_early,
                    "train_audio_seconds": result.train_audio_seconds,
                    "device_macs": result.device_macs,
                    "adapt_wall_seconds": result.wall_seconds,
                    "adaptation_audio_seconds": sum(len(x) for x in noisy) / 16000,
                }
            )
    return rows


def _sweep_job(job: tuple[float, str, int, str, list[int], int | None]) -> dict:
    """Adapt without early stopping; score the test set at each step count in ``points``."""
    from fedpse.distill.adapt import adapt, score
    from fedpse.distill.cache import model_key

    snr_db, uid, student, teacher, points, chunks = job
    cfg, world = _STATE["cfg"], _world(snr_db)
    noisy = world.adaptation_chunks(uid, "noisy")[:chunks]
    model = _STATE["teachers"][teacher]
    targets = _STATE["cache"].targets(model, model_key(model), noisy)
    test_set = world.test_set(uid)
    base = _cached_score(world, uid, "student", student, test_set)
    curve: dict[int, float] = {}

    def on_step(step, m):
        if step in points:
            curve[step] = score({"p": m}, test_set)["p"] - base
            m.train()

    acfg = dataclasses.replace(cfg.adapt, steps=max(points), patience=0)
    adapt(
        copy.deepcopy(_STATE["students"][student]),
        noisy,
        targets,
        acfg,
        seed=zlib.crc32(uid.encode()),
        on_step=on_step,
    )
    return {"user": uid, "generic": base, "gain_by_steps": curve}


def _pool_imap(fn, jobs: list, initargs: tuple, workers: int):
    if workers <= 1:
        _init(*initargs)
        yield from map(fn, jobs)
        return
    with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=initargs) as pool:
        yield from pool.imap_unordered(fn, jobs, chunksize=1)


# ------------------------------------------------------------------------------------------------ summaries
def summarise(rows: list[dict]) -> dict:
    """Means over users of one (SNR, student, teacher) cell, users improved and gap closure."""
    gains = np.array([r["gain_db"] for r in rows])
    closure = np.array([r["gap_closure"] for r in rows], dtype=float)
    gap = float(np.mean([r["si_sdr_teacher"] - r["si_sdr_generic"] for r in rows]))
    finite = np.isfinite(closure).any()
    return {
        "users": len(rows),
        "mixture": float(np.mean([r["si_sdr_noisy"] for r in rows])),
        "generic": float(np.mean([r["si_sdr_generic"] for r in rows])),
        "adapted": float(np.mean([r["si_sdr_personalized"] for r in rows])),
        "teacher": float(np.mean([r["si_sdr_teacher"] for r in rows])),
        "gain_mean": float(gains.mean()),
        "improved_pct": float(100 * np.mean(gains > 0)),
        "gap_closure_median": float(np.nanmedian(closure)) if finite else math.nan,
        # Per-user closure explodes where the teacher barely beats the generic student; the ratio of means does not.
        "gap_closure_of_means": float(gains.mean()) / gap if gap > 1e-9 else math.nan,
        "teacher_minus_generic": gap,
        "steps_mean": float(np.mean([r["steps"] for r in rows])),
        "adapt_wall_seconds_mean": float(np.mean([r["adapt_wall_seconds"] for r in rows])),
    }


def tabulate(rows: list[dict]) -> dict:
    """``{snr: {student: {teacher: summary}}}`` over the rows, SNRs ascending (keys as strings, e.g. ``"-5"``)."""
    cells: dict = {}
    for r in rows:
        cells.setdefault(float(r["snr_db"]), {}).setdefault(int(r["student"]), {}).setdefault(
            r["teacher"], []
        ).append(r)
    return {
        f"{snr:g}": {
            str(h): {t: summarise(by_t[t]) for t in TEACHERS if t in by_t} for h, by_t in sorted(by_h.items())
        }
        for snr, by_h in sorted(cells.items())
    }


def markdown(table: dict, teachers: list[str], sweep: dict | None = None) -> str:
    """The paper-shaped table (SI-SDR means, dB) and a second table of gains, users improved and gap closure."""
    text = md_paper(table, teachers) if table else ""
    if sweep:
        text += (
            f"\nGain vs fine-tuning steps (2×{sweep['student']} student, {TEACHER_LABELS[sweep['teacher']]}, "
            f"{num(sweep['snr_db'], 0)} dB, {sweep['users']} users, no early stop):\n\n"
        )
        steps = list(sweep["mean_gain"])
        gains = [num(v, signed=True) for v in sweep["mean_gain"].values()]
        text += md_table(["steps", *steps], [["mean gain (dB)", *gains]])
    return text


def md_paper(table: dict, teachers: list[str]) -> str:
    students = sorted({int(h) for by_h in table.values() for h in by_h})
    headers = ["input SNR", "mixture"]
    for h in students:
        headers += [f"2×{h} pretrained"] + [f"2×{h} FT by {TEACHER_LABELS[t]}" for t in teachers]
    headers += [TEACHER_LABELS[t] for t in teachers]
    rows = []
    for snr, by_h in table.items():
        any_cell = next(iter(next(iter(by_h.values())).values()))
        row = [f"{num(float(snr), 0)} dB", num(any_cell["mixture"])]
        teacher_db = {}
        for h in students:
            by_t = by_h.get(str(h), {})
            first = next(iter(by_t.values()), None)
            row.append(num(first["generic"]) if first else "–")
            for t in teachers:
                row.append(num(by_t[t]["adapted"]) if t in by_t else "–")
                if t in by_t:
                    teacher_db[t] = by_t[t]["teacher"]
        row += [num(teacher_db.get(t)) for t in teachers]
        rows.append(row)
    text = "SI-SDR (dB), mean over users; FT = fine-tuned on the user's unlabeled audio with the teacher's pseudo-targets.\n\n"
    text += md_table(headers, rows)
    detail = []
    for snr, by_h in table.items():
        for h, by_t in by_h.items():
            for t, s in by_t.items():
                detail.append(
                    [
                        f"{num(float(snr), 0)} dB",
                        f"2×{h}",
                        TEACHER_LABELS[t],
                        num(s["gain_mean"], signed=True),
                        f"{s['improved_pct']:.0f} %",
                        f"{num(s['gap_closure_of_means'])} / {num(s['gap_closure_median'])}",
                        num(s["teacher_minus_generic"], signed=True),
                        s["users"],
                        f"{s['steps_mean']:.0f}",
                        f"{s['adapt_wall_seconds_mean']:.1f}",
                    ]
                )
    text += "\n" + md_table(
        [
            "input SNR",
            "student",
            "teacher",
            "mean gain (dB)",
            "users improved",
            "gap closure: of means / per-user median",
            "teacher − pretrained (dB)",
            "users",
            "steps",
            "adapt s/user",
        ],
        detail,
    )
    return text


PREMISE_DB = 3.0  # issue 3: each teacher must lead the generic 2×32 student by this much on held-out users


def md_premise(table: dict, student: int = 32, snrs: tuple[float, ...] = (0.0, 5.0)) -> str:
    """One student at a few SNRs, every teacher: SI-SDR means, then gains, closure and the teachers' lead.

    The README's "Zero-shot adaptation on held-out users" tables; a lead of at least ``PREMISE_DB`` is in bold.
    """
    cells = [(snr, table.get(f"{snr:g}", {}).get(str(student), {})) for snr in snrs]
    cells = [(snr, by_t) for snr, by_t in cells if by_t]
    if not cells:
        raise StudyError(f"the paper table has no 2×{student} rows at {', '.join(f'{s:g}' for s in snrs)} dB")
    teachers = [t for t in TEACHERS if any(t in by_t for _, by_t in cells)]
    means = []
    for snr, by_t in cells:
        first = next(iter(by_t.values()))
        means.append(
            [f"{num(snr, 0)} dB", num(first["mixture"]), num(first["generic"])]
            + [num(by_t[t]["adapted"]) if t in by_t else "–" for t in teachers]
            + [num(by_t[t]["teacher"]) if t in by_t else "–" for t in teachers]
        )
    text = f"SI-SDR (dB), mean over users; generic = the shipped 2×{student}, adapted = after its zero-shot fine-tuning.\n\n"
    text += md_table(
        ["input SNR", "mixture", f"generic 2×{student}"]
        + [f"adapted ({TEACHER_LABELS[t]})" for t in teachers]
        + [TEACHER_LABELS[t] for t in teachers],
        means,
    )
    detail = []
    for snr, by_t in cells:
        for t in teachers:
            if t not in by_t:
                continue
            c = by_t[t]
            lead = num(c["teacher_minus_generic"], signed=True) + " dB"
            detail.append(
                [
                    f"{num(snr, 0)} dB",
                    TEACHER_LABELS[t],
                    num(c["gain_mean"], signed=True) + " dB",
                    f"{c['improved_pct']:.0f} %",
                    f"{num(c['gap_closure_of_means'])} / {num(c['gap_closure_median'])}",
                    f"**{lead}**" if c["teacher_minus_generic"] >= PREMISE_DB else lead,
                    c["users"],
                    f"{c['adapt_wall_seconds_mean']:.1f}",
                ]
            )
    text += "\n" + md_table(
        [
            "input SNR",
            "teacher",
            "mean gain",
            "users improved",
            "gap closure: of means / per-user median",
            f"teacher − generic (bold: ≥ {PREMISE_DB:g} dB)",
            "users",
            "adapt s/user",
        ],
        detail,
    )
    return text


# ------------------------------------------------------------------------------------------------ rows on disk
def setting_key(cfg, world_key: str, student_key: str, teacher_key: str, chunks: int | None) -> str:
    """What a row depends on besides (SNR, user, student, teacher): adaptation settings, audio, model weights."""
    from fedpse.config import config_to_dict

    blob = json.dumps(
        [config_to_dict(cfg.adapt), cfg.seed, world_key, student_key, teacher_key, chunks], sort_keys=True
    )
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
        "overrides": [*p.get("overrides", []), *args.overrides],
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
    from fedpse.federation.runner import open_world

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

    s = resolve(parse_args(argv))
    out = prepare_out(s["out"])
    base = s["overrides"]
    cfg = load_config(overrides=base)  # a bad --set fails here, before any work
    world_users = max(s["users"], cfg.world.num_users)
    students = sorted(set(s["students"]) | ({s["sweep_student"]} if s["sweep"] else set()))
    teachers = list(dict.fromkeys(s["teachers"] + ([s["sweep_teacher"]] if s["sweep"] else [])))
    keys = {
        **{
            ("student", h): model_key(load_student(load_config(overrides=base + student_overrides(h)))[0])
            for h in students
        },
        **{
            ("teacher", t): model_key(load_teacher(load_config(overrides=base + TEACHERS[t]))[0])
            for t in teachers
        },
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
    results: dict = {"settings": s, "world_users": world_users, "chunks_per_user": chunks or chunks_available}

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
        for i, new in enumerate(_pool_imap(_user_job, jobs, initargs, s["workers"]), 1):
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
        curves = list(_pool_imap(_sweep_job, jobs, initargs, s["workers"]))
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
    text = markdown(results.get("table", {}), s["teachers"], results.get("sweep"))
    (out / "table.md").write_text(text)
    if s["write_cards"] and results.get("table"):
        print("paper_table: updated the model cards of " + ", ".join(write_cards(results["table"])))
    print(text)
    print(
        f"paper_table: wrote {out / 'table.md'} and {out / 'results.json'} in {duration(results['wall_seconds'])}"
    )
    return results


if __name__ == "__main__":
    run_main("paper_table", main)
