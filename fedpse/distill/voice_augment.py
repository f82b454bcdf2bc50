"""Voice augmentation for pretraining: make a new voice out of a pool speaker's clean speech.

The world's pretraining voices all come from one synthesizer (espeak-ng's formant synthesis). A model trained on
them alone learns that synthesizer's waveform: its pulse-shaped excitation, its formant bandwidths, its spectral
balance. ``augment_voice`` changes each of those so the model has to learn speech rather than espeak (measured
by ``simulations/heldout.py`` on a world whose voices come from a neural synthesizer no model trained on). Each
transform is applied with probability 1/2 (at least one always is):

- **warp**: read the speech as if it had been recorded at w × the rate (w in ``WARP``, log-uniform): pitch, formants
  (the vocal-tract length) and speaking rate all scale by w;
- **phase**: a cascade of 2–4 random second-order all-pass sections: the magnitude spectrum is unchanged, the shape
  of each glottal pulse is not (a different excitation);
- **eq**: 2–3 random peaking filters (150 Hz – 6 kHz, ±``EQ_DB`` dB) and a first-order tilt: another vocal-tract
  and microphone colour;
- **breath**: aspiration noise (high-passed white noise following the speech's envelope, ``BREATH_DB`` below it):
  a breathier voice.

The result is the *clean* speech of the new voice: the pretraining target is the same augmented signal (the model
must keep the voice, not undo the augmentation). Everything is drawn from the caller's ``rng``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
from scipy.signal import lfilter, resample_poly, sosfilt

from fedpse.audio.io import SAMPLE_RATE

WARP = (0.85, 1.18)  # pitch-and-formant factor range (log-uniform)
EQ_DB = 8.0  # peaking-filter gain range ±dB
BREATH_DB = (-28.0, -14.0)  # aspiration noise level relative to the speech
TRANSFORMS = ("warp", "phase", "eq", "breath")


def _allpass(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """2–4 random second-order all-pass sections (poles at radius 0.5–0.95, any angle): unit magnitude response."""
    sos = []
    for _ in range(int(rng.integers(2, 5))):
        r, theta = rng.uniform(0.5, 0.95), rng.uniform(0.05, math.pi - 0.05)
        a1, a2 = -2 * r * math.cos(theta), r * r
        sos.append([a2, a1, 1.0, 1.0, a1, a2])
    return sosfilt(np.array(sos), x)


def _peaking(f0: float, gain_db: float, q: float) -> list[float]:
    """An RBJ-cookbook peaking biquad as one second-order section (normalised a0 = 1)."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / SAMPLE_RATE
    alpha = math.sin(w0) / (2 * q)
    b = [1 + alpha * a, -2 * math.cos(w0), 1 - alpha * a]
    den = [1 + alpha / a, -2 * math.cos(w0), 1 - alpha / a]
    return [b[0] / den[0], b[1] / den[0], b[2] / den[0], 1.0, den[1] / den[0], den[2] / den[0]]


def _eq(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sos = [
        _peaking(
            math.exp(rng.uniform(math.log(150.0), math.log(6000.0))),
            rng.uniform(-EQ_DB, EQ_DB),
            rng.uniform(0.5, 2.0),
        )
        for _ in range(int(rng.integers(2, 4)))
    ]
    y = sosfilt(np.array(sos), x)
    tilt = rng.uniform(-0.5, 0.5)  # y[t] + tilt·y[t−1]: a gentle spectral slope either way
    return lfilter([1.0, tilt], [1.0], y)


def _breath(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    win = int(0.02 * SAMPLE_RATE)
    env = np.sqrt(np.convolve(x**2, np.ones(win) / win, mode="same") + 1e-12)  # 20 ms RMS envelope
    noise = lfilter([1.0, -0.95], [1.0], rng.standard_normal(len(x)))  # high-passed: aspiration, not hum
    noise *= env / (math.sqrt(float(np.mean(noise**2))) + 1e-12)
    level = 10 ** (rng.uniform(*BREATH_DB) / 20)
    return x + level * noise


def augment_voice(speech: Callable[[int], np.ndarray], rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` samples of a new voice made from ``speech(m)`` (a function returning m clean samples of a pool
    speaker); float32, not level-normalised (the mixing that follows sets the level)."""
    picks = rng.random(len(TRANSFORMS)) < 0.5
    if not picks.any():
        picks[rng.integers(len(TRANSFORMS))] = True
    use = dict(zip(TRANSFORMS, picks, strict=True))
    if use["warp"]:
        w = Fraction(math.exp(rng.uniform(math.log(WARP[0]), math.log(WARP[1])))).limit_denominator(40)
        # m samples read at w × the rate become m / w samples at the rate
        m = math.ceil(n * w) + 64
        x = resample_poly(speech(m).astype(np.float64), w.denominator, w.numerator)[:n]
        if len(x) < n:  # rounding: pad with the last samples' silence
            x = np.pad(x, (0, n - len(x)))
    else:
        x = speech(n).astype(np.float64)
    if use["phase"]:
        x = _allpass(x, rng)
    if use["eq"]:
        x = _eq(x, rng)
    if use["breath"]:
        x = _breath(x, rng)
    return np.ascontiguousarray(x, dtype=np.float32)
