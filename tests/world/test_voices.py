"""The generated speech world's voices and sentences: espeak-ng voices that are seeded, deterministic, distinct."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world.text import sentence, sentences, vocabulary
from fedpse.world.voices import (
    EDGE_SILENCE_SECONDS,
    TARGET_ACTIVE_RMS,
    Voice,
    VoiceError,
    distinctness_report,
    get_synthesizer,
    render_utterance,
    sample_voices,
    voice_statistics,
)

TEXT = "Please bring the red umbrella to the station before Monday."
PLAIN = Voice("plain", "m3", formant_scale=1.0, pitch=95, pitch_range=40, speed_wpm=165, breathiness=0.0)
# exercises every stateful espeak feature: flutter, roughness, breath noise
LIVELY = Voice(
    "lively",
    "f2",
    1.04,
    170,
    70,
    150,
    0.6,
    (1.02, 0.97, 1.0),
    flutter=8,
    roughness=5,
    brightness_db_per_octave=2,
)
KLATT = Voice("klatt", "adam", 0.97, 100, 45, 175, 0.4)


def _digest(audio: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(audio).tobytes()).hexdigest()


def test_render_returns_finite_float32_16khz_speech_of_plausible_length():
    audio = get_synthesizer().render(PLAIN, TEXT)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.all(np.isfinite(audio))
    seconds = len(audio) / SAMPLE_RATE
    assert 1.5 < seconds < 6.0  # ten words at 165 wpm
    edge = int(EDGE_SILENCE_SECONDS * SAMPLE_RATE)
    assert np.max(np.abs(audio[: edge - 16])) < 1e-3 and np.max(np.abs(audio[-edge + 16 :])) < 1e-3
    assert np.max(np.abs(audio[edge : edge + 1600])) > 0.01  # speech starts right after the lead-in
    assert 0.3 * TARGET_ACTIVE_RMS < np.sqrt(np.mean(audio**2)) < 1.2 * TARGET_ACTIVE_RMS
    assert np.max(np.abs(audio)) < 1.0


def test_same_voice_and_text_give_identical_samples_in_any_order():
    synth = get_synthesizer()
    first = {v.voice_id: _digest(synth.render(v, TEXT)) for v in (LIVELY, KLATT, PLAIN)}
    synth.render(PLAIN, "Something else in between, with 42 numbers.")
    again = {v.voice_id: _digest(synth.render(v, TEXT)) for v in (PLAIN, KLATT, LIVELY)}
    assert first == again
    assert len(set(first.values())) == 3


def test_rendering_is_identical_in_a_fresh_process():
    code = (
        "import hashlib, json, sys; from fedpse.world.voices import Voice, get_synthesizer; "
        "v = Voice.from_dict(json.loads(sys.argv[1])); "
        "print(hashlib.sha1(get_synthesizer().render(v, sys.argv[2]).tobytes()).hexdigest())"
    )
    command = [sys.executable, "-c", code, json.dumps(LIVELY.to_dict()), TEXT]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == _digest(get_synthesizer().render(LIVELY, TEXT))


def _job(index: int) -> str:
    return _digest(get_synthesizer().render((PLAIN, LIVELY)[index % 2], TEXT))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_forked_workers_render_the_same_audio_as_the_parent():
    expected = [_job(i) for i in range(2)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(_job, range(4)) == expected * 2


def test_pitch_and_formant_scale_change_the_measured_statistics():
    synth = get_synthesizer()
    texts = ["Where did Anna find the old wooden ladder?", "We counted twelve bright yellow lemons."]

    def stats(voice: Voice) -> dict[str, float]:
        return voice_statistics([synth.render(voice, t) for t in texts])

    low, high = stats(dataclasses.replace(PLAIN, pitch=85)), stats(dataclasses.replace(PLAIN, pitch=150))
    assert high["f0_median_hz"] > 1.4 * low["f0_median_hz"]
    short, long = (
        stats(dataclasses.replace(PLAIN, formant_scale=1.12)),
        stats(dataclasses.replace(PLAIN, formant_scale=0.9)),
    )
    assert short["f2_hz"] > 1.08 * long["f2_hz"] and short["f3_hz"] > 1.08 * long["f3_hz"]
    assert short["spectral_centroid_hz"] > long["spectral_centroid_hz"]
    breathy = stats(dataclasses.replace(PLAIN, breathiness=1.0))
    assert breathy["aperiodicity"] > stats(PLAIN)["aperiodicity"] + 0.05


def test_sample_voices_is_seeded_and_pools_do_not_collide():
    a = sample_voices(12, np.random.default_rng(3), "train")
    assert a == sample_voices(12, np.random.default_rng(3), "train")
    assert a != sample_voices(12, np.random.default_rng(4), "train")
    b = sample_voices(12, np.random.default_rng(3), "test")
    ids_a, ids_b = {v.voice_id for v in a}, {v.voice_id for v in b}
    assert len(ids_a) == 12 and len(ids_b) == 12 and not ids_a & ids_b
    assert len({(v.base, v.pitch, v.formant_scale) for v in a}) == 12  # no two alike
    assert {v.pitch < 130 for v in sample_voices(30, np.random.default_rng(0), "mix")} == {True, False}


def test_voice_round_trips_through_json_and_rejects_bad_specs():
    voice = sample_voices(1, np.random.default_rng(1), "user")[0]
    assert Voice.from_dict(json.loads(json.dumps(voice.to_dict()))) == voice
    with pytest.raises(VoiceError, match="breathiness"):
        Voice.from_dict({**voice.to_dict(), "breathiness": 1.5})
    with pytest.raises(VoiceError, match="unknown voice field"):
        Voice.from_dict({**voice.to_dict(), "colour": "blue"})
    with pytest.raises(VoiceError, match="base"):
        dataclasses.replace(voice, base="no-such-variant")
    with pytest.raises(ValueError, match="text"):
        get_synthesizer().render(voice, "   ")


def test_sentence_grammar_is_seeded_and_varied():
    assert sentences(20, np.random.default_rng(9)) == sentences(20, np.random.default_rng(9))
    many = sentences(300, np.random.default_rng(1))
    assert len(set(many)) > 290
    assert any(s.endswith("?") for s in many) and any(s.endswith(".") for s in many)
    assert any(any(c.isdigit() for c in s) for s in many)
    lengths = [len(s.split()) for s in many]
    assert min(lengths) >= 4 and max(lengths) <= 18
    assert len(vocabulary()) >= 300
    assert isinstance(sentence(np.random.default_rng(0)), str)


def test_render_utterance_and_distinctness_report():
    text, audio = render_utterance(LIVELY, np.random.default_rng(2))
    assert text and len(audio) > SAMPLE_RATE
    voices = sample_voices(4, np.random.default_rng(11), "d")
    report = distinctness_report(voices, 3, np.random.default_rng(5))
    assert report["n_voices"] == 4 and set(report["fisher_ratio"]) == set(report["statistics"])
    assert report["fisher_ratio"]["f0_median_hz"] > 1.0
    assert report["nearest_centroid_accuracy"] > report["chance_accuracy"]
    assert report["mean_nearest_neighbour_distance"] > 0
