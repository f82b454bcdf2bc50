"""World building on bad inputs: nothing hangs, nothing is silently wrong, every error names what to fix."""

from __future__ import annotations

import csv
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fedpse.audio.io import SAMPLE_RATE, AudioError
from fedpse.world.cache import build_world
from fedpse.world.reader import world_key
from tests.conftest import TINY_WORLD, tiny_config
from tests.world.test_world_corpora import _voice_like, make_noise_folder

CORPUS_WORLD = [
    "world.num_users=2",
    "world.adaptation_minutes=0.2",  # with 2 x 4 s test mixtures and a 5 s gap: a 25 s noise timeline per user
    "world.chunk_seconds=4",
    "world.speech.source=folders",
    "world.noise.source=folder",
]


def make_speakers(root, speakers: int = 4, utterances: int = 10, seconds: float = 3.0) -> None:
    """A speaker-per-folder corpus: ``root/spk<k>/utt<u>.wav``."""
    for s in range(speakers):
        for u in range(utterances):
            path = root / f"spk{s}" / f"utt{u:02d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), _voice_like(seconds, 100 + 20 * s, u), SAMPLE_RATE)


def add_bad_speech_files(root) -> list[str]:
    """One bad file first in each of 4 speakers (so users and the pretraining pool both meet some)."""
    bad = [root / f"spk{s}" / name for s, name in enumerate(["a_empty", "a_silent", "a_nan", "a_corrupt"])]
    bad = [p.with_suffix(".wav") for p in bad]
    bad[0].write_bytes(b"")
    sf.write(str(bad[1]), np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    sf.write(str(bad[2]), np.full(SAMPLE_RATE, np.nan, dtype=np.float32), SAMPLE_RATE, subtype="FLOAT")
    bad[3].write_bytes(b"RIFF" + b"\x00" * 60)
    return [str(p) for p in bad]


def corpus_settings(tmp_path, *extra: str) -> list[str]:
    """``--set`` values of a tiny world from the corpora under ``tmp_path/speech`` and ``tmp_path/noise``."""
    return [
        *TINY_WORLD,
        *CORPUS_WORLD,
        f"world.speech.path={tmp_path / 'speech'}",
        f"world.noise.path={tmp_path / 'noise'}",
        f"world.cache_dir={tmp_path / 'cache'}",
        *extra,
    ]


def corpus_config(tmp_path, *extra: str):
    return tiny_config(tmp_path / "cache", *corpus_settings(tmp_path, *extra))


def skipped_rows(world) -> list[dict]:
    with open(world.root / "skipped_files.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def fedpse_world_build(settings: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """``fedpse world build --quiet --set ...`` in a fresh interpreter (a hang fails the test, not the session)."""
    argv = [sys.executable, "-m", "fedpse.cli", "world", "build", "--quiet"]
    for s in settings:
        argv += ["--set", s]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------ worker errors
def test_audio_errors_survive_the_trip_back_from_a_worker_process():
    err = pickle.loads(pickle.dumps(AudioError("/data/a.wav", "utterance is silent")))
    assert isinstance(err, AudioError)
    assert (err.path, err.reason) == ("/data/a.wav", "utterance is silent")
    assert str(err) == "/data/a.wav: utterance is silent"


def test_a_silent_file_met_by_a_worker_stops_a_two_process_build_at_once_naming_it(tmp_path):
    make_speakers(tmp_path / "speech")
    for s in range(4):  # last in every speaker: only the pretraining jobs (in the worker processes) read it
        sf.write(str(tmp_path / "speech" / f"spk{s}" / "zz_silent.wav"), np.zeros(SAMPLE_RATE), SAMPLE_RATE)
    make_noise_folder(tmp_path / "noise", places=4, seconds=30.0)
    done = fedpse_world_build(corpus_settings(tmp_path, "world.workers=2"))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedpse: error: "), done.stderr
    assert "zz_silent.wav: utterance is silent" in lines[0]
    assert "set world.speech.skip_bad_files=true" in lines[0]


def test_an_error_that_cannot_be_pickled_still_comes_back_as_its_message(monkeypatch):
    from fedpse.world import workers

    class PickyError(ValueError):
        def __init__(self, path, reason):
            super().__init__(f"{path}: {reason}")

    def boom(job):
        raise PickyError("/data/x.wav", "no good")

    monkeypatch.setitem(workers._JOBS, "boom", boom)
    with pytest.raises(ValueError, match=r"^/data/x.wav: no good$") as err:
        workers._run_job({"kind": "boom"})
    pickle.loads(pickle.dumps(err.value))


# ---------------------------------------------------------------------------------------- bad speech files
def test_bad_speech_files_are_refused_by_default_naming_the_first_and_the_skip_key(tmp_path):
    make_speakers(tmp_path / "speech")
    add_bad_speech_files(tmp_path / "speech")
    make_noise_folder(tmp_path / "noise", places=4, seconds=30.0)
    with pytest.raises(ValueError, match=r"a_\w+\.wav: .*set world\.speech\.skip_bad_files=true") as err:
        build_world(corpus_config(tmp_path), progress=False)
    assert "\n" not in str(err.value)


def test_skip_bad_files_builds_without_them_and_lists_each_with_its_reason(tmp_path, capsys):
    make_speakers(tmp_path / "speech")
    bad = add_bad_speech_files(tmp_path / "speech")
    make_noise_folder(tmp_path / "noise", places=4, seconds=30.0)
    world = build_world(corpus_config(tmp_path, "world.speech.skip_bad_files=true"), progress=False)
    reasons = {r["path"]: r["reason"] for r in skipped_rows(world)}
    assert sorted(reasons) == sorted(bad)
    assert "empty" in reasons[bad[0]] and "silent" in reasons[bad[1]] and "NaN" in reasons[bad[2]]
    assert world.manifest["skipped_files"] == [{"path": p, "reason": r} for p, r in reasons.items()]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 4 bad audio file(s)" in err[0] and "skipped_files.csv" in err[0]
    used = {f for u in world.user_ids() for f in world.user(u)["texts"]["adapt"]}
    used |= {f for u in world.user_ids() for m in world.user(u)["texts"]["test"] for f in m}
    used |= {i["text"] for e in world.manifest["pretrain_speech"] for i in e["items"]}
    assert used and not used & set(bad)


def test_the_skip_settings_leave_the_keys_of_worlds_built_before_them_alone(tmp_path):
    base = world_key(tiny_config(tmp_path))
    assert base.startswith("25f152f8d4c0")  # the tiny world's key before these settings existed
    for setting in ("speech.skip_bad_files=true", "noise.skip_bad_files=true", "noise.min_rms_dbfs=-70"):
        assert world_key(tiny_config(tmp_path, f"world.{setting}")) != base  # they change which audio is used


# ------------------------------------------------------------------------------------------ bad noise files
def corpus_with_quiet_recordings(tmp_path) -> list[Path]:
    """Speakers and 4 noise places, each with an all-zero recording first (whichever places the users get, they
    meet it)."""
    make_speakers(tmp_path / "speech")
    make_noise_folder(tmp_path / "noise", places=4, seconds=30.0)
    quiet = [tmp_path / "noise" / f"place{p}" / "a_quiet.wav" for p in range(4)]
    for path in quiet:
        sf.write(str(path), np.zeros(8 * SAMPLE_RATE), SAMPLE_RATE)
    return quiet


def test_a_silent_noise_recording_is_an_error_naming_it_never_a_noise_free_noisy_chunk(tmp_path):
    corpus_with_quiet_recordings(tmp_path)
    with pytest.raises(
        ValueError, match=r"a_quiet\.wav: noise recording is silent.*noise\.skip_bad_files=true"
    ):
        build_world(corpus_config(tmp_path), progress=False)


def test_skipped_silent_noise_recordings_are_listed_and_every_mixture_has_noise(tmp_path):
    quiet = corpus_with_quiet_recordings(tmp_path)
    world = build_world(corpus_config(tmp_path, "world.noise.skip_bad_files=true"), progress=False)
    listed = {r["path"] for r in skipped_rows(world)}
    assert listed and listed <= {
        str(p) for p in quiet
    }  # the places the world uses; a spare place is not read
    for uid in world.user_ids():
        assert not listed & set(world.user(uid)["place"]["files"])
        for noisy, clean in world.test_set(uid):
            assert np.mean((noisy - clean) ** 2) > 1e-6


def test_mixing_silent_noise_is_refused_rather_than_recorded_at_a_fake_snr():
    from fedpse.world.users import mix_at_snr

    speech = _voice_like(1.0, 120, 0)
    with pytest.raises(ValueError, match=r"the noise is silent .* at 5\.0 dB SNR"):
        mix_at_snr(speech, speech, np.zeros_like(speech), 5.0)


def test_a_silent_stretch_of_a_noise_recording_is_named_by_user_chunk_and_place(tmp_path):
    make_speakers(tmp_path / "speech")
    rng = np.random.default_rng(0)
    for p in range(4):  # loud enough overall, but digital silence where the users' first chunks come from
        noise = 0.05 * rng.standard_normal(30 * SAMPLE_RATE).astype(np.float32)
        noise[: 6 * SAMPLE_RATE] = 0.0
        (tmp_path / "noise" / f"place{p}").mkdir(parents=True)
        sf.write(str(tmp_path / "noise" / f"place{p}" / "rec.wav"), noise, SAMPLE_RATE)
    with pytest.raises(
        ValueError, match=r"user u000\d adapt_000: noise place 'place\d' .* is silent from 0\.0"
    ):
        build_world(corpus_config(tmp_path), progress=False)


def test_a_noise_place_too_short_for_a_users_timeline_is_an_error_naming_it(tmp_path):
    make_speakers(tmp_path / "speech")
    make_noise_folder(tmp_path / "noise", places=6, seconds=30.0)
    make_noise_folder(tmp_path / "short", places=1, seconds=10.0)
    (tmp_path / "short" / "place0").rename(tmp_path / "noise" / "kitchen")
    with pytest.raises(ValueError, match=r"noise place 'kitchen' has 10\.0 s.*needs 25\.0 s") as err:
        build_world(corpus_config(tmp_path), progress=False)
    assert "\n" not in str(err.value) and "world.noise.skip_bad_files=true" in str(err.value)
    world = build_world(corpus_config(tmp_path, "world.noise.skip_bad_files=true"), progress=False)
    assert [r["reason"].split(" has")[0] for r in skipped_rows(world)] == ["noise place 'kitchen'"]


# ------------------------------------------------------------------------------------- unwritable folders
def test_a_cache_dir_that_cannot_be_written_is_a_one_line_error_naming_the_key(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    done = fedpse_world_build([f"world.cache_dir={tmp_path / 'a_file' / 'cache'}"])
    assert done.returncode == 2
    assert done.stderr.startswith(f"fedpse: error: {tmp_path / 'a_file' / 'cache'}")
    assert "not writable" in done.stderr and "set world.cache_dir to a folder you can write" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_ensure_writable_dir_creates_the_folder_or_names_the_key(tmp_path):
    from fedpse.paths import UnwritableDirError, ensure_writable_dir

    assert ensure_writable_dir(tmp_path / "a" / "b", "run.dir") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(UnwritableDirError, match=r"file/sub: not writable \(.*\); set run\.dir to a folder"):
        ensure_writable_dir(tmp_path / "file" / "sub", "run.dir")
    with pytest.raises(UnwritableDirError, match="set run.dir"):
        ensure_writable_dir("/proc/fedpse-test", "run.dir")


def test_ensure_writable_dir_refuses_a_read_only_folder(tmp_path):
    from fedpse.paths import UnwritableDirError, ensure_writable_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes")
        with pytest.raises(UnwritableDirError, match="ro: not writable"):
            ensure_writable_dir(ro, "world.cache_dir")
    finally:
        ro.chmod(0o700)
