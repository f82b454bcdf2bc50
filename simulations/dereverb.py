"""dereverb: zero-shot test-time personalization of users in reverberant rooms (Kim et al., JASA 2024: joint
denoising and dereverberation). Per input SNR and room reverberation time (RT60 bins 0.2–0.4 / 0.4–0.6 /
0.6–0.8 s): what the mixture, the generic 2×32 student, the student fine-tuned on its teacher's pseudo-targets, the
teacher itself and the oracle (the student fine-tuned on the clean references) score, for the joint denoising +
dereverberation models (``student-2x32-dereverb`` + ``teacher-gru-log-dereverb``) and for the denoising-only models
(``student-2x32`` + ``teacher-gru-log``) on the same users: the baseline a researcher would otherwise use.

    python simulations/dereverb.py                  # preset: configs/dereverb.yaml (24 users × 0/5 dB × both model sets)
    python simulations/dereverb.py --quick          # smoke test: 2 users of a tiny world in rooms, 5 dB, 10 steps
    python simulations/dereverb.py --models denoise # one model set
    python simulations/dereverb.py --no-compute     # tabulate the rows already in --out/rows.jsonl

Users are in pyroomacoustics shoeboxes (``world.room.enabled=true``, RT60 drawn uniformly in [0.2, 0.8] s, talker
0.5–4 m from the device); their speech is reverberated, their noise is not (a user's noise place is recorded at the
device already, as in the pretraining of the dereverberation models). The reference is the early-reverberation
speech (``world.room.target=early``: the direct path and the first 50 ms of reflections), the target the
dereverberation models were trained for: late reverberation left in an output counts as distortion. Per input SNR a
world with every mixture at exactly that SNR (as ``paper_table.py``; the same users in the same rooms at every SNR).

Metrics: SI-SDR, and — since SRMR, the reverberation measure of the dereverberation literature, has no package that
runs offline here — STOI and wide-band PESQ against that early-reverberation reference. Both are intrusive: measured
against the early reference, they fall with the late reverberation an output keeps as well as with its residual
noise, so they rank dereverberation and denoising alike. Per (model set, SNR, RT60 bin): n users, mean gain over the
generic student, users improved, the teacher's lead over the generic student, gap closure (mean gain / mean lead)
and the oracle's gain.

Per (SNR, user) one job (bare per-user loop, no federation, as paper_table): each model set's teacher makes
pseudo-targets of the user's adaptation chunks (result cache ``federation.cache_dir``), a copy of the generic
student is fine-tuned on them (``distill.adapt.adapt``, one seed per user) and another on the clean references (the
oracle), and every model is scored on the user's held-out test mixtures. Rows are appended to ``rows.jsonl`` in --out
as jobs finish, keyed by everything they depend on (adaptation settings, world, model weights), so a stopped run
continues where it was and ``--fresh`` recomputes. Writes ``results.json`` and ``table.md`` (default
``simulations/results/dereverb``; ``…/dereverb_quick`` with --quick).

Durations (docs/dereverberation.md): --quick 41 s of jobs on the 2-core machine with other jobs keeping its load
at about 7; one (SNR, user) job of the full preset (both model sets: 4 fine-tunings of 100 steps, 9 models scored)
139 and 153 s at a load of 7.5–8.4, so the full preset (48 jobs on 2 workers, 2 worlds to build) is expected to take
about half an hour on the idle machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time

import numpy as np
from paper_table import read_rows, setting_key
from paper_table_jobs import pool_imap
from paper_table_setup import chunk_count, world_overrides
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

MODELS = ("noisy", "generic", "personalized", "teacher", "oracle")  # scored on every user's test set
METRICS = ("si_sdr", "pesq", "stoi")
LABELS = {"dereverb": "DR", "denoise": "DN"}  # short names of the preset's model sets in the tables


# ------------------------------------------------------------------------------------------------ settings
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="dereverb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="the smoke-test preset")
    ap.add_argument("--config", help="preset file (default: simulations/configs/dereverb.yaml)")
    ap.add_argument("--users", type=int, help="each fixed-SNR world's first N users")
    ap.add_argument("--snr", type=float, nargs="+", help="input SNRs (dB)")
    ap.add_argument("--models", nargs="+", help="names of the preset's model sets (default: all)")
    ap.add_argument(
        "--adapt-minutes", type=float, help="use the first M minutes of each user's adaptation audio"
    )
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override (repeatable)"
    )
    ap.add_argument("--workers", type=int)
    ap.add_argument("--fresh", action="store_true", help="recompute rows already in --out/rows.jsonl")
    ap.add_argument("--no-compute", action="store_true", help="tabulate the rows already computed")
    ap.add_argument("--out", help="output folder (default simulations/results/dereverb[_quick])")
    return ap.parse_args(argv)


def resolve(args: argparse.Namespace) -> dict:
    """Preset values overridden by the command line, checked."""
    p = load_preset("dereverb", args.quick, args.config)
    s = {
        "models": model_sets(p["models"], args.models),
        "users": args.users or p["users"],
        "snr_db": [float(x) for x in (args.snr or p["snr_db"])],
        "adapt_minutes": args.adapt_minutes if args.adapt_minutes is not None else p.get("adapt_minutes"),
        "overrides": [*(p.get("overrides") or []), *args.overrides],
        "workers": args.workers or p.get("workers", 2),
        "fresh": args.fresh,
        "no_compute": args.no_compute,
        "out": args.out or str(RESULTS_DIR / ("dereverb_quick" if args.quick else "dereverb")),
    }
    if not isinstance(s["users"], int) or s["users"] < 1:
        raise StudyError(f"--users: expected >= 1, got {s['users']}")
    if s["no_compute"] and s["fresh"]:
        raise StudyError("--no-compute only tabulates rows already computed: drop --fresh")
    return s


def model_sets(preset: dict, names: list[str] | None) -> dict[str, dict]:
    """The preset's model sets named by ``--models`` (all by default) as ``{name: {about, set}}``; an unknown name
    or a set without its ``set`` overrides is a one-line StudyError."""
    check_names(names or [], preset, "--models", "model set")
    chosen = {}
    for name in names or list(preset):
        spec = preset[name]
        if not isinstance(spec, dict) or not isinstance(spec.get("set"), list):
            raise StudyError(
                f"model set {name!r}: expected a mapping with a list of --set overrides under 'set'"
            )
        chosen[name] = {"about": spec.get("about", name), "set": list(spec["set"])}
    return chosen


def check_rooms(cfg) -> None:
    """The study is about users in rooms scored against early reverberation: say so if the overrides undo it."""
    room = cfg.world.room
    if not room.enabled:
        raise StudyError("world.room.enabled: the dereverb study needs users in rooms; remove the override")
    if room.target != "early":
        raise StudyError(
            f"world.room.target={room.target}: the dereverberation models are trained for (and this study scores "
            "against) target=early"
        )


def pretraining_rooms_kept_apart(cfg, world, model_overrides: dict[str, list[str]]) -> dict[str, int]:
    """Scientific hygiene: no user of ``world`` sits in a room a model of the study was pretrained or validated in
    (the rooms a reverberant pretraining used are listed in its model card). Returns, per checkpoint, how many
    pretraining rooms it records; a shared room is a ``StudyError``."""
    from fedpse.config import load_config
    from fedpse.models.checkpoints import read_checkpoint
    from fedpse.models.zoo import resolve_checkpoint

    users = {
        room["seed"]: uid for uid, room in ((u, world.user(u)["room"]) for u in world.user_ids()) if room
    }
    checked = {}
    for overrides in model_overrides.values():
        mc = load_config(overrides=overrides)
        for key, ref in (
            ("student.checkpoint", mc.student.checkpoint),
            ("teacher.checkpoint", mc.teacher.checkpoint),
        ):
            if not ref or ref in checked:
                continue
            reverb = read_checkpoint(resolve_checkpoint(ref, key))["card"].get("reverb") or {}
            seeds = [s for split in ("train", "val") for s in (reverb.get(split) or {}).get("room_seeds", [])]
            shared = sorted(uid for seed, uid in users.items() if seed in set(seeds))
            if shared:
                raise StudyError(
                    f"{ref}: users {shared} sit in rooms it was pretrained in; use another world seed"
                )
            checked[ref] = len(seeds)
    return checked


# ------------------------------------------------------------------------------------------------ worker side
_STATE: dict = {}


def _init(base: list[str], models: dict[str, list[str]], world_users: int) -> None:
    """A worker's models (every set's generic student and teacher), loaded once, and its result cache."""
    import torch

    from fedpse.config import load_config
    from fedpse.distill.cache import ResultCache

    torch.set_num_threads(1)
    cfg = load_config(overrides=base)
    _STATE.update(cfg=cfg, base=base, world_users=world_users, worlds={})
    _STATE["cache"] = ResultCache(cfg.federation.cache_dir)
    _STATE["models"] = {name: load_models(base + extra) for name, extra in models.items()}


def load_models(overrides: list[str]) -> dict:
    """The generic student and teacher a model set's overrides name, with their content keys."""
    from fedpse.config import load_config
    from fedpse.distill.cache import model_key
    from fedpse.models.zoo import load_student, load_teacher

    cfg = load_config(overrides=overrides)
    student, teacher = load_student(cfg)[0], load_teacher(cfg)[0]
    return {"student": student, "teacher": teacher, "keys": (model_key(student), model_key(teacher))}


def _world(snr_db: float):
    from fedpse.config import load_config
    from fedpse.world.reader import World

    if snr_db not in _STATE["worlds"]:
        cfg = load_config(overrides=_STATE["base"] + world_overrides(snr_db, _STATE["world_users"]))
        _STATE["worlds"][snr_db] = World.open(cfg)
    return _STATE["worlds"][snr_db]


def scores(outputs: list[np.ndarray], test_set, name: str) -> dict[str, float]:
    """``si_sdr_<name>``, ``pesq_<name>`` (wide-band), ``stoi_<name>``: means over the test mixtures against their
    clean (early-reverberation) references; PESQ is NaN-skipped where it is undefined (a silent reference)."""
    from fedpse.audio.metrics import pesq_wb, si_sdr, stoi

    pairs = list(zip(outputs, [y for _, y in test_set], strict=True))
    return {
        f"si_sdr_{name}": float(np.mean([si_sdr(e, y) for e, y in pairs])),
        f"pesq_{name}": float(np.nanmean([pesq_wb(e, y) for e, y in pairs])),
        f"stoi_{name}": float(np.mean([stoi(e, y) for e, y in pairs])),
    }


def model_scores(model, test_set, name: str, user: str) -> dict[str, float]:
    from fedpse.distill.adapt import enhance
    from fedpse.models.finite import check_outputs

    role = "teacher" if name == "teacher" else "student"
    return scores(check_outputs(enhance(model, [x for x, _ in test_set]), role, model, user), test_set, name)


def _cached(world, uid: str, key: str, compute) -> dict[str, float]:
    """Scores of a model that does not change (generic student, teacher, the mixture) via the result cache."""
    return _STATE["cache"].scores(f"dereverb:{world.manifest['key']}:{uid}:{key}:si_sdr+pesq+stoi", compute)


def user_job(job: tuple[float, str, list[str], int | None]) -> list[dict]:
    """Every model set of ``todo`` for one user at one SNR: one row each (scores of the five models, the user's
    room, the adaptations' steps and wall)."""
    from fedpse.distill.adapt import adapt
    from fedpse.distill.scores import gap_closure, user_seed
    from fedpse.results.rooms import room_columns

    snr_db, uid, todo, chunks = job
    cfg, cache, world = _STATE["cfg"], _STATE["cache"], _world(snr_db)
    noisy = world.adaptation_chunks(uid, "noisy")[:chunks]
    clean = world.adaptation_chunks(uid, "clean")[:chunks]  # the oracle's targets (simulation only)
    test_set = world.test_set(uid)
    seed = user_seed(cfg.seed, uid)
    mixture = _cached(world, uid, "noisy", lambda: scores([x for x, _ in test_set], test_set, "noisy"))
    rows = []
    for name in todo:
        m = _STATE["models"][name]
        student_key, teacher_key = m["keys"]
        row = {
            "snr_db": snr_db,
            "user": uid,
            "models": name,
            **room_columns(world.user(uid)["room"]),
            **mixture,
        }
        row |= _cached(
            world, uid, student_key, lambda m=m: model_scores(m["student"], test_set, "generic", uid)
        )
        row |= _cached(
            world, uid, teacher_key, lambda m=m: model_scores(m["teacher"], test_set, "teacher", uid)
        )
        targets = cache.targets(m["teacher"], teacher_key, noisy, user=uid)
        # the oracle trains on the references: no teacher to check (guard) or refresh from
        oracle_cfg = dataclasses.replace(cfg.adapt, guard="off", refresh="off")
        for kind, goal, acfg, teacher in (
            ("personalized", targets, cfg.adapt, m["teacher"]),
            ("oracle", clean, oracle_cfg, None),
        ):
            student = copy.deepcopy(m["student"])
            result = adapt(student, noisy, goal, acfg, seed=seed, user=uid, teacher=teacher)
            row |= model_scores(student, test_set, kind, uid)
            row |= {f"{kind}_steps": result.steps, f"{kind}_wall_seconds": result.wall_seconds}
        row["gain_db"] = row["si_sdr_personalized"] - row["si_sdr_generic"]
        row["gap_closure"] = gap_closure(
            row["si_sdr_generic"], row["si_sdr_personalized"], row["si_sdr_teacher"]
        )
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ tables
def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    return float(np.mean(values)) if values else math.nan


def summarise(rows: list[dict]) -> dict:
    """One (model set, SNR, RT60 bin) cell: ``fedpse.results.rooms.gain_stats`` (users, mean gain, improved,
    teacher lead, gap closure of means), each model's mean SI-SDR / PESQ / STOI, and the oracle's gain."""
    from fedpse.results.rooms import gain_stats

    cell = gain_stats(rows)
    cell["means"] = {f"{metric}_{m}": _mean(rows, f"{metric}_{m}") for metric in METRICS for m in MODELS}
    cell["oracle_gain_db"] = cell["means"]["si_sdr_oracle"] - cell["means"]["si_sdr_generic"]
    for metric in ("pesq", "stoi"):
        cell[f"{metric}_gain"] = cell["means"][f"{metric}_personalized"] - cell["means"][f"{metric}_generic"]
    cell["rt60_s_mean"] = _mean(rows, "rt60_s")
    return cell


ALL_ROOMS = "all"


def tabulate(rows: list[dict]) -> dict:
    """``{model set: {snr: {RT60 bin | "all": summary}}}``, SNRs ascending, bins least reverberant first."""
    from fedpse.results.rooms import by_bin

    cells: dict = {}
    for r in rows:
        cells.setdefault(r["models"], {}).setdefault(float(r["snr_db"]), []).append(r)
    return {
        name: {
            f"{snr:g}": {
                **{label: summarise(group) for label, group in by_bin(snr_rows).items()},
                ALL_ROOMS: summarise(snr_rows),
            }
            for snr, snr_rows in sorted(by_snr.items())
        }
        for name, by_snr in cells.items()
    }


def _columns(table: dict) -> list[tuple[str, str]]:
    """The (SNR, bin) cells of the tables, in order: every SNR's bins, then all rooms."""
    first = {}
    for by_snr in table.values():
        for snr, by_bin in by_snr.items():
            first.setdefault(snr, {}).update(dict.fromkeys(by_bin))
    return [(snr, b) for snr in sorted(first, key=float) for b in first[snr]]


def _label(name: str) -> str:
    return LABELS.get(name, name)


def md_scores(table: dict, metric: str, digits: int) -> str:
    """Rows: the mixture, then per model set its generic student, fine-tuned student, teacher and oracle; columns:
    (SNR, RT60 bin) with n users."""
    columns = _columns(table)
    first = next(iter(table.values()))
    headers = ["model"] + [
        f"{num(float(snr), 0)} dB, {b} (n={first.get(snr, {}).get(b, {}).get('users', '–')})"
        for snr, b in columns
    ]

    def line(name: str, by_snr: dict, model: str) -> list[str]:
        return [name] + [
            num(by_snr.get(snr, {}).get(b, {}).get("means", {}).get(f"{metric}_{model}"), digits)
            for snr, b in columns
        ]

    rows = [line("mixture", first, "noisy")]
    for name, by_snr in table.items():
        label = _label(name)
        rows += [
            line(f"{label} generic 2×32", by_snr, "generic"),
            line(f"{label} 2×32 fine-tuned by {label} T", by_snr, "personalized"),
            line(f"{label} teacher", by_snr, "teacher"),
            line(f"{label} 2×32 oracle (clean targets)", by_snr, "oracle"),
        ]
    return md_table(headers, rows)


def md_gains(table: dict) -> str:
    rows = []
    for name, by_snr in table.items():
        for snr, by_bin in by_snr.items():
            for b, c in by_bin.items():
                improved = f"{100 * c['improved'] / c['scored']:.0f} %" if c["scored"] else "–"
                rows.append(
                    [
                        _label(name),
                        f"{num(float(snr), 0)} dB",
                        b,
                        c["users"],
                        num(c["mean_gain_db"], signed=True),
                        improved,
                        num(c["teacher_lead_db"], signed=True),
                        num(c["gap_closure_of_means"]),
                        num(c["oracle_gain_db"], signed=True),
                        num(c["pesq_gain"], signed=True),
                        num(c["stoi_gain"], 3, signed=True),
                    ]
                )
    headers = [
        "models",
        "input SNR",
        "RT60",
        "users",
        "mean gain (dB)",
        "users improved",
        "teacher − generic (dB)",
        "gap closure",
        "oracle gain (dB)",
        "PESQ gain",
        "STOI gain",
    ]
    return md_table(headers, rows)


def markdown(table: dict, models: dict) -> str:
    if not table:
        return "No rows computed yet.\n"
    legend = "; ".join(f"**{_label(n)}**: {spec['about']}" for n, spec in models.items() if n in table)
    text = (
        "Users in shoebox rooms (RT60 drawn in 0.2–0.8 s), speech reverberated, noise not; scores against the "
        "early-reverberation reference (direct path + 50 ms). Mean over the users of each input SNR and RT60 bin "
        f"(n per column); fine-tuned = the generic student distilled from its teacher's pseudo-targets, oracle = "
        f"fine-tuned on the clean references instead. Model sets: {legend}.\n\n"
    )
    text += "SI-SDR (dB):\n\n" + md_scores(table, "si_sdr", 2)
    text += "\nWide-band PESQ:\n\n" + md_scores(table, "pesq", 2)
    text += "\nSTOI:\n\n" + md_scores(table, "stoi", 3)
    text += (
        "\nGains over the generic student of the same model set (SI-SDR dB unless named); gap closure = mean gain / "
        "mean (teacher − generic); oracle gain = oracle − generic:\n\n" + md_gains(table)
    )
    return text


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict:
    from fedpse.config import ConfigError, load_config
    from fedpse.world.cache import open_world

    s = resolve(parse_args(argv))
    out = prepare_out(s["out"])
    base = s["overrides"]
    cfg = load_config(overrides=base)  # a bad --set fails here, before any work
    check_rooms(cfg)
    world_users = max(s["users"], cfg.world.num_users)
    keys = {}
    for name, spec in s["models"].items():  # a missing checkpoint is said before any world is built
        try:
            keys[name] = load_models(base + spec["set"])["keys"]
        except ConfigError as err:
            raise StudyError(f"--models {name}: {err}") from None
    worlds = {
        snr: open_world(load_config(overrides=base + world_overrides(snr, world_users)), progress=True)
        for snr in s["snr_db"]
    }
    first = next(iter(worlds.values()))
    pretraining_rooms = {  # the same users sit in the same rooms at every SNR
        ref: n
        for w in worlds.values()
        for ref, n in pretraining_rooms_kept_apart(
            cfg, w, {k: base + v["set"] for k, v in s["models"].items()}
        ).items()
    }
    if s["users"] > len(first.user_ids()):
        raise StudyError(f"--users {s['users']}: the world has {len(first.user_ids())} users")
    available = len(first.segments(first.user_ids()[0], "adapt"))
    chunks = chunk_count(s["adapt_minutes"], cfg.world.chunk_seconds, available)
    chunks = None if chunks == available else chunks
    settings = {
        (snr, name): setting_key(cfg, worlds[snr].manifest["key"], *keys[name], chunks)
        for snr in s["snr_db"]
        for name in s["models"]
    }
    rows_path = out / "rows.jsonl"
    kept = {}  # rows of other settings stay in the file; the last row of a cell wins
    for r in [] if s["fresh"] else read_rows(rows_path):
        cell = (float(r["snr_db"]), r["user"], r["models"])
        if settings.get((cell[0], cell[2])) == r.get("setting"):
            kept[cell] = r
    jobs = []
    for snr in s["snr_db"]:
        for uid in worlds[snr].user_ids()[: s["users"]]:
            todo = [name for name in s["models"] if (snr, uid, name) not in kept]
            if todo:
                jobs.append((snr, uid, todo, chunks))
    if s["no_compute"]:
        print(
            f"dereverb: --no-compute: {sum(len(j[2]) for j in jobs)} requested (user, model set) rows are not computed"
        )
        jobs = []
    print(
        f"dereverb: {len(kept)} rows reused from {rows_path}, {len(jobs)} (SNR, user) jobs on {s['workers']} workers",
        flush=True,
    )
    rows = list(kept.values())
    t0 = time.perf_counter()
    initargs = (base, {n: spec["set"] for n, spec in s["models"].items()}, world_users)
    for i, new in enumerate(pool_imap(user_job, jobs, initargs, s["workers"], init=_init), 1):
        with open(rows_path, "a") as fh:
            for r in new:
                r["setting"] = settings[(r["snr_db"], r["models"])]
                fh.write(json.dumps(r) + "\n")
        rows += new
        elapsed = time.perf_counter() - t0
        print(
            f"[{duration(elapsed):>12}] {i}/{len(jobs)} {new[0]['snr_db']:g} dB {new[0]['user']} "
            f"RT60 {new[0]['rt60_s']:.2f} s: "
            + ", ".join(f"{_label(r['models'])} {r['gain_db']:+.2f} dB" for r in new)
            + f"  (ETA {duration(elapsed / i * (len(jobs) - i))})",
            flush=True,
        )
    wanted = {(snr, uid) for snr in s["snr_db"] for uid in worlds[snr].user_ids()[: s["users"]]}
    rows = [r for r in rows if (float(r["snr_db"]), r["user"]) in wanted and r["models"] in s["models"]]
    table = tabulate(rows)
    results = {
        "settings": s,
        "chunks_per_user": chunks or available,
        "pretraining_rooms_apart_from_users": pretraining_rooms,
        "rows": rows,
        "table": table,
    }
    results["wall_seconds"] = time.perf_counter() - t0
    write_json(out / "results.json", results)
    text = markdown(table, s["models"])
    (out / "table.md").write_text(text)
    print(text)
    print(
        f"dereverb: wrote {out / 'table.md'}, {out / 'results.json'} in {duration(results['wall_seconds'])}"
    )
    return results


if __name__ == "__main__":
    run_main("dereverb", main, resumable=True)
