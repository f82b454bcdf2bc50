"""Voice augmentation for pretraining: each transform does what it claims (the warp scales pitch, the all-pass keeps
the magnitude spectrum), the draws are seeded, and a pool with ``voice_augment=0`` mixes exactly the old batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpse.audio.io import SAMPLE_RATE
from fedpse.config import ConfigError, load_config
from fedpse.distill.voice_augment import TRANSFORMS, _allpass, augment_voice


def _tone(f0: float, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * SAMPLE_RATE / len(x))


class _OnlyWarp:
    """An rng stand-in that picks the warp alone, at a chosen factor (log-uniform draw returns log(w))."""

    def __init__(self, w: float):
        self.w = w

    def random(self, k):
        return np.array([0.0] + [1.0] * (k - 1))  # < 0.5 only for "warp"

    def uniform(self, lo, hi):
        return float(np.log(self.w))


@pytest.mark.parametrize("w", [0.85, 1.15])
def test_warp_scales_pitch_by_its_factor(w):
    tone = _tone(200.0, 3.0)
    n = SAMPLE_RATE
    y = augment_voice(lambda m: tone[:m], _OnlyWarp(w), n)
    assert y.shape == (n,) and y.dtype == np.float32
    assert abs(_peak_hz(y) - 200.0 * w) < 3.0  # read at w × the rate: 200 Hz becomes 200·w Hz


def test_allpass_keeps_the_magnitude_and_changes_the_waveform():
    rng = np.random.default_rng(3)
    impulse = np.zeros(8192)
    impulse[0] = 1.0
    h = _allpass(impulse, rng)
    mag = np.abs(np.fft.rfft(h))
    assert np.allclose(mag, 1.0, atol=1e-6)
    pulse = np.zeros(4000)
    pulse[::80] = 1.0  # a 200 Hz pulse train: espeak-like excitation
    y = _allpass(pulse, np.random.default_rng(4))
    assert np.corrcoef(pulse, y)[0, 1] < 0.9  # the pulse shape is not kept


def test_augmentation_is_seeded_finite_and_keeps_length():
    src = np.random.default_rng(0).standard_normal(80000).astype(np.float32) * 0.1
    a = [augment_voice(lambda m: src[:m], np.random.default_rng([7, i]), 24000) for i in range(12)]
    b = [augment_voice(lambda m: src[:m], np.random.default_rng([7, i]), 24000) for i in range(12)]
    for x, y in zip(a, b, strict=True):
        assert x.shape == (24000,) and np.isfinite(x).all()
        assert np.array_equal(x, y)
    # every draw changes the speech (at least one transform is always applied)
    assert all(not np.allclose(x, src[:24000]) for x in a)
    assert set(TRANSFORMS) == {"warp", "phase", "eq", "breath"}


def test_pool_with_voice_augment_off_mixes_the_old_batches(tiny_world):
    from fedpse.distill.pretrain import MixingPool

    _, world = tiny_world
    speech, noise = world.pretrain_speech_files("train"), world.pretrain_noise_files("train")
    plain, off = MixingPool(speech, noise), MixingPool(speech, noise, voice_augment=0.0)
    a = plain.batch(np.random.default_rng(5), 3, 16000, (0.0, 5.0))
    b = off.batch(np.random.default_rng(5), 3, 16000, (0.0, 5.0))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))

    on = MixingPool(speech, noise, voice_augment=1.0)
    noisy, clean = on.batch(np.random.default_rng(5), 3, 16000, (0.0, 5.0))
    assert torch.isfinite(noisy).all() and torch.isfinite(clean).all()
    assert not torch.equal(clean, a[1])  # new voices
    assert noisy.shape == a[0].shape


def test_voice_augment_out_of_range_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"pretrain.voice_augment"):
        load_config(overrides=["pretrain.voice_augment=1.5"])
