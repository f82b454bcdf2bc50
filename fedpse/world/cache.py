"""Building a world into its cache directory, and reading it back.

Layout of ``<world.cache_dir>/world-<key>/`` (key = hash of the seed and every world setting that changes audio):

    manifest.json           every voice, place, user, segment and pretraining item, with content hashes
    config.yaml             the resolved config that built it
    build_stats.json        wall time, audio seconds, speed, peak memory (not part of the reproducible manifest)
    babble/<pool>_<k>.npy   babble talker banks (float32, memory-mapped by workers)
    users/<user>/{adapt_000,test_000}.{noisy,clean}.flac, user.json
    pretrain/speech/<speaker>/<k>.flac, pretrain/noise/<place>.flac

Audio is materialised as 16-bit FLAC rather than regenerated on demand: reading is far faster than rendering
(``benchmarks/world_build.py`` measures both). Same config + seed => identical manifest and audio hashes; a
complete matching world is reused, a partial one resumes user by user.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np

from fedpse.audio.io import SAMPLE_RATE, load_audio, save_audio
from fedpse.config import Config, config_to_dict, dump_config
from fedpse.world.speech import files_stream, seeded_rng, tts_stream
from fedpse.world.users import (
    SegmentSpec,
    UserPlan,
    check_disjoint,
    mix_at_snr,
    pcm_sha256,
    quantize,
    segment_layout,
    timeline_seconds,
)

FORMAT_VERSION = 1
PRETRAIN_NOISE_VALIDATION_FRACTION = 0.1
# Seed streams: one purpose each, so adding users never changes voices or places.
S_VOICES, S_USERS, S_PRETRAIN_SPEECH, S_PRETRAIN_NOISE, S_BABBLE, S_USER_AUDIO, S_PLACES = range(1, 8)


class WorldError(ValueError):
    """A world cache that is missing, incomplete or built from a different config."""


# ------------------------------------------------------------------------------------------------ identity
def world_key(cfg: Config) -> str:
    """Hash of everything that determines the world's audio (not where it is cached or how many workers)."""
    world = config_to_dict(cfg.world)
    world.pop("cache_dir")
    world.pop("workers")
    blob = json.dumps({"format": FORMAT_VERSION, "seed": cfg.seed, "world": world}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def world_dir(cfg: Config) -> Path:
    return Path(os.path.expanduser(cfg.world.cache_dir)) / f"world-{world_key(cfg)[:12]}"


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


def _corpus_places(cfg: Config) -> tuple[list[dict], list[dict]]:
    from fedpse.world.corpora import scan_noise_corpus

    need = timeline_seconds(cfg)
    places = scan_noise_corpus(cfg.world.noise.path, cfg.world.noise.source, min_place_seconds=need)
    rng = seeded_rng(cfg.seed, S_PLACES)
    places = [places[i] for i in rng.permutation(len(places))]
    n_pre = max(1, len(places) // 4)
    users = [p for p in places[n_pre:] if p.total_seconds >= need]
    if not users:
        raise WorldError(
            f"{cfg.world.noise.path}: no noise place (of {len(places) - n_pre} for users) has the {need:.0f} s a user's "
            "adaptation + test timeline needs; lower world.adaptation_minutes or add longer noise recordings"
        )
    return [_place_dict(p) for p in users], [_place_dict(p) for p in places[:n_pre]]


def _place_dict(place) -> dict:
    files = [str(f) for f in place.files]
    return {"kind": "corpus", "place_id": place.place_id, "files": files, "durations": list(place.durations)}


def plan_world(cfg: Config) -> dict:
    """Everything about the world except its audio: voices, places, users, pretraining items. Deterministic."""
    wc = cfg.world
    plan: dict = {"voices": {}, "babble": {}}
    # Speakers.
    if wc.speech.source == "tts":
        from fedpse.world.voices import sample_voices

        pools = {"user": wc.speech.user_voice_pool, "pretrain": wc.speech.pretrain_voices}
        for k, (pool, n) in enumerate(pools.items()):
            plan["voices"][pool] = [
                v.to_dict() for v in sample_voices(n, seeded_rng(cfg.seed, S_VOICES, k), pool[0] + "v")
            ]
        perm = seeded_rng(cfg.seed, S_USERS).permutation(len(plan["voices"]["user"]))
        user_speakers = [
            {"kind": "tts", "voice": plan["voices"]["user"][perm[i % len(perm)]]} for i in range(wc.num_users)
        ]
        pre = plan["voices"]["pretrain"]
        pre_speakers = [{"kind": "tts", "voice": v, "speaker_id": v["voice_id"]} for v in pre]
    else:
        from fedpse.world.speech import scan_corpus_speakers, split_speaker

        users, pre = scan_corpus_speakers(wc.speech.path, wc.speech.source, wc.num_users, cfg.seed)
        test_s, adapt_s = wc.test_mixtures * wc.test_seconds, wc.adaptation_minutes * 60
        user_speakers = []
        for spk in users:
            test, adapt = split_speaker(spk, test_s, adapt_s)
            user_speakers.append(
                {"kind": "corpus", "speaker_id": spk.speaker_id, "test_files": test, "adapt_files": adapt}
            )
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
        user_places, pre_places = _corpus_places(cfg)
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


# ------------------------------------------------------------------------------------------------ rendering
_WORKER: dict = {}


def _init_worker(cfg_dict: dict, root: str) -> None:
    _WORKER.clear()
    _WORKER.update(cfg=cfg_dict, root=Path(root), banks={})


def _bank(pool: str):
    from fedpse.world.noise import BabbleBank

    banks = _WORKER["banks"]
    if pool not in banks:
        files = sorted((_WORKER["root"] / "babble").glob(f"{pool}_*.npy"))
        banks[pool] = BabbleBank([np.load(f, mmap_mode="r") for f in files])
    return banks[pool]


def _render_noise(place: dict, start_s: float, seconds: float, pool: str) -> np.ndarray:
    if place["kind"] == "procedural":
        from fedpse.world.noise import Environment, render

        env = Environment.from_dict({k: v for k, v in place.items() if k != "kind"})
        return render(env, start_s, seconds, bank=_bank(pool) if env.family == "babble" else None)
    from fedpse.world.corpora import NoisePlace

    return NoisePlace(place["place_id"], [Path(f) for f in place["files"]], list(place["durations"])).render(
        start_s, seconds
    )


def _voice(desc: dict):
    from fedpse.world.voices import Voice

    return Voice.from_dict(desc)


def _job_babble(job: dict) -> dict:
    path = _WORKER["root"] / "babble" / f"{job['pool']}_{job['k']:02d}.npy"
    rng = seeded_rng(_WORKER["cfg"]["seed"], S_BABBLE, job["pool"] == "user", job["k"])
    audio = tts_stream(_voice(job["voice"]), job["seconds"], rng).audio
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, audio)
    tmp.rename(path)
    return {
        "kind": "babble",
        "pool": job["pool"],
        "k": job["k"],
        "sha256": pcm_sha256(audio),
        "seconds": len(audio) / SAMPLE_RATE,
    }


def _job_user(job: dict) -> dict:
    cfg, root = _WORKER["cfg"], _WORKER["root"]
    plan: UserPlan = job["plan"]
    speaker = job["speaker"]
    wc = cfg["world"]
    out = root / "users" / plan.user_id
    done = out / "user.json"
    if done.is_file():
        return {"kind": "user", **json.loads(done.read_text()), "audio_seconds": 0.0}
    out.mkdir(parents=True, exist_ok=True)
    rng = seeded_rng(cfg["seed"], S_USER_AUDIO, plan.index)
    adapt_specs = [s for s in plan.segments if s.part == "adapt"]
    test_specs = [s for s in plan.segments if s.part == "test"]
    adapt_seconds = sum(s.seconds for s in adapt_specs)
    # Speech: the adaptation stream first, then test mixtures with sentences never used for adaptation.
    if speaker["kind"] == "tts":
        voice = _voice(speaker["voice"])
        adapt = tts_stream(voice, adapt_seconds, rng)
        tests = [tts_stream(voice, s.seconds, rng, exclude=set(adapt.texts)) for s in test_specs]
    else:
        min_rms = wc["speech"]["min_rms_dbfs"]
        adapt = files_stream(speaker["adapt_files"], adapt_seconds, rng, min_rms)
        test_all = files_stream(speaker["test_files"], sum(s.seconds for s in test_specs), rng, min_rms)
        tests, pos = [], 0
        for s in test_specs:
            n = int(round(s.seconds * SAMPLE_RATE))
            tests.append(type(test_all)(test_all.audio[pos : pos + n], test_all.texts))
            pos += n
    plan.texts = {"adapt": adapt.texts, "test": [t.texts for t in tests]}
    speech_pieces, pos = [], 0
    for s in adapt_specs:
        n = int(round(s.seconds * SAMPLE_RATE))
        speech_pieces.append(adapt.audio[pos : pos + n])
        pos += n
    speech_pieces += [t.audio for t in tests]
    total = 0.0
    for spec, dry in zip(plan.segments, speech_pieces, strict=True):
        speech, reference = dry, dry
        if plan.room is not None:
            from fedpse.world.rooms import Room, reverberate

            room_cfg = wc["room"]
            speech, reference = reverberate(
                dry, Room.from_dict(plan.room), room_cfg["target"], room_cfg["early_ms"], root / "rirs"
            )
        noise = _render_noise(plan.place, spec.noise_start_s, spec.seconds, "user")
        noisy, clean = mix_at_snr(speech, reference, noise, spec.snr_db)
        save_audio(out / f"{spec.name}.noisy.flac", noisy)
        save_audio(out / f"{spec.name}.clean.flac", clean)
        spec.noisy_sha256, spec.clean_sha256 = pcm_sha256(noisy), pcm_sha256(clean)
        total += spec.seconds
    record = plan.to_dict()
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, sort_keys=True))
    tmp.rename(done)  # written last: its presence means the user is complete
    return {"kind": "user", **record, "audio_seconds": total}


def _job_pretrain_speech(job: dict) -> dict:
    cfg, root = _WORKER["cfg"], _WORKER["root"]
    spk = job["speaker"]
    sid = spk.get("speaker_id") or spk["voice"]["voice_id"]
    out = root / "pretrain" / "speech" / sid
    rng = seeded_rng(cfg["seed"], S_PRETRAIN_SPEECH, job["index"])
    count = cfg["world"]["speech"]["pretrain_utterances_per_voice"]
    if spk["kind"] == "tts":
        from fedpse.world.text import sentence
        from fedpse.world.voices import get_synthesizer

        synth, voice = get_synthesizer(), _voice(spk["voice"])
        utts = []
        for _ in range(count):
            text = sentence(rng)
            utts.append((text, synth.render(voice, text)))
    else:
        from fedpse.world.corpora import load_speech

        min_rms = cfg["world"]["speech"]["min_rms_dbfs"]
        utts = [(f, load_speech(f, min_rms)) for f in spk["files"]]
    items, total = [], 0.0
    for k, (text, audio) in enumerate(utts):
        audio = quantize(audio * (0.1 / (np.sqrt(np.mean(audio**2)) + 1e-9)))  # -20 dBFS RMS
        path = out / f"{k:03d}.flac"
        save_audio(path, audio)
        items.append({"path": str(path.relative_to(root)), "text": text, "sha256": pcm_sha256(audio)})
        total += len(audio) / SAMPLE_RATE
    return {
        "kind": "pretrain_speech",
        "speaker": sid,
        "split": job["split"],
        "items": items,
        "audio_seconds": total,
    }


def _job_pretrain_noise(job: dict) -> dict:
    cfg, root = _WORKER["cfg"], _WORKER["root"]
    place = job["place"]
    pid = place.get("env_id") or place.get("place_id")
    seconds = cfg["world"]["noise"]["pretrain_seconds_per_environment"]
    if place["kind"] == "corpus":
        seconds = min(seconds, sum(place["durations"]))
    audio = _render_noise(place, 0.0, seconds, "pretrain")
    audio = quantize(audio * (0.1 / (np.sqrt(np.mean(audio**2)) + 1e-9)))
    path = root / "pretrain" / "noise" / f"{pid}.flac"
    save_audio(path, audio)
    return {
        "kind": "pretrain_noise",
        "place": pid,
        "family": place.get("family", "corpus"),
        "split": job["split"],
        "path": str(path.relative_to(root)),
        "sha256": pcm_sha256(audio),
        "audio_seconds": seconds,
    }


_JOBS = {
    "babble": _job_babble,
    "user": _job_user,
    "pretrain_speech": _job_pretrain_speech,
    "pretrain_noise": _job_pretrain_noise,
}


def _run_job(job: dict) -> dict:
    return _JOBS[job["kind"]](job)


def _run_all(jobs: list[dict], cfg: Config, root: Path, desc: str, progress: bool) -> list[dict]:
    from tqdm import tqdm

    cfg_dict = config_to_dict(cfg)
    results: list[dict] = []
    bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=not progress, dynamic_ncols=True)
    if cfg.world.workers == 1 or len(jobs) <= 1:
        _init_worker(cfg_dict, str(root))
        for job in jobs:
            results.append(_run_job(job))
            bar.update()
    else:
        ctx = mp.get_context("spawn")  # fresh interpreters: no inherited torch/espeak state
        with ctx.Pool(cfg.world.workers, initializer=_init_worker, initargs=(cfg_dict, str(root))) as pool:
            for res in pool.imap(_run_job, jobs, chunksize=1):
                results.append(res)
                bar.update()
    bar.close()
    return results


def build_world(cfg: Config, progress: bool = True) -> World:
    """Build (or reuse, or resume) the world for ``cfg`` and return a reader for it."""
    root = world_dir(cfg)
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        try:
            return World.open(cfg)
        except WorldError:
            pass  # incomplete or stale: rebuild below (finished users are kept and reused)
    t0 = time.perf_counter()
    plan = plan_world(cfg)
    root.mkdir(parents=True, exist_ok=True)
    (root / "babble").mkdir(exist_ok=True)
    dump_config(cfg, root / "config.yaml")
    bank_jobs = [
        {"kind": "babble", "pool": pool, "k": k, "voice": v, "seconds": spec["seconds"]}
        for pool, spec in plan["babble"].items()
        for k, v in enumerate(spec["voices"])
    ]
    results = _run_all(bank_jobs, cfg, root, "babble talkers", progress)
    jobs = [{"kind": "user", "plan": u["plan"], "speaker": u["speaker"]} for u in plan["users"]]
    jobs += [{"kind": "pretrain_speech", "index": i, **s} for i, s in enumerate(plan["pretrain_speech"])]
    jobs += [{"kind": "pretrain_noise", **p} for p in plan["pretrain_noise"]]
    results += _run_all(jobs, cfg, root, "world", progress)
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
            pool: {
                **spec,
                "sha256": [r["sha256"] for r in results if r["kind"] == "babble" and r["pool"] == pool],
            }
            for pool, spec in plan["babble"].items()
        },
        "users": [_strip(r) for r in results if r["kind"] == "user"],
        "pretrain_speech": [_strip(r) for r in results if r["kind"] == "pretrain_speech"],
        "pretrain_noise": [_strip(r) for r in results if r["kind"] == "pretrain_noise"],
        "complete": True,
    }
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


def _strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("kind", "audio_seconds")}


# ------------------------------------------------------------------------------------------------ reading
class World:
    """Read access to a built world. Devices get only noisy audio; clean references go to the evaluator."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise WorldError(f"{self.root}: no manifest.json; build the world with `fedpse world build`")
        try:
            self.manifest = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise WorldError(f"{path}: corrupt manifest ({err}); delete the folder and rebuild") from None
        if not self.manifest.get("complete"):
            raise WorldError(
                f"{path}: the world build did not finish; run `fedpse world build` again to resume"
            )
        self._users = {u["user_id"]: u for u in self.manifest["users"]}

    @classmethod
    def open(cls, cfg: Config) -> World:
        """The world ``cfg`` describes; errors if it is not built or the cache was built from other settings."""
        root = world_dir(cfg)
        world = cls(root)
        if world.manifest.get("key") != world_key(cfg):
            raise WorldError(
                f"{root}: the cached world does not match this config (seed/world settings differ)"
            )
        return world

    @property
    def seed(self) -> int:
        return int(self.manifest["seed"])

    def user_ids(self) -> list[str]:
        return list(self._users)

    def user(self, user_id: str) -> dict:
        if user_id not in self._users:
            raise WorldError(
                f"user {user_id!r} is not in the world at {self.root} ({len(self._users)} users)"
            )
        return self._users[user_id]

    def segments(self, user_id: str, part: str) -> list[dict]:
        return [s for s in self.user(user_id)["segments"] if s["part"] == part]

    def load(self, user_id: str, name: str, kind: str = "noisy") -> np.ndarray:
        if kind not in ("noisy", "clean"):
            raise ValueError(f"kind: expected 'noisy' or 'clean', got {kind!r}")
        return load_audio(self.root / "users" / user_id / f"{name}.{kind}.flac")

    def adaptation_chunks(self, user_id: str, kind: str = "noisy") -> list[np.ndarray]:
        return [self.load(user_id, s["name"], kind) for s in self.segments(user_id, "adapt")]

    def test_set(self, user_id: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(noisy, clean) held-out test mixtures — for scoring only."""
        return [
            (self.load(user_id, s["name"], "noisy"), self.load(user_id, s["name"], "clean"))
            for s in self.segments(user_id, "test")
        ]

    def pretrain_speech_files(self, split: str) -> dict[str, list[Path]]:
        """Pretraining utterance files per speaker, ``split`` = "train" | "val" (validation speakers are disjoint)."""
        return {
            e["speaker"]: [self.root / i["path"] for i in e["items"]]
            for e in self.manifest["pretrain_speech"]
            if e["split"] == split
        }

    def pretrain_noise_files(self, split: str) -> list[Path]:
        return [self.root / e["path"] for e in self.manifest["pretrain_noise"] if e["split"] == split]

    def verify(self) -> list[str]:
        """Recompute every user audio hash; returns the names of files whose content differs from the manifest."""
        bad = []
        for uid, user in self._users.items():
            for s in user["segments"]:
                for kind in ("noisy", "clean"):
                    if pcm_sha256(self.load(uid, s["name"], kind)) != s[f"{kind}_sha256"]:
                        bad.append(f"{uid}/{s['name']}.{kind}.flac")
        return bad

    def remove(self) -> None:
        shutil.rmtree(self.root)
