"""Real corpora on disk build users through the same world interface as the built-in TTS world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fedpse.audio.io import SAMPLE_RATE
from fedpse.config import load_config
from fedpse.world.cache import build_world
from fedpse.world.corpora import CorpusError
from tests.conftest import tiny_config


def _voice_like(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A harmonic, syllable-modulated tone: enough like speech for the world builder (not for listening)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return (0.1 * env * tone).astype(np.float32)


def make_librispeech(root, speakers: int, utterances: int, seconds: float) -> None:
    for s in range(speakers):
        for u in range(utterances):
            path = root / f"{100 + s}" / "1000" / f"{100 + s}-1000-{u:04d}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), _voice_like(seconds, 100 + 20 * s, u), SAMPLE_RATE)


def make_noise_folder(root, places: int, seconds: float) -> None:
    rng = np.random.default_rng(0)
    for p in range(places):
        path = root / f"place{p}" / "rec.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        # a 44.1 kHz stereo recording: the loader resamples and downmixes it
        sf.write(str(path), 0.05 * rng.standard_normal((int(seconds * 44100), 2)).astype(np.float32), 44100)


def _corpus_cfg(tmp_path, *extra):
    return tiny_config(
        tmp_path / "cache",
        "world.num_users=2",
        "world.adaptation_minutes=0.2",
        "world.chunk_seconds=4",
        "world.speech.source=librispeech",
        f"world.speech.path={tmp_path / 'libri'}",
        "world.noise.source=folder",
        f"world.noise.path={tmp_path / 'noise'}",
        *extra,
    )


def test_a_librispeech_tree_and_a_noise_folder_build_users_the_same_way(tmp_path):
    make_librispeech(tmp_path / "libri", speakers=4, utterances=10, seconds=3.0)
    make_noise_folder(tmp_path / "noise", places=4, seconds=30.0)
    world = build_world(_corpus_cfg(tmp_path), progress=False)
    assert world.user_ids() == ["u0000", "u0001"]
    for uid in world.user_ids():
        user = world.user(uid)
        assert user["place"]["kind"] == "corpus"
        assert len(world.adaptation_chunks(uid)) == 3 and len(world.test_set(uid)) == 2
        adapt_files, test_files = set(user["texts"]["adapt"]), {f for m in user["texts"]["test"] for f in m}
        assert (
            test_files and adapt_files and not adapt_files & test_files
        )  # held-out utterances never adapted on
    users = {world.user(u)["speaker"] for u in world.user_ids()}
    assert not users & {e["speaker"] for e in world.manifest["pretrain_speech"]}
    assert not {world.user(u)["place"]["place_id"] for u in world.user_ids()} & {
        e["place"] for e in world.manifest["pretrain_noise"]
    }


def test_a_speaker_with_too_little_audio_is_named(tmp_path):
    make_librispeech(tmp_path / "libri", speakers=4, utterances=3, seconds=2.0)
    make_noise_folder(tmp_path / "noise", places=4, seconds=30.0)
    with pytest.raises(CorpusError, match=r"speaker .*1\d\d.*needs|needs.*1\d\d"):
        build_world(_corpus_cfg(tmp_path), progress=False)


def test_noise_places_too_short_for_the_timeline_are_a_clear_error(tmp_path):
    make_librispeech(tmp_path / "libri", speakers=4, utterances=10, seconds=3.0)
    make_noise_folder(tmp_path / "noise", places=4, seconds=5.0)
    with pytest.raises(ValueError, match="noise"):
        build_world(_corpus_cfg(tmp_path), progress=False)


def test_a_folder_with_no_audio_is_a_clear_error(tmp_path):
    (tmp_path / "libri" / "100" / "1000").mkdir(parents=True)
    make_noise_folder(tmp_path / "noise", places=2, seconds=30.0)
    with pytest.raises(CorpusError, match="no audio"):
        build_world(_corpus_cfg(tmp_path), progress=False)


PAPER_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "paper-librispeech-wham.yaml"


def make_wham(root, files: int, seconds: float) -> None:
    rng = np.random.default_rng(1)
    for i in range(files):
        path = root / ("tr" if i % 2 else "tt") / f"noise{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(
            str(path), 0.05 * rng.standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32), SAMPLE_RATE
        )


def test_the_paper_protocol_config_declares_the_papers_users_and_builds_from_librispeech_and_wham(tmp_path):
    cfg = load_config(PAPER_CONFIG)
    w = cfg.world
    assert (w.speech.source, w.noise.source) == ("librispeech", "wham")
    assert (w.adaptation_minutes, w.test_mixtures, w.test_seconds, tuple(w.snr_db)) == (
        5.0,
        6,
        10.0,
        (5.0, 5.0),
    )
    assert (cfg.student.layers, cfg.student.hidden) == (2, 32)
    assert (cfg.teacher.layers, cfg.teacher.hidden) == (3, 1024)
    # the same file, pointed at (tiny) corpora on disk and shrunk, builds users from them
    make_librispeech(tmp_path / "libri", speakers=4, utterances=10, seconds=3.0)
    make_wham(tmp_path / "wham", files=8, seconds=20.0)
    small = load_config(
        PAPER_CONFIG,
        [
            f"world.speech.path={tmp_path / 'libri'}",
            f"world.noise.path={tmp_path / 'wham'}",
            f"world.cache_dir={tmp_path / 'cache'}",
            "world.num_users=2",
            "world.adaptation_minutes=0.2",
            "world.chunk_seconds=4",
            "world.test_mixtures=2",
            "world.test_seconds=4",
            "world.workers=1",
        ],
    )
    world = build_world(small, progress=False)
    assert world.user_ids() == ["u0000", "u0001"]
    assert {world.user(u)["place"]["kind"] for u in world.user_ids()} == {"corpus"}
