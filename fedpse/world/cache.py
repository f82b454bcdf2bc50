"""Building a world into its cache directory (``build_world``), or opening the one already built (``open_world``);
reading a built world is ``fedpse.world.reader``.

Layout of ``<world.cache_dir>/world-<key>/`` (key = hash of the seed and every world setting that changes audio):

    manifest.json           every voice, place, user, segment and pretraining item, with content hashes
    config.yaml             the resolved config that built it
    build_stats.json        wall time, audio seconds, speed, peak memory (not part of the reproducible manifest)
    skipped_files.csv       path,reason of every corpus file/place left out (world.{speech,noise}.skip_bad_files)
    babble/<pool>_<k>.npy   babble talker banks (float32, memory-mapped by workers)
    users/<user>/{adapt_000,test_000}.{noisy,clean}.flac, user.json
    pretrain/speech/<speaker>/<k>.flac, pretrain/noise/<place>.flac

Audio is materialised as 16-bit FLAC rather than regenerated on demand: reading is far faster than rendering
(``benchmarks/world_build.py`` measures both). Same config + seed => identical manifest and audio hashes; a
complete matching world is reused, a partial one resumes user by user.

Bad corpus audio (unreadable, empty, silent, NaN/inf; noise places too short for a user) stops the build with one
line naming the first file, or, with ``world.speech.skip_bad_files`` / ``world.noise.skip_bad_files``, is left out
and listed in ``skipped_files.csv``. An error in a worker process ends the build at once, as raised there.

The parts: the checks of corpus files and ``skipped_files.csv`` are ``fedpse.world.screening``, what a worker
renders is ``fedpse.world.render``, the worker processes are ``fedpse.world.workers``.
"""

from __future__ import annotations

import json
import sys
import time

from fedpse.config import Config, config_to_dict, dump_config
from fedpse.paths import ensure_writable_dir
from fedpse.world.reader import FORMAT_VERSION, World, WorldError, world_dir, world_key
from fedpse.world.render import S_PLACES, S_PRETRAIN_NOISE, S_USERS, S_VOICES
from fedpse.world.screening import (
    NOISE_SKIP_KEY,
    SKIPPED_FILES,
    SPEECH_SKIP_KEY,
    _place_dict,
    _place_where,
    _write_skipped,
)
from fedpse.world.speech import seeded_rng
from fedpse.world.users import (
    SegmentSpec,
    UserPlan,
    check_disjoint,
    segment_layout,
    timeline_seconds,
)
from fedpse.world.workers import _Pool, _run

PRETRAIN_NOISE_VALIDATION_FRACTION = 0.1
# Seed streams: one purpose each, so adding users never changes voices or places.


# ------------------------------------------------------------------------------------------------ planning
def _procedural_places(cfg: Config, count: int, stream: int, prefix: str) -> list[dict]:
    from fedpse.world.noise import sample_environment

    fams = list(cfg.world.noise.families)
    rng = seeded_rng(cfg.seed, stream)
    order = [fams[i] for i in rng.permutation(len(fams))]
    places = []
    for i in range(count):
        env = sample_environment(order[i % len(order)], seeded_rng(cfg.seed, stream, i), f"{prefix}{i:04d}")
        places.append({"kind": "procedural", **env.to_dict()})
    return places


def _corpus_places(cfg: Config, bad, pool: _Pool | None) -> tuple[list[dict], list[dict]]:
    """(user places, pretraining places) of a noise corpus; every recording the world uses is decoded and checked."""
    from fedpse.world.corpora import scan_noise_corpus

    wc = cfg.world
    need = timeline_seconds(cfg)
    long_enough = []
    for place in scan_noise_corpus(wc.noise.path, wc.noise.source, min_place_seconds=need, bad=bad):
        if place.total_seconds >= need:
            long_enough.append(place)
        else:
            bad.add(
                _place_where(place.files),
                f"noise place {place.place_id!r} has {place.total_seconds:.1f} s of audio, but a user's adaptation + "
                f"test timeline needs {need:.1f} s; lower world.adaptation_minutes or add longer recordings",
            )
    bad.check()
    rng = seeded_rng(cfg.seed, S_PLACES)
    places = [long_enough[i] for i in rng.permutation(len(long_enough))]
    n_pre = max(1, len(places) // 4)
    pending, pre_places = [_place_dict(p) for p in places[n_pre:]], [_place_dict(p) for p in places[:n_pre]]
    # Check the places users will get, in order; a place that skipped files leave too short hands on to the next.
    users: list[dict] = []
    while pending and len(users) < wc.num_users:
        batch, pending = pending[: wc.num_users - len(users)], pending[wc.num_users - len(users) :]
        for place, complete in _check_places(cfg, batch, need, bad, pool):
            if complete:
                users.append(place)
            elif bad.skip:
                bad.add(
                    _place_where(place["files"]),
                    f"noise place {place['place_id']!r} has too little usable audio for a user's {need:.1f} s "
                    "timeline once its bad recordings are left out",
                )
    pretrain_seconds = wc.noise.pretrain_seconds_per_environment
    pre_places = [p for p, _ in _check_places(cfg, pre_places, pretrain_seconds, bad, pool) if p["files"]]
    bad.check()
    if not users:
        lost = f"; the others lost recordings to {NOISE_SKIP_KEY}" if bad.skip else ""
        raise WorldError(
            f"{wc.noise.path}: no noise place is left for users ({len(places)} place(s) hold the {need:.0f} s "
            f"adaptation + test timeline a user needs, {n_pre} of them go to pretraining{lost}); add longer "
            "noise recordings or lower world.adaptation_minutes"
        )
    if not pre_places:
        raise WorldError(
            f"{wc.noise.path}: no noise place is left for pretraining (every recording of its {n_pre} place(s) "
            "was skipped as bad); add noise recordings"
        )
    return users, pre_places


def _check_places(
    cfg: Config, places: list[dict], seconds: float, bad, pool: _Pool | None
) -> list[tuple[dict, bool]]:
    """Decode each place's recordings up to ``seconds``; bad ones go to ``bad`` and out of the place.

    Returns each place (without its bad files) and whether it still has ``seconds`` of audio.
    """
    jobs = [
        {"kind": "check_place", "place": p, "seconds": seconds, "min_rms_dbfs": cfg.world.noise.min_rms_dbfs}
        for p in places
    ]
    out = []
    for place, result in zip(places, _run(pool, cfg, jobs, "checking noise"), strict=True):
        dropped = {path for path, _ in result["bad"]}
        for path, reason in result["bad"]:
            bad.add(path, reason)
        kept = [(f, d) for f, d in zip(place["files"], place["durations"], strict=True) if f not in dropped]
        place = {**place, "files": [f for f, _ in kept], "durations": [d for _, d in kept]}
        out.append((place, result["complete"]))
    return out


def plan_world(cfg: Config, pool: _Pool | None = None) -> dict:
    """Everything about the world except its audio: voices, places, users, pretraining items. Deterministic.

    Corpus files the world will use are checked here (in ``pool``'s worker processes if given); bad ones stop
    the plan naming the first, or with skip_bad_files are left out and returned in ``plan["skipped"]``.
    """
    from fedpse.world.corpora import BadFiles

    wc = cfg.world
    plan: dict = {"voices": {}, "babble": {}}
    bad_speech = BadFiles(SPEECH_SKIP_KEY, wc.speech.skip_bad_files)
    bad_noise = BadFiles(NOISE_SKIP_KEY, wc.noise.skip_bad_files, what="bad recordings and short places")
    # Speakers. With neural_tts only the users' voices are neural: the pretraining pool is the tts one, unchanged.
    if wc.speech.source in ("tts", "neural_tts"):
        from fedpse.world.neural_voices import sample_neural_voices
        from fedpse.world.voices import sample_voices

        pools = {"user": wc.speech.user_voice_pool, "pretrain": wc.speech.pretrain_voices}
        for k, (pool, n) in enumerate(pools.items()):
            rng = seeded_rng(cfg.seed, S_VOICES, k)
            if pool == "user" and wc.speech.source == "neural_tts":
                voices = sample_neural_voices(n, rng, wc.speech.neural_tts)
            else:
                voices = sample_voices(n, rng, pool[0] + "v")
            plan["voices"][pool] = [v.to_dict() for v in voices]
        perm = seeded_rng(cfg.seed, S_USERS).permutation(len(plan["voices"]["user"]))
        user_speakers = [
            {"kind": wc.speech.source, "voice": plan["voices"]["user"][perm[i % len(perm)]]}
            for i in range(wc.num_users)
        ]
        pre = plan["voices"]["pretrain"]
        pre_speakers = [{"kind": "tts", "voice": v, "speaker_id": v["voice_id"]} for v in pre]
    else:
        from fedpse.world.speech import scan_corpus_speakers

        users, pre = scan_corpus_speakers(wc.speech.path, wc.speech.source, wc.num_users, cfg.seed)
        user_speakers = [
            {"kind": "corpus", "speaker_id": spk.speaker_id, "test_files": test, "adapt_files": adapt}
            for spk, (test, adapt) in zip(users, _split_speakers(cfg, users, bad_speech, pool), strict=True)
        ]
        pre_speakers = [
            {"kind": "corpus", "speaker_id": s.speaker_id, "files": [str(f) for f in s.files]} for s in pre
        ]
    # Places.
    if wc.noise.source == "procedural":
        user_places = _procedural_places(cfg, wc.num_users, S_USERS + 100, "env")
        pre_places = _procedural_places(cfg, wc.noise.pretrain_environments, S_PRETRAIN_NOISE + 100, "penv")
        if "babble" in wc.noise.families:
            from fedpse.world.voices import sample_voices

            talkers = sample_voices(wc.speech.babble_voices, seeded_rng(cfg.seed, S_VOICES, 9), "bv")
            half = max(1, len(talkers) // 2)
            plan["babble"] = {
                "user": {"voices": [v.to_dict() for v in talkers[:half]], "seconds": timeline_seconds(cfg)},
                "pretrain": {
                    "voices": [v.to_dict() for v in talkers[half:]],
                    "seconds": wc.noise.pretrain_seconds_per_environment,
                },
            }
    else:
        user_places, pre_places = _corpus_places(cfg, bad_noise, pool)
    plan["skipped"] = bad_speech.found + bad_noise.found
    # Users.
    layout = segment_layout(cfg)
    lo, hi = wc.snr_db
    users = []
    for i in range(wc.num_users):
        rng = seeded_rng(cfg.seed, S_USERS, i)
        snr = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
        room = None
        if wc.room.enabled:
            from fedpse.world.rooms import sample_room

            room = sample_room(rng, tuple(wc.room.rt60_s)).to_dict()
        segments = []
        for s in layout:
            jitter = float(rng.uniform(-wc.snr_spread_db, wc.snr_spread_db)) if wc.snr_spread_db > 0 else 0.0
            segments.append(SegmentSpec(s.name, s.part, s.noise_start_s, s.seconds, round(snr + jitter, 3)))
        uid = f"u{i:04d}"
        check_disjoint(segments, uid)
        speaker = user_speakers[i]
        spk_id = speaker.get("speaker_id") or speaker["voice"]["voice_id"]
        place = user_places[i % len(user_places)]
        users.append(
            {"plan": UserPlan(uid, i, spk_id, place, round(snr, 3), room, segments), "speaker": speaker}
        )
    plan["users"] = users
    # Pretraining pool: other speakers, other place instances; the last speakers/places are validation.
    n_val = max(1, round(len(pre_speakers) * wc.speech.pretrain_validation_fraction))
    plan["pretrain_speech"] = [
        {"speaker": s, "split": "val" if k >= len(pre_speakers) - n_val else "train"}
        for k, s in enumerate(pre_speakers)
    ]
    n_val_noise = max(1, round(len(pre_places) * PRETRAIN_NOISE_VALIDATION_FRACTION))
    plan["pretrain_noise"] = [
        {"place": p, "split": "val" if k >= len(pre_places) - n_val_noise else "train"}
        for k, p in enumerate(pre_places)
    ]
    return plan


def _split_speakers(
    cfg: Config, speakers: list, bad, pool: _Pool | None
) -> list[tuple[list[str], list[str]]]:
    """(test files, adaptation files) per user speaker. Strict: from file headers (bad utterances stop the
    build when rendered); skip_bad_files: every file the split takes is decoded first, so bad ones are left out.
    """
    from fedpse.world.corpora import CorpusError
    from fedpse.world.speech import split_speaker

    wc = cfg.world
    test_s, adapt_s = wc.test_mixtures * wc.test_seconds, wc.adaptation_minutes * 60
    if not bad.skip:
        splits = []
        for spk in speakers:
            try:
                splits.append(split_speaker(spk, test_s, adapt_s, bad))
            except CorpusError:
                bad.check()  # a speaker short because of unreadable files: name the files first
                raise
        bad.check()
        return splits
    jobs = [
        {
            "kind": "check_speaker",
            "speaker": spk,
            "test_seconds": test_s,
            "adapt_seconds": adapt_s,
            "min_rms_dbfs": wc.speech.min_rms_dbfs,
        }
        for spk in speakers
    ]
    splits = []
    for result in _run(pool, cfg, jobs, "checking speech"):
        for path, reason in result["bad"]:
            bad.add(path, reason)
        splits.append((result["test"], result["adapt"]))
    return splits


def build_world(cfg: Config, progress: bool = True) -> World:
    """Build (or reuse, or resume) the world for ``cfg`` and return a reader for it."""
    root = world_dir(cfg)
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        try:
            return World.open(cfg)
        except WorldError:
            pass  # incomplete or stale: rebuild below (finished users are kept and reused)
    if cfg.world.speech.source == "neural_tts":  # a missing voice package is named before any work
        from fedpse.world.neural_voices import check_installed

        check_installed(cfg.world.speech.neural_tts.engine)
    ensure_writable_dir(root, "world.cache_dir")
    t0 = time.perf_counter()
    with _Pool(cfg, root, progress) as pool:
        plan = plan_world(cfg, pool)
        (root / "babble").mkdir(exist_ok=True)
        dump_config(cfg, root / "config.yaml")
        bank_jobs = [
            {"kind": "babble", "pool": name, "k": k, "voice": v, "seconds": spec["seconds"]}
            for name, spec in plan["babble"].items()
            for k, v in enumerate(spec["voices"])
        ]
        results = pool.run(bank_jobs, "babble talkers")
        jobs = [{"kind": "user", "plan": u["plan"], "speaker": u["speaker"]} for u in plan["users"]]
        jobs += [{"kind": "pretrain_speech", "index": i, **s} for i, s in enumerate(plan["pretrain_speech"])]
        jobs += [{"kind": "pretrain_noise", **p} for p in plan["pretrain_noise"]]
        results += pool.run(jobs, "world")
    skipped = plan["skipped"] + [
        row for r in results if r["kind"] == "pretrain_speech" for row in r["skipped"]
    ]
    if cfg.world.speech.skip_bad_files or cfg.world.noise.skip_bad_files:
        _write_skipped(root / SKIPPED_FILES, skipped)
    for split in ("train", "val"):  # skipping can leave a pretraining split without speakers
        if not any(r["items"] for r in results if r["kind"] == "pretrain_speech" and r["split"] == split):
            raise WorldError(
                f"{cfg.world.speech.path}: no pretraining speaker is left for {split}: every file of theirs was "
                f"skipped as bad (listed in {root / SKIPPED_FILES}); add speakers to the corpus"
            )
    audio_seconds = sum(
        r.get("audio_seconds", 0.0) + r.get("seconds", 0.0) * (r["kind"] == "babble") for r in results
    )
    manifest = {
        "format": FORMAT_VERSION,
        "key": world_key(cfg),
        "seed": cfg.seed,
        "world": {k: v for k, v in config_to_dict(cfg.world).items() if k not in ("cache_dir", "workers")},
        "voices": plan["voices"],
        "babble": {
            name: {
                **spec,
                "sha256": [r["sha256"] for r in results if r["kind"] == "babble" and r["pool"] == name],
            }
            for name, spec in plan["babble"].items()
        },
        "users": [_strip(r) for r in results if r["kind"] == "user"],
        # a pretraining speaker whose files were all skipped has nothing to offer
        "pretrain_speech": [_strip(r) for r in results if r["kind"] == "pretrain_speech" and r["items"]],
        "pretrain_noise": [_strip(r) for r in results if r["kind"] == "pretrain_noise"],
        "complete": True,
    }
    if cfg.world.speech.skip_bad_files or cfg.world.noise.skip_bad_files:
        manifest["skipped_files"] = [{"path": path, "reason": reason} for path, reason in skipped]
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    tmp.rename(manifest_path)
    wall = time.perf_counter() - t0
    stats = {
        "wall_seconds": wall,
        "audio_seconds_generated": audio_seconds,
        "x_real_time": audio_seconds / max(wall, 1e-9),
    }
    (root / "build_stats.json").write_text(json.dumps(stats, indent=1))
    return World(root)


def open_world(cfg: Config, progress: bool = False) -> World:
    """The config's world: opened if built (a cache that does not match the config is an error), else built."""
    if (world_dir(cfg) / "manifest.json").is_file():
        return World.open(cfg)
    if progress:
        print(f"fedpse: building the world at {world_dir(cfg)} (first run only)", file=sys.stderr)
    return build_world(cfg, progress=progress)


def _strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("kind", "audio_seconds", "skipped")}
