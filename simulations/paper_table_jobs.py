"""paper_table's worker processes: each loads the students and teachers once, then adapts and scores one user at one
SNR per job (``user_job``: every requested student × teacher; ``sweep_job``: one student's gain vs steps)."""

from __future__ import annotations

import copy
import dataclasses
import multiprocessing as mp
import signal
import time
import zlib

import numpy as np
from paper_table_setup import TEACHERS, student_overrides, world_overrides

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
    _STATE["teacher_macs"] = {t: teacher_macs_per_second(m) for t, m in _STATE["teachers"].items()}
    _STATE["keys"] = {
        **{("student", h): model_key(m) for h, m in _STATE["students"].items()},
        **{("teacher", t): model_key(m) for t, m in _STATE["teachers"].items()},
    }


def teacher_macs_per_second(model) -> float | None:
    """Forward MACs per second of audio of a teacher (an ONNX one counted from its graph); ``None`` when unknown."""
    from fedpse.models.macs import macs_per_second

    try:
        return macs_per_second(model)
    except ValueError:  # an ONNX graph that cannot be counted (control flow, Einsum)
        return None


def _world(snr_db: float):
    from fedpse.config import load_config
    from fedpse.world.reader import World

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


def dnsmos_columns(models: dict, test_set) -> dict[str, float]:
    """``dnsmos_{sig,bak,ovr}_{noisy,<model>}``: DNSMOS P.835 means over the test mixtures (no clean reference)."""
    from fedpse.distill.adapt import enhance
    from fedpse.models.dnsmos import load_dnsmos

    scorer = load_dnsmos("cpu")
    noisy = [x for x, _ in test_set]
    outputs = {"noisy": noisy, **{name: enhance(m, noisy) for name, m in models.items()}}
    columns = {}
    for name, clips in outputs.items():
        scores = scorer.score_many(clips)
        for part in ("sig", "bak", "ovr"):
            columns[f"dnsmos_{part}_{name}"] = float(np.mean([sc[part] for sc in scores]))
    return columns


def user_job(job: tuple[float, str, list[tuple[int, str]], int | None]) -> list[dict]:
    """Every (student, teacher) pair of ``todo`` for one user at one SNR: one row each (scores, adaptation costs,
    the teacher's MACs per second of audio and its wall on the user's adaptation audio)."""
    from fedpse.distill.adapt import adapt, score
    from fedpse.distill.scores import score_row, user_seed

    snr_db, uid, todo, chunks = job
    cfg, cache, world = _STATE["cfg"], _STATE["cache"], _world(snr_db)
    noisy = world.adaptation_chunks(uid, "noisy")[:chunks]
    test_set = world.test_set(uid)
    noisy_db = score({}, test_set)["noisy"]
    seed = user_seed(cfg.seed, uid)  # as `fedpse adapt`: one seed per user
    rows = []
    for teacher in dict.fromkeys(t for _, t in todo):
        model, key = _STATE["teachers"][teacher], _STATE["keys"][("teacher", teacher)]
        misses, t0 = cache.misses, time.perf_counter()
        targets = cache.targets(model, key, noisy)
        # the teacher's wall on this user's adaptation audio; None when (some of) it came from the result cache
        teacher_wall = time.perf_counter() - t0 if cache.misses - misses == len(noisy) else None
        teacher_db = _cached_score(world, uid, "teacher", teacher, test_set)
        for student, _ in [p for p in todo if p[1] == teacher]:
            generic_db = _cached_score(world, uid, "student", student, test_set)
            personalized = copy.deepcopy(_STATE["students"][student])
            # the teacher is at hand for the guard's check (adapt.guard=on)
            result = adapt(personalized, noisy, targets, cfg.adapt, seed=seed, teacher=model)
            personalized_db = score({"p": personalized}, test_set)["p"]
            costs = result.costs(noisy)
            if result.guard != "off":  # the fine-tuned student as if the guard had adopted it ...
                costs["si_sdr_unguarded"] = personalized_db
            if (
                result.finetuned_state is not None
            ):  # ... where it kept the generic one: the one it turned down
                turned_down = copy.deepcopy(personalized)
                turned_down.load_state_dict(result.finetuned_state)
                costs["si_sdr_unguarded"] = score({"p": turned_down}, test_set)["p"]
            if cfg.scoring.dnsmos:  # non-intrusive scores of the same test outputs (scoring.dnsmos=true)
                models = {
                    "generic": _STATE["students"][student],
                    "personalized": personalized,
                    "teacher": model,
                }
                costs.update(dnsmos_columns(models, test_set))
            del costs["best_agreement_db"]  # rows.jsonl has kept the columns it was started with
            rows.append(
                {
                    "snr_db": snr_db,
                    "user": uid,
                    "student": student,
                    "teacher": teacher,
                    **score_row(noisy_db, generic_db, personalized_db, teacher_db),
                    **costs,
                    "teacher_macs_per_second": _STATE["teacher_macs"][teacher],
                    "teacher_wall_seconds": teacher_wall,
                }
            )
    return rows


def sweep_job(job: tuple[float, str, int, str, list[int], int | None]) -> dict:
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


def _worker_init(init, *initargs) -> None:
    """A pool worker ignores Ctrl-C (the terminal sends it to the whole process group): the parent stops the pool
    and says so in one line, instead of every worker printing its own traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init(*initargs)


def pool_imap(fn, jobs: list, initargs: tuple, workers: int, init=_init):
    """``fn`` over ``jobs`` in ``workers`` processes, each set up by ``init(*initargs)`` (in-process for 1)."""
    if workers <= 1:
        init(*initargs)
        yield from map(fn, jobs)
        return
    with mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(init, *initargs)) as pool:
        yield from pool.imap_unordered(fn, jobs, chunksize=1)
