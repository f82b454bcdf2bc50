"""Procedural noise places: reproducible, seamless on one timeline, at nominal level, and distinct per family."""

import json

import numpy as np
import pytest
from scipy.ndimage import median_filter
from scipy.signal import welch
from scipy.stats import kurtosis

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world.noise import (
    BLOCK_SAMPLES,
    FAMILIES,
    NOMINAL_RMS,
    BabbleBank,
    Environment,
    render,
    sample_environment,
)


def make_bank(talkers: int = 6, seconds: float = 30.0, seed: int = 0) -> BabbleBank:
    """Stand-in speech: gliding harmonic tones with syllable-rate on/off envelopes (no TTS needed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    voices = []
    for _ in range(talkers):
        f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
        syllables = np.maximum(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0)
        voices.append((0.1 * voiced * syllables).astype(np.float32))
    return BabbleBank(voices)


BANK = make_bank()


def place(family: str, index: int = 0, **wanted) -> Environment:
    """The ``index``-th place of ``family`` drawn from a fixed stream, optionally with given recipe values."""
    rng = np.random.default_rng(1234)
    found = 0
    for _ in range(200):
        env = sample_environment(family, rng, env_id=f"{family}-{found}")
        if all(env.params.get(key) == value for key, value in wanted.items()):
            if found == index:
                return env
            found += 1
    raise AssertionError(f"no {family} place with {wanted}")


def spectrum(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return welch(audio.astype(np.float64), fs=SAMPLE_RATE, nperseg=4096)


def peak_prominence_db(audio: np.ndarray) -> float:
    """Strongest narrow spectral line above its local (±160 Hz) median floor."""
    _, psd = spectrum(audio)
    return float(10 * np.log10(np.max(psd[5:] / median_filter(psd, 41)[5:])))


def low_fraction(audio: np.ndarray, below_hz: float = 500.0) -> float:
    freqs, psd = spectrum(audio)
    return float(psd[freqs < below_hz].sum() / psd.sum())


def rms_db(audio: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) / NOMINAL_RMS))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_renders_finite_audio_at_nominal_level(family):
    # Sparse places (passing cars, clatter) need a longer stretch for their long-term level to show.
    seconds = 90.0 if family in ("traffic", "clatter") else 20.0
    for index in range(2):
        audio = render(place(family, index), start_s=3.0, seconds=seconds, bank=BANK)
        assert audio.dtype == np.float32 and audio.shape == (round(seconds * SAMPLE_RATE),)
        assert np.all(np.isfinite(audio))
        assert abs(rms_db(audio)) < 3.0, f"{family} #{index}: level {rms_db(audio):+.1f} dB from nominal"


@pytest.mark.parametrize("family", FAMILIES)
def test_timeline_property_holds_at_unaligned_offsets(family):
    env = place(family)
    long = render(env, 0.0, 9.0, bank=BANK)
    for start_samples, length_samples in [(21395, 40001), (16383, 2), (99_999, 44_001), (1, 143_999)]:
        piece = render(env, start_samples / SAMPLE_RATE, length_samples / SAMPLE_RATE, bank=BANK)
        expected = long[start_samples : start_samples + length_samples]
        np.testing.assert_allclose(piece, expected, rtol=0, atol=1e-6)
    # Far along the timeline too: an hour in, rendered from two different starting points.
    hour = render(env, 3600.0, 5.0, bank=BANK)
    np.testing.assert_allclose(
        render(env, 3602.5003125, 2.0, bank=BANK), hour[40005 : 40005 + 32000], atol=1e-6
    )


def test_consecutive_chunks_tile_the_timeline_seamlessly():
    for family in FAMILIES:
        env = place(family)
        chunks = [
            render(env, 1.25, 0.8, bank=BANK),
            render(env, 2.05, 1.7, bank=BANK),
            render(env, 3.75, 2.5, bank=BANK),
        ]
        np.testing.assert_allclose(np.concatenate(chunks), render(env, 1.25, 5.0, bank=BANK), atol=1e-6)


def test_block_edges_are_inaudible():
    """No step at the internal generation-block edges: smooth places stay smooth across them."""
    for env in (place("stationary", colour="brown"), place("hum"), place("babble")):
        steps = np.abs(np.diff(render(env, 0, 20, bank=BANK).astype(np.float64)))
        edges = np.arange(1, 19) * BLOCK_SAMPLES - 1
        assert steps[edges].max() < 4 * np.sqrt(np.mean(steps**2)), env.family


def test_same_place_renders_identically_and_survives_json():
    for family in FAMILIES:
        env = place(family)
        again = Environment.from_dict(json.loads(json.dumps(env.to_dict())))
        assert again == env
        first = render(env, 10.0, 2.0, bank=BANK)
        np.testing.assert_array_equal(first, render(again, 10.0, 2.0, bank=BANK))


def test_a_place_is_fully_determined_by_the_generator_state():
    a = sample_environment("music", np.random.default_rng(7), env_id="cafe")
    b = sample_environment("music", np.random.default_rng(7), env_id="cafe")
    assert a == b
    assert a.params and json.loads(json.dumps(a.params)) == a.params


@pytest.mark.parametrize("family", FAMILIES)
def test_different_seeds_give_different_places(family):
    first, second = render(place(family, 0), 0, 4, bank=BANK), render(place(family, 1), 0, 4, bank=BANK)
    assert place(family, 0).seed != place(family, 1).seed
    assert np.corrcoef(first, second)[0, 1] < 0.5
    assert not np.allclose(first, second, atol=1e-3)


def test_stationary_colours_differ_where_expected():
    white = render(place("stationary", colour="white"), 0, 8)
    brown = render(place("stationary", colour="brown"), 0, 8)
    assert low_fraction(brown) > 0.8  # brown noise: energy piled into the low frequencies
    assert low_fraction(white) < 0.15  # white: spread evenly up to 8 kHz (500 Hz is 1/16 of the band)
    assert peak_prominence_db(white) < 8.0 and abs(kurtosis(white)) < 0.3


def test_hum_and_music_have_strong_narrow_lines_unlike_noise():
    for index in range(3):
        assert peak_prominence_db(render(place("hum", index), 0, 8)) > 15.0
        assert peak_prominence_db(render(place("music", index), 0, 8)) > 15.0
        assert peak_prominence_db(render(place("stationary", index), 0, 8)) < 8.0


def test_clatter_is_impulsive_and_traffic_is_low_rumble():
    for index in range(3):
        clatter = render(place("clatter", index), 0, 30)
        assert kurtosis(clatter) > 10.0  # sparse transients over a quiet floor
        assert np.max(np.abs(clatter)) / np.sqrt(np.mean(clatter**2)) > 10.0
        assert low_fraction(render(place("traffic", index), 0, 30)) > 0.6


def test_babble_comes_from_the_callers_bank():
    env = place("babble")
    with pytest.raises(ValueError, match="babble place: pass bank=BabbleBank"):
        render(env, 0, 1)
    other = render(env, 0, 4, bank=make_bank(seed=1))
    assert np.corrcoef(render(env, 0, 4, bank=BANK), other)[0, 1] < 0.5
    assert BabbleBank.required_seconds(600) >= 600


def test_bad_inputs_raise_actionable_errors():
    with pytest.raises(ValueError, match="unknown noise family 'jackhammer'.*stationary"):
        sample_environment("jackhammer", np.random.default_rng(0), env_id="x")
    with pytest.raises(ValueError, match="unknown noise family"):
        Environment.from_dict({"env_id": "x", "family": "jackhammer", "seed": 1, "params": {}})
    with pytest.raises(ValueError, match="missing"):
        Environment.from_dict({"env_id": "x", "family": "hum"})
    with pytest.raises(ValueError, match=">= 0"):
        render(place("hum"), -1.0, 1.0)
    with pytest.raises(ValueError, match="at least one talker"):
        BabbleBank([])
    with pytest.raises(ValueError, match="talker 0"):
        BabbleBank([np.zeros(SAMPLE_RATE * 2, dtype=np.float32)])
    assert render(place("hum"), 5.0, 0.0).shape == (0,)
