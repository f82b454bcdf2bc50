"""paper_table's summaries: per (SNR, student, teacher) cell means over users, and the Markdown tables of them (the
paper-shaped table, the gains and gap closure, the premise table that README.md and RESULTS.md repeat, the public
ONNX teachers next to the shipped GRU teachers)."""

from __future__ import annotations

import math

import numpy as np
from paper_table_setup import BUILTIN_TEACHERS, PUBLIC_TEACHERS, TEACHER_LABELS, TEACHERS
from studylib import StudyError, md_table, num


def summarise(rows: list[dict]) -> dict:
    """Means over users of one (SNR, student, teacher) cell, users improved and gap closure."""
    gains = np.array([r["gain_db"] for r in rows])
    closure = np.array([r["gap_closure"] for r in rows], dtype=float)
    gap = float(np.mean([r["si_sdr_teacher"] - r["si_sdr_generic"] for r in rows]))
    finite = np.isfinite(closure).any()
    walls = [r["teacher_wall_seconds"] for r in rows if r.get("teacher_wall_seconds") is not None]
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
        "worst_gain": float(gains.min()),
        "worst_user": rows[int(gains.argmin())]["user"],
        "teacher_below_generic": int(sum(r["si_sdr_teacher"] < r["si_sdr_generic"] for r in rows)),
        # rows computed before these columns existed lack them; a teacher's outputs read from the cache have no wall
        "teacher_macs_per_second": next(
            (r["teacher_macs_per_second"] for r in rows if r.get("teacher_macs_per_second") is not None), None
        ),
        "teacher_wall_seconds_mean": float(np.mean(walls)) if walls else None,
        "teacher_wall_users": len(walls),
        # adapt.guard on: users whose generic student it kept, and the mean gain had it adopted every fine-tuned one
        **(
            {
                "guard_kept_generic": sum(r["guard_decision"] == "kept_generic" for r in rows),
                "gain_unguarded_mean": float(
                    np.mean([r["si_sdr_unguarded"] - r["si_sdr_generic"] for r in rows])
                ),
            }
            if all("guard_decision" in r for r in rows)
            else {}
        ),
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


def only_teachers(table: dict, teachers: list[str]) -> dict:
    """``table`` without the cells of other teachers (and without the SNRs and students left empty)."""
    out: dict = {}
    for snr, by_h in table.items():
        for h, by_t in by_h.items():
            kept = {t: c for t, c in by_t.items() if t in teachers}
            if kept:
                out.setdefault(snr, {})[h] = kept
    return out


def markdown(table: dict, teachers: list[str], sweep: dict | None = None) -> str:
    """The paper-shaped table (SI-SDR means, dB) of ``teachers`` and a second table of gains, users improved and gap
    closure."""
    table = only_teachers(table, teachers)
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
    table = only_teachers(table, list(BUILTIN_TEACHERS))  # public ONNX teachers: md_public_teachers
    cells = [(snr, table.get(f"{snr:g}", {}).get(str(student), {})) for snr in snrs]
    cells = [(snr, by_t) for snr, by_t in cells if by_t]
    if not cells:
        raise StudyError(f"the paper table has no 2×{student} rows at {', '.join(f'{s:g}' for s in snrs)} dB")
    teachers = [t for t in BUILTIN_TEACHERS if any(t in by_t for _, by_t in cells)]
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


def _public_cells(
    rows: list[dict], student: int, where: str, command: str
) -> tuple[dict[tuple[float, str], dict[str, dict]], list[float]]:
    """The 2×``student`` rows by (SNR, teacher) and user, and the SNRs with a public teacher's row (none: an error
    naming ``where`` and the ``command`` to run)."""
    by_cell: dict[tuple[float, str], dict[str, dict]] = {}
    for r in rows:
        if int(r["student"]) == student:
            by_cell.setdefault((float(r["snr_db"]), r["teacher"]), {})[r["user"]] = r
    snrs = sorted({snr for snr, t in by_cell if t in PUBLIC_TEACHERS})
    if not snrs:
        raise StudyError(
            f"{where}: no rows of a public teacher ({', '.join(PUBLIC_TEACHERS)}) with the 2×{student} student; "
            f"run {command} with --teachers " + " ".join(PUBLIC_TEACHERS)
        )
    return by_cell, snrs


def md_public_teachers(
    results: dict, student: int = 32, compare: tuple[str, ...] = ("gru", "gru-log")
) -> str:
    """Per input SNR, each public ONNX teacher (``PUBLIC_TEACHERS``) as the teacher of the 2×``student`` student, next
    to the shipped ``compare`` teachers on the same users: the teacher's lead, the student's gain, users improved,
    the worst user, the teacher's MACs per second of audio and its wall per user.

    ``results`` is paper_table's ``results.json`` (its ``rows``; ``teachers`` gives the MACs of rows computed before
    the rows recorded them). The users of an SNR are those every public teacher there has a row for; a shipped
    teacher without a row for each of them is left out.
    """
    by_cell, snrs = _public_cells(
        results.get("rows", []), student, "the paper table", "simulations/paper_table.py"
    )
    costs = results.get("teachers", {})
    text = (
        f"The 2×{student} student fine-tuned on each teacher's pseudo-targets, per input SNR, on the users every "
        "public teacher was run on (the shipped GRU teachers on the same users, for comparison). SI-SDR (dB); gain = "
        "adapted − generic student; worst user = the smallest gain; teacher < generic = users on whom the teacher "
        "itself scores below the generic student; MACs: forward multiply-accumulates per second of audio (an ONNX "
        "teacher counted from its graph); teacher s/user: wall of the teacher's pseudo-targets for one user's "
        "adaptation audio on one core (– where they were read from the result cache of an earlier run).\n"
    )
    for snr in snrs:
        public = [t for t in PUBLIC_TEACHERS if (snr, t) in by_cell]
        users = sorted(set.intersection(*(set(by_cell[(snr, t)]) for t in public)))
        lines, first = [], None
        for t in [*compare, *public]:
            cell = by_cell.get((snr, t), {})
            if not all(u in cell for u in users):
                continue
            c = summarise([cell[u] for u in users])
            first = first or c
            macs = c["teacher_macs_per_second"]
            if macs is None:
                macs = costs.get(t, {}).get("macs_per_second")
            wall = c["teacher_wall_seconds_mean"]
            lines.append(
                [
                    TEACHER_LABELS[t] + ("" if t in BUILTIN_TEACHERS else " (ONNX preset)"),
                    num(c["teacher"]),
                    num(c["teacher_minus_generic"], signed=True),
                    num(c["adapted"]),
                    num(c["gain_mean"], signed=True),
                    f"{c['improved_pct']:.0f} %",
                    f"{num(c['worst_gain'], signed=True)} ({c['worst_user']})",
                    f"{c['teacher_below_generic']} / {c['users']}",
                    "–" if macs is None else f"{macs / 1e6:.1f} M",
                    "–" if wall is None else f"{wall:.1f}",
                ]
            )
        text += (
            f"\n**{num(snr, 0)} dB input SNR**, {len(users)} users: mixture {num(first['mixture'])}, "
            f"generic 2×{student} {num(first['generic'])}.\n\n"
        )
        text += md_table(
            [
                "teacher",
                "teacher SI-SDR",
                "teacher − generic",
                "adapted",
                "mean gain",
                "users improved",
                "worst user",
                "teacher < generic",
                "MACs/s",
                "teacher s/user",
            ],
            lines,
        )
    return text


def md_public_teachers_worlds(
    worlds: dict[str, list[dict]],
    student: int = 32,
    compare: tuple[str, ...] = ("gru-log",),
    costs: dict[str, dict] | None = None,
) -> str:
    """One compact table of the public ONNX teachers (``PUBLIC_TEACHERS``) on several worlds (``worlds``: name →
    paper_table rows), next to the ``compare`` shipped teachers on the same users: per world and input SNR the
    teacher's lead over the generic 2×``student`` student, the student's gain from it, users improved, the teacher's
    MACs per second of audio (from ``costs[teacher]["macs_per_second"]`` where the rows predate that column) and
    its wall per minute of the user's adaptation audio. A world without a row of a public teacher is an error."""
    costs = costs or {}
    out = []
    for world, rows in worlds.items():
        by_cell, snrs = _public_cells(rows, student, f"world {world}", "its study")
        for snr in snrs:
            public = [t for t in PUBLIC_TEACHERS if (snr, t) in by_cell]
            users = sorted(set.intersection(*(set(by_cell[(snr, t)]) for t in public)))
            for t in [*compare, *public]:
                cell = by_cell.get((snr, t), {})
                if not users or not all(u in cell for u in users):
                    continue
                c = summarise([cell[u] for u in users])
                macs = c["teacher_macs_per_second"] or costs.get(t, {}).get("macs_per_second")
                timed = [cell[u] for u in users if cell[u].get("teacher_wall_seconds") is not None]
                wall = (
                    float(
                        np.mean(
                            [60 * r["teacher_wall_seconds"] / r["adaptation_audio_seconds"] for r in timed]
                        )
                    )
                    if timed
                    else None
                )
                out.append(
                    [
                        world,
                        f"{num(snr, 0)} dB",
                        TEACHER_LABELS[t],
                        num(c["generic"]),
                        num(c["teacher_minus_generic"], signed=True),
                        num(c["gain_mean"], signed=True),
                        f"{c['improved_pct']:.0f} %",
                        f"{c['teacher_below_generic']} / {c['users']}",
                        "–" if macs is None else f"{macs / 1e6:.0f} M",
                        "–" if wall is None else f"{wall:.1f}",
                    ]
                )
    text = (
        f"The 2×{student} student fine-tuned on each teacher's pseudo-targets (100 steps) on the users every public "
        "teacher was run on; SI-SDR dB; gain = adapted − generic; MACs per second of audio (an ONNX teacher counted "
        "from its graph); teacher s/min: wall of the pseudo-targets per minute of a user's adaptation audio on one "
        "core, measured beside another job (– where read from the result cache of an earlier run).\n\n"
    )
    return text + md_table(
        [
            "world",
            "input SNR",
            "teacher",
            f"generic 2×{student}",
            "teacher − generic",
            "mean gain",
            "users improved",
            "teacher < generic",
            "MACs/s",
            "teacher s/min",
        ],
        out,
    )
