"""personalization: does the guard keep every user at or above its generic student, and does teacher refresh let the
2×32 student reach (or pass) its teacher? Plain KD against KD + guard and each refresh variant, with a good teacher
and a deliberately bad one (``identity``: returns its input), on the default world's held-out users.

    python simulations/personalization.py            # 40 users × 0/5 dB × variants × teachers (preset: configs/personalization.yaml)
    python simulations/personalization.py --quick    # smoke test: 3 users, 5 dB, 10 steps
    python simulations/personalization.py --variants plain guard --teachers identity   # a part of it

Each (variant, teacher) is one ``paper_table.py`` run (bare per-user loop, 2×32 student, fixed-SNR worlds) with the
variant's ``--set`` overrides, in ``--out/<variant>/`` (its ``rows.jsonl`` makes every run resumable: a finished
(SNR, user) is never recomputed). The ``plain`` variant's rows for the shipped teachers are the main paper table's
(``results/paper_table/rows.jsonl``): rows with the same setting key are the same computation, so they are copied
in rather than recomputed. Writes ``results.json`` and ``table.md`` to --out (default
``simulations/results/personalization``; ``…_quick`` with --quick): per (variant, teacher, SNR) the mean gain over
the generic student, users improved, the worst user, gap closure (of means), users above their teacher, users the
guard kept generic, and device compute per user relative to plain KD.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
from paper_table_setup import TEACHER_LABELS, paper_table_argv, seed_plain_rows
from studylib import (
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="personalization", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="the smoke-test preset")
    ap.add_argument("--config", help="preset file (default: simulations/configs/personalization.yaml)")
    ap.add_argument("--users", type=int)
    ap.add_argument("--snr", type=float, nargs="+")
    ap.add_argument("--teachers", nargs="+", help="only these of each variant's teachers")
    ap.add_argument("--variants", nargs="+", help="names of the preset's variants")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--no-compute", action="store_true", help="tabulate the rows already computed")
    ap.add_argument("--out")
    return ap.parse_args(argv)


def resolve(args: argparse.Namespace) -> dict:
    p = load_preset("personalization", args.quick, args.config)
    variants = dict(p["variants"])
    names = args.variants or list(variants)
    check_names(names, variants, "--variants", "variant")
    s = {
        "users": args.users or p["users"],
        "users_given": args.users is not None,
        "snr_db": [float(x) for x in (args.snr or p["snr_db"])],
        "student": int(p.get("student", 32)),
        "only_teachers": list(args.teachers or []),
        "variants": {v: variant_spec(v, variants[v], p["teachers"]) for v in names},
        "overrides": list(p.get("overrides") or []),
        "adapt_minutes": p.get("adapt_minutes"),
        "workers": args.workers or p.get("workers", 2),
        "no_compute": args.no_compute,
        "out": args.out or str(RESULTS_DIR / ("personalization_quick" if args.quick else "personalization")),
    }
    return s


def variant_spec(name: str, spec, teachers: list[str]) -> dict:
    """A preset variant: a list of ``--set`` overrides, or ``{set: [...], teachers: [...], users: N}``."""
    if spec is None or isinstance(spec, list):
        return {"set": list(spec or []), "teachers": list(teachers), "users": None}
    if not isinstance(spec, dict) or set(spec) - {"set", "teachers", "users"}:
        raise StudyError(
            f"variant {name!r}: expected a list of overrides or a mapping with set / teachers / users"
        )
    return {
        "set": list(spec.get("set") or []),
        "teachers": list(spec.get("teachers") or teachers),
        "users": spec.get("users"),
    }


def run_variant(s: dict, variant: str, spec: dict, out: Path) -> list[dict]:
    """The variant's rows: one paper_table run per distinct user count among its teachers."""
    import paper_table

    vdir = out / variant
    vdir.mkdir(parents=True, exist_ok=True)
    if variant == "plain":
        seed_plain_rows(vdir, s["student"], s["snr_db"], spec["teachers"])
    teachers = [t for t in spec["teachers"] if not s["only_teachers"] or t in s["only_teachers"]]
    by_users: dict[int, list[str]] = {}
    for t in teachers:
        by_users.setdefault(users_of(s, spec, t), []).append(t)
    print(f"personalization: variant {variant} ({' '.join(spec['set']) or 'plain KD'})", flush=True)
    rows: list[dict] = []
    for users, group in by_users.items():
        argv = paper_table_argv(s, users, group, vdir, spec["set"])
        rows += paper_table.main(argv).get("rows", [])
    return rows


def users_of(s: dict, spec: dict, teacher: str) -> int:
    """Users of one (variant, teacher): --users, else the variant's ``users`` (a number or {teacher: number})."""
    users = spec["users"]
    if s["users_given"] or users is None:
        return s["users"]
    if isinstance(users, dict):
        return int(users.get(teacher, s["users"]))
    return int(users)


def summarise(rows: list[dict], plain_macs: float | None) -> dict:
    gains = np.array([r["gain_db"] for r in rows])
    gap = float(np.mean([r["si_sdr_teacher"] - r["si_sdr_generic"] for r in rows]))
    macs = float(np.mean([r["device_macs"] for r in rows]))
    decisions = [r.get("guard_decision") for r in rows]
    return {
        "users": len(rows),
        "gain_mean": float(gains.mean()),
        "improved_pct": float(100 * np.mean(gains > 0)),
        "worst_gain": float(gains.min()),
        "worst_user": rows[int(gains.argmin())]["user"],
        "below_generic_by_0_1": int(np.sum(gains < -0.1)),
        "gap_closure_of_means": float(gains.mean()) / gap if gap > 1e-9 else math.nan,
        "teacher_minus_generic": gap,
        "above_teacher": int(sum(r["si_sdr_personalized"] > r["si_sdr_teacher"] for r in rows)),
        "kept_generic": int(sum(d == "kept_generic" for d in decisions)),
        "guarded": any(d not in (None, "off") for d in decisions),
        # with scoring.dnsmos=true: what a non-intrusive score says of the same gain (None without the columns)
        "dnsmos_ovr_gain": float(
            np.mean([r["dnsmos_ovr_personalized"] - r["dnsmos_ovr_generic"] for r in rows])
        )
        if all("dnsmos_ovr_personalized" in r for r in rows)
        else None,
        "device_macs_mean": macs,
        "device_macs_vs_plain": macs / plain_macs if plain_macs else math.nan,
    }


def tabulate(by_variant: dict[str, list[dict]]) -> dict:
    """``{variant: {teacher: {snr: summary}}}``; compute is relative to plain KD of the same teacher, SNR and users."""
    cells: dict = {}
    for variant, rows in by_variant.items():
        for r in rows:
            cells.setdefault(variant, {}).setdefault(r["teacher"], {}).setdefault(
                f"{r['snr_db']:g}", []
            ).append(r)
    plain = cells.get("plain", {})
    table: dict = {}
    for variant, by_t in cells.items():
        for teacher, by_snr in by_t.items():
            for snr, rows in sorted(by_snr.items(), key=lambda kv: float(kv[0])):
                users = {r["user"] for r in rows}  # plain KD of the same users
                base = [r for r in plain.get(teacher, {}).get(snr, []) if r["user"] in users]
                base_macs = (
                    float(np.mean([r["device_macs"] for r in base])) if len(base) == len(users) else None
                )
                table.setdefault(variant, {}).setdefault(teacher, {})[snr] = summarise(rows, base_macs)
    # plain KD on the same users as a variant measured on fewer of them: the fair comparison for that variant
    for teacher, by_snr in plain.items():
        for snr, rows in by_snr.items():
            subsets = {
                frozenset(r["user"] for r in by_t[teacher][snr])
                for v, by_t in cells.items()
                if v != "plain" and snr in by_t.get(teacher, {})
            }
            for users in sorted(subsets, key=len):
                same = [r for r in rows if r["user"] in users]
                if len(same) == len(users) < len(rows):
                    name = f"plain ({len(users)} users)"
                    table.setdefault(name, {}).setdefault(teacher, {})[snr] = summarise(same, None)
    return table


def markdown(table: dict, variants: dict[str, dict]) -> str:
    cells = [c for by_t in table.values() for by_snr in by_t.values() for c in by_snr.values()]
    dnsmos = any(c.get("dnsmos_ovr_gain") is not None for c in cells)
    rows = []
    for variant, by_t in table.items():
        for teacher, by_snr in by_t.items():
            for snr, c in by_snr.items():
                rows.append(
                    [
                        f"{num(float(snr), 0)} dB",
                        TEACHER_LABELS.get(teacher, teacher),
                        variant,
                        num(c["gain_mean"], signed=True),
                        f"{c['improved_pct']:.0f} %",
                        num(c["worst_gain"], signed=True),
                        c["below_generic_by_0_1"],
                        num(c["gap_closure_of_means"]),
                        c["above_teacher"],
                        c["kept_generic"] if c["guarded"] else "–",
                        num(c["device_macs_vs_plain"]) + "×"
                        if c["device_macs_vs_plain"] == c["device_macs_vs_plain"]
                        else "–",
                        c["users"],
                    ]
                    + ([num(c.get("dnsmos_ovr_gain"), signed=True)] if dnsmos else [])
                )
    rows.sort(
        key=lambda r: (float(r[0].split()[0].replace("−", "-")), r[1] != TEACHER_LABELS.get("gru"), r[1])
    )
    headers = [
        "input SNR",
        "teacher",
        "variant",
        "mean gain (dB)",
        "users improved",
        "worst user (dB)",
        "users < −0.1 dB",
        "gap closure",
        "users above teacher",
        "kept generic",
        "device compute vs plain",
        "users",
    ] + (["DNSMOS OVR gain"] if dnsmos else [])
    legend = "; ".join(
        f"`{v}`: " + (", ".join(f"`{o}`" for o in spec["set"]) or "plain KD") for v, spec in variants.items()
    )
    return (
        "2×32 student; gain = fine-tuned − generic student SI-SDR on the user's held-out test mixtures; gap closure "
        "= mean gain / mean (teacher − generic); `identity` is a deliberately bad teacher that returns its input.\n"
        f"Variants: {legend}.\n\n" + md_table(headers, rows)
    )


def main(argv: list[str] | None = None) -> dict:
    s = resolve(parse_args(argv))
    out = prepare_out(s["out"])
    t0 = time.perf_counter()
    by_variant = {v: run_variant(s, v, o, out) for v, o in s["variants"].items()}
    table = tabulate(by_variant)
    results = {"settings": s, "table": table, "wall_seconds": time.perf_counter() - t0}
    write_json(out / "results.json", results)
    text = markdown(table, s["variants"])
    (out / "table.md").write_text(text)
    print(text)
    print(f"personalization: wrote {out / 'table.md'} in {duration(results['wall_seconds'])}")
    return results


if __name__ == "__main__":
    run_main("personalization", main, resumable=True)
