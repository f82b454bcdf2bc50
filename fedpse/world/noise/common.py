"""Shared synthesis machinery of the noise families: block randomness, FIR design, overlap-save filtering, slow
control curves, and the constants every family renders against (block size, nominal level, random streams)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.fft as sp_fft
from scipy.signal.windows import hann

from fedpse.audio.io import SAMPLE_RATE

NOMINAL_RMS = 0.05
BLOCK_SAMPLES = 16384  # generation block (1.024 s); a render costs whole blocks
FFT_SIZE = 20480  # overlap-save FFT: one block plus the filter history
HISTORY = FFT_SIZE - BLOCK_SAMPLES  # samples of the previous block each FIR block needs
MAX_TAPS = HISTORY + 1
CONTROL_STEP = 64  # slow modulations are computed every 64 samples (4 ms) and linearly interpolated
NYQUIST_SAFE_HZ = 7600.0
SOUND_SPEED_MPS = 343.0
TWO_PI = 2.0 * math.pi

# Component streams: each random part of a place draws from its own (seed, stream, block) generator.
S_NOISE, S_ROOM, S_EVENTS, S_TIMBRE, S_CALIBRATE, S_MUSIC = 1, 2, 3, 4, 5, 6


def block_rng(seed: int, stream: int, block: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, block % 2**64])


def loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def colour_magnitude(
    f: np.ndarray,
    slope: float,
    highpass_hz: float,
    lowpass_hz: float | None = None,
    lowpass_order: int = 2,
    eq: Sequence[dict] = (),
) -> np.ndarray:
    """|H(f)| of coloured noise: power slope f^-slope (0 white, 1 pink, 2 brown), 2nd-order high-pass, options."""
    fs = np.maximum(f, 1.0)
    mag = (fs / 1000.0) ** (-slope / 2.0)
    mag *= (fs / highpass_hz) ** 2 / np.sqrt(1.0 + (fs / highpass_hz) ** 4)
    if lowpass_hz is not None:
        mag /= np.sqrt(1.0 + (fs / lowpass_hz) ** (2 * lowpass_order))
    for band in eq:  # bell in log-frequency, about 1/q octaves wide
        bell = np.exp(-0.5 * (np.log2(fs / band["hz"]) * band["q"]) ** 2)
        mag *= 10.0 ** (band["gain_db"] * bell / 20.0)
    mag[0] = 0.0
    return mag


def design_fir(magnitude: Callable[[np.ndarray], np.ndarray], taps: int = MAX_TAPS) -> np.ndarray:
    """Linear-phase FIR (odd ``taps``) approximating ``magnitude(f_hz)`` by windowed frequency sampling."""
    grid = 65536
    h = sp_fft.irfft(magnitude(sp_fft.rfftfreq(grid, 1.0 / SAMPLE_RATE)), grid)
    half = taps // 2
    return np.concatenate([h[-half:], h[: half + 1]]) * hann(taps)


def fir_spectrum(h: np.ndarray) -> np.ndarray:
    """Overlap-save spectrum of ``h`` scaled to unit power gain (unit-variance white in -> unit variance out)."""
    if h.size > MAX_TAPS:
        raise ValueError(f"FIR of {h.size} taps exceeds the {MAX_TAPS}-tap block history")
    h = h / np.sqrt(np.sum(np.square(h, dtype=np.float64)))
    return sp_fft.rfft(h.astype(np.float32), FFT_SIZE)


def filter_blocks(x: np.ndarray, spectra: Sequence[np.ndarray], n_blocks: int) -> list[np.ndarray]:
    """Overlap-save: ``x`` is ``HISTORY`` samples of history then ``n_blocks`` blocks; one output per filter."""
    outs = [np.empty(n_blocks * BLOCK_SAMPLES, dtype=np.float32) for _ in spectra]
    for i in range(n_blocks):
        spec = sp_fft.rfft(x[i * BLOCK_SAMPLES : i * BLOCK_SAMPLES + FFT_SIZE])
        for out, h_spec in zip(outs, spectra, strict=True):
            out[i * BLOCK_SAMPLES : (i + 1) * BLOCK_SAMPLES] = sp_fft.irfft(spec * h_spec, FFT_SIZE)[HISTORY:]
    return outs


class NoiseSource:
    """Unit-variance white noise, seeded per block, through fixed FIR filters (one white source, many colours)."""

    def __init__(self, seed: int, stream: int, firs: Sequence[np.ndarray]):
        self.seed, self.stream = seed, stream
        self.spectra = [fir_spectrum(h) for h in firs]

    def blocks(self, k0: int, k1: int) -> list[np.ndarray]:
        white = np.concatenate(
            [
                block_rng(self.seed, self.stream, k).standard_normal(BLOCK_SAMPLES, dtype=np.float32)
                for k in range(k0 - 1, k1)
            ]
        )
        return filter_blocks(white[BLOCK_SAMPLES - HISTORY :], self.spectra, k1 - k0)


_RAMP = (np.arange(CONTROL_STEP) / CONTROL_STEP).astype(np.float32)


def interpolate_control(values: np.ndarray) -> np.ndarray:
    """Linear interpolation (float32) of control points every ``CONTROL_STEP`` samples, last point included."""
    values = values.astype(np.float32)
    return (values[:-1, None] + (values[1:] - values[:-1])[:, None] * _RAMP).ravel()


def control_curve(fn: Callable[[np.ndarray], np.ndarray], start: int, length: int) -> np.ndarray:
    """A slow function of absolute time (s), sampled on the absolute control grid and interpolated (float32)."""
    times = (start + CONTROL_STEP * np.arange(length // CONTROL_STEP + 1)) / SAMPLE_RATE
    return interpolate_control(fn(times))


def harmonic_sum(coefs: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Im(sum_k coefs[k-1] z^k) by Horner's rule: the harmonic series a_k sin(k*phase + theta_k), cheaply."""
    acc = np.full(z.shape, coefs[-1], dtype=np.complex64)
    for c in coefs[-2::-1]:
        acc *= z
        acc += c
    acc *= z
    return acc.imag


def unit_phasor(cycles: np.ndarray) -> np.ndarray:
    """exp(2*pi*i*cycles) in complex64, reducing the (float64, possibly huge) phase before float32 trigonometry."""
    angle = ((cycles - np.floor(cycles)) * TWO_PI).astype(np.float32)
    z = np.empty(cycles.shape, dtype=np.complex64)
    z.real = np.cos(angle)
    z.imag = np.sin(angle)
    return z


def uniform_db_power(spread_db: float) -> float:
    """E[a^2] for an amplitude a = 10^(u/20), u ~ U(-spread_db, spread_db)."""
    if spread_db <= 0:
        return 1.0
    width = 2.0 * spread_db * math.log(10.0) / 10.0
    return (10.0 ** (spread_db / 10.0) - 10.0 ** (-spread_db / 10.0)) / width
