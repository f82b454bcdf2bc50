"""What a worker process renders: babble talker banks, one user's mixtures, pretraining speech and noise.

``_init_worker`` sets the per-process state (config as a dict, world root, babble banks) the jobs read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedpse.audio.io import SAMPLE_RATE, AudioError, save_audio
from fedpse.world.reader import WorldError
from fedpse.world.screening import SPEECH_SKIP_KEY, _place_name, _with_skip_hint
from fedpse.world.speech import files_stream, seeded_rng, tts_stream
from fedpse.world.users import (
    SILENT_NOISE_DBFS,
    SilentNoiseError,
    UserPlan,
    mix_at_snr,
    pcm_sha256,
    quantize,
)

# Seed streams: one purpose each, so adding users never changes voices or places.
S_VOICES, S_USERS, S_PRETRAIN_SPEECH, S_PRETRAIN_NOISE, S_BABBLE, S_USER_AUDIO, S_PLACES = range(1, 8)


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


def _neural_voice(desc: dict):
    from fedpse.world.neural_voices import NeuralVoice

    return NeuralVoice.from_dict(desc)


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
    if speaker["kind"] in ("tts", "neural_tts"):
        voice = (_voice if speaker["kind"] == "tts" else _neural_voice)(speaker["voice"])
        adapt = tts_stream(voice, adapt_seconds, rng)
        tests = [tts_stream(voice, s.seconds, rng, exclude=set(adapt.texts)) for s in test_specs]
    else:
        min_rms = wc["speech"]["min_rms_dbfs"]
        try:
            adapt = files_stream(speaker["adapt_files"], adapt_seconds, rng, min_rms)
            test_all = files_stream(speaker["test_files"], sum(s.seconds for s in test_specs), rng, min_rms)
        except AudioError as err:
            raise _with_skip_hint(err, SPEECH_SKIP_KEY) from None
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
        try:
            noisy, clean = mix_at_snr(speech, reference, noise, spec.snr_db)
        except SilentNoiseError as err:
            raise WorldError(
                f"user {plan.user_id} {spec.name}: noise place {_place_name(plan.place)} is silent from "
                f"{spec.noise_start_s:.1f} to {spec.noise_start_s + spec.seconds:.1f} s of its timeline; {err}"
            ) from None
        save_audio(out / f"{spec.name}.noisy.flac", noisy)
        save_audio(out / f"{spec.name}.clean.flac", clean)
        spec.noisy_sha256, spec.clean_sha256 = pcm_sha256(noisy), pcm_sha256(clean)
        total += spec.seconds
    record = plan.to_dict()
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, sort_keys=True))
    tmp.rename(done)  # written last: its presence means the user is complete
    return {"kind": "user", **record, "audio_seconds": total}


def save_pretrain_utterance(audio: np.ndarray, path: Path) -> tuple[np.ndarray, str]:
    """A pretraining utterance at -20 dBFS RMS, stored at ``path`` (16-bit FLAC): what was stored, and its PCM
    sha256."""
    audio = quantize(audio * (0.1 / (np.sqrt(np.mean(audio**2)) + 1e-9)))
    save_audio(path, audio)
    return audio, pcm_sha256(audio)


def _job_pretrain_speech(job: dict) -> dict:
    cfg, root = _WORKER["cfg"], _WORKER["root"]
    spk = job["speaker"]
    sid = spk.get("speaker_id") or spk["voice"]["voice_id"]
    out = root / "pretrain" / "speech" / sid
    rng = seeded_rng(cfg["seed"], S_PRETRAIN_SPEECH, job["index"])
    count = cfg["world"]["speech"]["pretrain_utterances_per_voice"]
    skipped: list[tuple[str, str]] = []
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
        utts = []
        for f in spk["files"]:
            try:
                utts.append((f, load_speech(f, min_rms)))
            except AudioError as err:
                if not cfg["world"]["speech"]["skip_bad_files"]:
                    raise _with_skip_hint(err, SPEECH_SKIP_KEY) from None
                skipped.append((err.path, err.reason))
    items, total = [], 0.0
    for k, (text, audio) in enumerate(utts):
        path = out / f"{k:03d}.flac"
        audio, sha = save_pretrain_utterance(audio, path)
        items.append({"path": str(path.relative_to(root)), "text": text, "sha256": sha})
        total += len(audio) / SAMPLE_RATE
    return {
        "kind": "pretrain_speech",
        "speaker": sid,
        "split": job["split"],
        "items": items,
        "audio_seconds": total,
        "skipped": skipped,
    }


def _job_pretrain_noise(job: dict) -> dict:
    cfg, root = _WORKER["cfg"], _WORKER["root"]
    place = job["place"]
    pid = place.get("env_id") or place.get("place_id")
    seconds = cfg["world"]["noise"]["pretrain_seconds_per_environment"]
    if place["kind"] == "corpus":
        seconds = min(seconds, sum(place["durations"]))
    audio = _render_noise(place, 0.0, seconds, "pretrain")
    if float(np.mean(np.square(audio, dtype=np.float64))) < 10 ** (SILENT_NOISE_DBFS / 10):
        raise WorldError(
            f"pretraining noise place {_place_name(place)} is silent in its first {seconds:.1f} s; "
            "remove its recordings from the corpus"
        )
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
