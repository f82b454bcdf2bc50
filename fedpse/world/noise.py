"""Procedural noise *places*: reproducible recipes rendered on one infinite timeline.

An ``Environment`` is a place (a kitchen, a road, a server room): a family, a seed and the recipe parameters drawn
from that seed. ``render(env, start_s, seconds)`` returns any stretch of the place's timeline; the same absolute
time always gives the same samples, so disjoint time ranges (adaptation vs test audio) never share noise.

How the timeline is kept seamless: audio is made in fixed blocks of ``BLOCK_SAMPLES`` whose randomness is seeded by
(env seed, component, block index); oscillators, modulations and event onsets are functions of absolute time;
coloured noise is white noise through a fixed FIR filter, each block convolved with the previous block's tail
(overlap-save), so block edges are exactly those of one long filtered signal. A request is rendered on whole
blocks and sliced, so ``render(env, a, d)`` equals ``render(env, 0, a + d)[a * sr:]`` sample for sample.

Level: every recipe carries a fixed gain that puts its *long-term expected* RMS at ``NOMINAL_RMS`` (from the
recipe's statistics, never per-block normalisation, which would pump). Short stretches of sparse places (a quiet
road, an idle keyboard) are quieter or louder than nominal, as they would be in reality.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.fft as sp_fft
from scipy.signal import welch
from scipy.signal.windows import hann
from scipy.special import i0

from fedpse.audio.io import SAMPLE_RATE

FAMILIES = ("stationary", "babble", "hum", "clatter", "traffic", "music")
NOMINAL_RMS = 0.05
BLOCK_SAMPLES = 16384  # generation block (1.024 s); a render costs whole blocks
_FFT_SIZE = 20480  # overlap-save FFT: one block plus the filter history
_HISTORY = _FFT_SIZE - BLOCK_SAMPLES  # samples of the previous block each FIR block needs
_MAX_TAPS = _HISTORY + 1
_CONTROL_STEP = 64  # slow modulations are computed every 64 samples (4 ms) and linearly interpolated
_NYQUIST_SAFE_HZ = 7600.0
_SOUND_SPEED_MPS = 343.0
_TWO_PI = 2.0 * math.pi

# Component streams: each random part of a place draws from its own (seed, stream, block) generator.
_S_NOISE, _S_ROOM, _S_EVENTS, _S_TIMBRE, _S_CALIBRATE, _S_MUSIC = 1, 2, 3, 4, 5, 6


# --------------------------------------------------------------------------------------------------------------
# Public records


@dataclass(frozen=True)
class Environment:
    """A noise place: ``family`` + ``seed`` + JSON-serialisable recipe ``params`` (drawn from the seed)."""

    env_id: str
    family: str
    seed: int
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(
                f"environment {self.env_id!r}: unknown noise family {self.family!r}; expected one of {FAMILIES}"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(
                f"environment {self.env_id!r}: seed must be a non-negative integer, got {self.seed!r}"
            )

    def to_dict(self) -> dict:
        return {"env_id": self.env_id, "family": self.family, "seed": self.seed, "params": self.params}

    @classmethod
    def from_dict(cls, data: dict) -> Environment:
        missing = [key for key in ("env_id", "family", "seed", "params") if key not in data]
        if missing:
            raise ValueError(f"environment record is missing {missing}; got keys {sorted(data)}")
        if not isinstance(data["params"], dict):
            raise ValueError(f"environment {data['env_id']!r}: params must be a mapping")
        return cls(str(data["env_id"]), str(data["family"]), int(data["seed"]), dict(data["params"]))


class BabbleBank:
    """Long speech recordings, one per babble talker (float32, 16 kHz), supplied by the caller.

    A babble place plays talker j at absolute time t from bank sample ``(offset_j + t * sr) mod len(talker)``, so
    babble stays on the place's timeline. Talkers wrap around when the timeline outruns them; make each one at
    least ``BabbleBank.required_seconds(timeline_seconds)`` long for content never to repeat. Each talker is
    heard with 10 ms fades at its two ends, so a wrap-around is a brief dip rather than a click (the arrays are
    kept as given, not copied, when they are already float32).
    """

    def __init__(self, talkers: Sequence[np.ndarray]):
        if len(talkers) == 0:
            raise ValueError("BabbleBank needs at least one talker recording")
        self.talkers: list[np.ndarray] = []
        for j, audio in enumerate(talkers):
            audio = np.ascontiguousarray(audio, dtype=np.float32)
            if audio.ndim != 1 or audio.size < SAMPLE_RATE:
                raise ValueError(
                    f"BabbleBank talker {j}: expected mono audio of at least 1 s, got shape {audio.shape}"
                )
            if not np.all(np.isfinite(audio)) or not np.any(audio):
                raise ValueError(f"BabbleBank talker {j}: audio must be finite and not silent")
            self.talkers.append(audio)
        self._psd: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.talkers)

    @staticmethod
    def required_seconds(timeline_seconds: float) -> float:
        """Talker length (s) at which no bank sample is heard twice on a place's timeline [0, timeline_seconds)."""
        return float(timeline_seconds) + _HISTORY / SAMPLE_RATE

    def segment(self, talker: int, start: int, length: int) -> np.ndarray:
        """``length`` samples of one talker from absolute bank position ``start``, wrapping around its end."""
        audio, fade = self.talkers[talker], SAMPLE_RATE // 100
        start %= audio.size
        if fade <= start and start + length <= audio.size - fade:
            return audio[start : start + length]
        position = np.arange(start, start + length) % audio.size
        edge_gain = np.minimum(np.minimum(position, audio.size - 1 - position) / fade, 1.0)
        return audio[position] * edge_gain.astype(np.float32)

    def power_spectrum(self, talker: int) -> np.ndarray:
        """Welch PSD of a talker (first 30 s) on the 8192-point grid; sums to its mean power."""
        if talker not in self._psd:
            audio = self.talkers[talker][: 30 * SAMPLE_RATE].astype(np.float64)
            _, psd = welch(audio, fs=SAMPLE_RATE, nperseg=min(8192, audio.size), nfft=8192, detrend=False)
            self._psd[talker] = psd * (SAMPLE_RATE / 8192)
        return self._psd[talker]


# --------------------------------------------------------------------------------------------------------------
# Public functions


def sample_environment(family: str, rng: np.random.Generator, env_id: str) -> Environment:
    """Draw a new place of ``family``: a seed from ``rng``, then every recipe parameter from that seed."""
    if family not in FAMILIES:
        raise ValueError(f"unknown noise family {family!r}; expected one of {FAMILIES}")
    seed = int(rng.integers(0, 2**62))
    params = _DRAW[family](np.random.default_rng([seed, FAMILIES.index(family)]))
    return Environment(env_id=env_id, family=family, seed=seed, params=_jsonable(params))


def render(env: Environment, start_s: float, seconds: float, bank: BabbleBank | None = None) -> np.ndarray:
    """``seconds`` of the place's timeline from ``start_s`` (float32, 16 kHz, ``round(seconds * 16000)`` samples)."""
    if not (math.isfinite(start_s) and math.isfinite(seconds)) or start_s < 0 or seconds < 0:
        raise ValueError(f"render: start_s and seconds must be finite and >= 0, got {start_s}, {seconds}")
    return render_samples(env, round(start_s * SAMPLE_RATE), round(seconds * SAMPLE_RATE), bank)


def render_samples(env: Environment, start: int, length: int, bank: BabbleBank | None = None) -> np.ndarray:
    """Like ``render`` but in absolute sample indices (no rounding): samples ``[start, start + length)``."""
    if start < 0 or length < 0:
        raise ValueError(f"render: start and length must be >= 0, got {start}, {length}")
    if env.family == "babble" and bank is None:
        raise ValueError(
            f"environment {env.env_id!r} is a babble place: pass bank=BabbleBank(talkers) with speech to mix"
        )
    if length == 0:
        return np.zeros(0, dtype=np.float32)
    synth = _compiled(env.family, env.seed, json.dumps(env.params, sort_keys=True))
    k0, k1 = start // BLOCK_SAMPLES, (start + length - 1) // BLOCK_SAMPLES + 1
    audio = synth.blocks(k0, k1, bank)
    offset = start - k0 * BLOCK_SAMPLES
    return np.array(audio[offset : offset + length], dtype=np.float32)


# --------------------------------------------------------------------------------------------------------------
# Shared machinery: block randomness, FIR design, overlap-save filtering, slow control curves


def _block_rng(seed: int, stream: int, block: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, block % 2**64])


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _jsonable(value: Any) -> Any:
    """Recipe values as plain JSON types (numpy scalars -> Python, floats rounded to 6 significant digits)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(f"{float(value):.6g}")
    return value


def _colour_magnitude(
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


def _design_fir(magnitude: Callable[[np.ndarray], np.ndarray], taps: int = _MAX_TAPS) -> np.ndarray:
    """Linear-phase FIR (odd ``taps``) approximating ``magnitude(f_hz)`` by windowed frequency sampling."""
    grid = 65536
    h = sp_fft.irfft(magnitude(sp_fft.rfftfreq(grid, 1.0 / SAMPLE_RATE)), grid)
    half = taps // 2
    return np.concatenate([h[-half:], h[: half + 1]]) * hann(taps)


def _fir_spectrum(h: np.ndarray) -> np.ndarray:
    """Overlap-save spectrum of ``h`` scaled to unit power gain (unit-variance white in -> unit variance out)."""
    if h.size > _MAX_TAPS:
        raise ValueError(f"FIR of {h.size} taps exceeds the {_MAX_TAPS}-tap block history")
    h = h / np.sqrt(np.sum(np.square(h, dtype=np.float64)))
    return sp_fft.rfft(h.astype(np.float32), _FFT_SIZE)


def _filter_blocks(x: np.ndarray, spectra: Sequence[np.ndarray], n_blocks: int) -> list[np.ndarray]:
    """Overlap-save: ``x`` is ``_HISTORY`` samples of history then ``n_blocks`` blocks; one output per filter."""
    outs = [np.empty(n_blocks * BLOCK_SAMPLES, dtype=np.float32) for _ in spectra]
    for i in range(n_blocks):
        spec = sp_fft.rfft(x[i * BLOCK_SAMPLES : i * BLOCK_SAMPLES + _FFT_SIZE])
        for out, h_spec in zip(outs, spectra, strict=True):
            out[i * BLOCK_SAMPLES : (i + 1) * BLOCK_SAMPLES] = sp_fft.irfft(spec * h_spec, _FFT_SIZE)[
                _HISTORY:
            ]
    return outs


class _NoiseSource:
    """Unit-variance white noise, seeded per block, through fixed FIR filters (one white source, many colours)."""

    def __init__(self, seed: int, stream: int, firs: Sequence[np.ndarray]):
        self.seed, self.stream = seed, stream
        self.spectra = [_fir_spectrum(h) for h in firs]

    def blocks(self, k0: int, k1: int) -> list[np.ndarray]:
        white = np.concatenate(
            [
                _block_rng(self.seed, self.stream, k).standard_normal(BLOCK_SAMPLES, dtype=np.float32)
                for k in range(k0 - 1, k1)
            ]
        )
        return _filter_blocks(white[BLOCK_SAMPLES - _HISTORY :], self.spectra, k1 - k0)


_RAMP = (np.arange(_CONTROL_STEP) / _CONTROL_STEP).astype(np.float32)


def _interpolate_control(values: np.ndarray) -> np.ndarray:
    """Linear interpolation (float32) of control points every ``_CONTROL_STEP`` samples, last point included."""
    values = values.astype(np.float32)
    return (values[:-1, None] + (values[1:] - values[:-1])[:, None] * _RAMP).ravel()


def _control_curve(fn: Callable[[np.ndarray], np.ndarray], start: int, length: int) -> np.ndarray:
    """A slow function of absolute time (s), sampled on the absolute control grid and interpolated (float32)."""
    times = (start + _CONTROL_STEP * np.arange(length // _CONTROL_STEP + 1)) / SAMPLE_RATE
    return _interpolate_control(fn(times))


def _harmonic_sum(coefs: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Im(sum_k coefs[k-1] z^k) by Horner's rule: the harmonic series a_k sin(k*phase + theta_k), cheaply."""
    acc = np.full(z.shape, coefs[-1], dtype=np.complex64)
    for c in coefs[-2::-1]:
        acc *= z
        acc += c
    acc *= z
    return acc.imag


def _unit_phasor(cycles: np.ndarray) -> np.ndarray:
    """exp(2*pi*i*cycles) in complex64, reducing the (float64, possibly huge) phase before float32 trigonometry."""
    angle = ((cycles - np.floor(cycles)) * _TWO_PI).astype(np.float32)
    z = np.empty(cycles.shape, dtype=np.complex64)
    z.real = np.cos(angle)
    z.imag = np.sin(angle)
    return z


def _uniform_db_power(spread_db: float) -> float:
    """E[a^2] for an amplitude a = 10^(u/20), u ~ U(-spread_db, spread_db)."""
    if spread_db <= 0:
        return 1.0
    width = 2.0 * spread_db * math.log(10.0) / 10.0
    return (10.0 ** (spread_db / 10.0) - 10.0 ** (-spread_db / 10.0)) / width


# --------------------------------------------------------------------------------------------------------------
# stationary: coloured noise


def _draw_stationary(rng: np.random.Generator) -> dict:
    colour = str(rng.choice(["white", "pink", "brown", "between"], p=[0.2, 0.3, 0.2, 0.3]))
    slope = {"white": 0.0, "pink": 1.0, "brown": 2.0}.get(colour, rng.uniform(0.2, 1.8))
    eq = [
        {"hz": _loguniform(rng, 100, 6000), "gain_db": rng.uniform(-6, 6), "q": rng.uniform(0.7, 3.0)}
        for _ in range(int(rng.integers(0, 4)))
    ]
    return {
        "colour": colour,
        "slope": slope,
        "highpass_hz": _loguniform(rng, 15, 60),
        "lowpass_hz": None if rng.random() < 0.5 else _loguniform(rng, 2000, 7000),
        "lowpass_order": int(rng.integers(1, 4)),
        "eq": eq,
    }


class _Stationary:
    def __init__(self, seed: int, p: dict):
        fir = _design_fir(
            lambda f: _colour_magnitude(
                f, p["slope"], p["highpass_hz"], p["lowpass_hz"], p["lowpass_order"], p["eq"]
            )
        )
        self.noise = _NoiseSource(seed, _S_NOISE, [fir])

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        (noise,) = self.noise.blocks(k0, k1)
        return noise * np.float32(NOMINAL_RMS)


# --------------------------------------------------------------------------------------------------------------
# babble: several talkers from the caller's bank, mixed and coloured by a small room


def _draw_babble(rng: np.random.Generator) -> dict:
    n = int(rng.integers(3, 9))
    return {
        "talker_slots": [int(s) for s in rng.integers(0, 2**31, n)],
        "offset_fractions": rng.random(n),
        "gains_db": rng.uniform(-12, 0, n),
        "lowpass_hz": _loguniform(rng, 1500, 6000),
        "lowpass_order": int(rng.integers(1, 4)),
        "rt60_s": rng.uniform(0.15, 0.7),
        "drr_db": rng.uniform(-6, 6),
        "predelay_s": rng.uniform(0.002, 0.01),
    }


def _pick_talkers(slots: Sequence[int], bank_size: int) -> list[int]:
    """Distinct bank indices for the slots while the bank has enough talkers (then talkers are reused)."""
    picked: list[int] = []
    for slot in slots:
        index = slot % bank_size
        if len(set(picked)) < bank_size:
            while index in picked:
                index = (index + 1) % bank_size
        picked.append(index)
    return picked


class _Babble:
    def __init__(self, seed: int, p: dict):
        self.p = p
        lowpass = _design_fir(
            lambda f: _colour_magnitude(f, 0.0, 80.0, p["lowpass_hz"], p["lowpass_order"]), taps=513
        )
        rir = self._room_response(_block_rng(seed, _S_ROOM, 0), _MAX_TAPS - lowpass.size + 1)
        fir = np.convolve(lowpass, rir)
        fir /= np.sqrt(np.sum(fir**2))
        self.spectrum = _fir_spectrum(fir)
        self.fir_power = np.abs(np.fft.rfft(fir, 8192)) ** 2
        self.gains = 10.0 ** (np.asarray(p["gains_db"]) / 20.0)

    def _room_response(self, rng: np.random.Generator, taps: int) -> np.ndarray:
        """Direct path + exponentially decaying noise tail (RT60, direct-to-reverberant ratio), tapered."""
        t = np.arange(taps) / SAMPLE_RATE
        tail = rng.standard_normal(taps) * np.exp(-6.908 * t / self.p["rt60_s"])
        tail[t < self.p["predelay_s"]] = 0.0
        fade = taps // 6
        tail[-fade:] *= np.cos(np.linspace(0, np.pi / 2, fade)) ** 2
        tail *= 10.0 ** (-self.p["drr_db"] / 20.0) / np.sqrt(np.sum(tail**2))
        tail[0] += 1.0
        return tail

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        assert bank is not None
        talkers = _pick_talkers(self.p["talker_slots"], len(bank))
        start, length = k0 * BLOCK_SAMPLES - _HISTORY, (k1 - k0) * BLOCK_SAMPLES + _HISTORY
        mix = np.zeros(length, dtype=np.float32)
        power = 0.0
        for talker, fraction, gain in zip(talkers, self.p["offset_fractions"], self.gains, strict=True):
            offset = int(fraction * bank.talkers[talker].size)
            mix += np.float32(gain) * bank.segment(talker, offset + start, length)
            power += gain**2 * float(np.sum(bank.power_spectrum(talker) * self.fir_power))
        (babble,) = _filter_blocks(mix, [self.spectrum], k1 - k0)
        return babble * np.float32(NOMINAL_RMS / math.sqrt(power))


# --------------------------------------------------------------------------------------------------------------
# hum: drifting harmonic machinery with a broadband, optionally engine-modulated, component


def _draw_hum(rng: np.random.Generator) -> dict:
    f0 = float(rng.choice([50.0, 60.0, 100.0, 120.0])) if rng.random() < 0.3 else _loguniform(rng, 40, 400)
    depths = rng.uniform(0.0005, 0.01, 2)
    n_harmonics = int(min(rng.integers(4, 31), _NYQUIST_SAFE_HZ // (f0 * (1 + depths.sum()))))
    rolloff = rng.uniform(0.5, 2.0)
    k = np.arange(1, n_harmonics + 1)
    harmonic_db = -20 * rolloff * np.log10(k) + rng.normal(0, 5, n_harmonics)
    harmonic_db[(rng.random(n_harmonics) < 0.2) & (k > 1)] = -120.0  # some harmonics absent
    return {
        "f0_hz": f0,
        "harmonic_db": harmonic_db,
        "harmonic_phases": rng.random(n_harmonics),
        "drift_depths": depths,
        "drift_rates_hz": [_loguniform(rng, 0.005, 0.05), _loguniform(rng, 0.05, 0.3)],
        "drift_phases": rng.random(2),
        "wobble_depth": rng.uniform(0, 0.3),
        "wobble_rate_hz": _loguniform(rng, 0.05, 4.0),
        "wobble_phase": rng.random(),
        "noise_db": rng.uniform(-25, -3),
        "noise_slope": rng.uniform(0.5, 2.0),
        "noise_lowpass_hz": _loguniform(rng, 300, 4000),
        "noise_am_depth": rng.uniform(0, 0.8),
        "noise_am_phase": rng.random(),
    }


class _Hum:
    def __init__(self, seed: int, p: dict):
        self.p = p
        amps = 10.0 ** (np.asarray(p["harmonic_db"]) / 20.0)
        tone_power = np.sum(amps**2) / 2.0 * (1.0 + p["wobble_depth"] ** 2 / 2.0)
        self.coefs = (
            amps * np.exp(_TWO_PI * 1j * np.asarray(p["harmonic_phases"])) / np.sqrt(tone_power)
        ).astype(np.complex64)
        self.am = np.complex64(p["noise_am_depth"] * np.exp(_TWO_PI * 1j * p["noise_am_phase"]))
        noise_ratio = 10.0 ** (p["noise_db"] / 20.0)
        self.tone_gain = np.float32(NOMINAL_RMS / math.sqrt(1.0 + noise_ratio**2))
        self.noise_gain = np.float32(
            self.tone_gain * noise_ratio / math.sqrt(1.0 + p["noise_am_depth"] ** 2 / 2.0)
        )
        fir = _design_fir(lambda f: _colour_magnitude(f, p["noise_slope"], 30.0, p["noise_lowpass_hz"]))
        self.noise = _NoiseSource(seed, _S_NOISE, [fir])

    def _drift_cycles(self, t: np.ndarray) -> np.ndarray:
        """Phase (cycles) added by the slow frequency drift: integral of f0 * depth * sin(2 pi rate t + phase)."""
        p, out = self.p, np.zeros_like(t)
        for depth, rate, phase in zip(p["drift_depths"], p["drift_rates_hz"], p["drift_phases"], strict=True):
            out -= p["f0_hz"] * depth / (_TWO_PI * rate) * np.cos(_TWO_PI * (rate * t + phase))
        return out

    def _wobble(self, t: np.ndarray) -> np.ndarray:
        p = self.p
        return 1.0 + p["wobble_depth"] * np.sin(_TWO_PI * (p["wobble_rate_hz"] * t + p["wobble_phase"]))

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        start, length = k0 * BLOCK_SAMPLES, (k1 - k0) * BLOCK_SAMPLES
        (noise,) = self.noise.blocks(k0, k1)
        drift = _control_curve(self._drift_cycles, start, length)
        wobble = _control_curve(self._wobble, start, length)
        out = np.empty(length, dtype=np.float32)
        f0_per_sample = self.p["f0_hz"] / SAMPLE_RATE
        for i in range(k1 - k0):
            block = slice(i * BLOCK_SAMPLES, (i + 1) * BLOCK_SAMPLES)
            samples = np.arange(BLOCK_SAMPLES, dtype=np.float64) + (start + i * BLOCK_SAMPLES)
            z = _unit_phasor(samples * f0_per_sample + drift[block])
            tone = _harmonic_sum(self.coefs, z) * wobble[block]
            engine = 1.0 + (z * self.am).real  # broadband noise pulsing with the fundamental (engines, fans)
            out[block] = self.tone_gain * tone + self.noise_gain * noise[block] * engine
        return out


# --------------------------------------------------------------------------------------------------------------
# clatter: Poisson transients (keyboard bursts, resonant impacts, knocks) over a low floor


def _draw_modes(rng: np.random.Generator, count: int, hz: tuple, decay_s: tuple) -> list:
    return [[_loguniform(rng, *hz), _loguniform(rng, *decay_s), rng.uniform(0.2, 1.0)] for _ in range(count)]


def _draw_clatter_class(rng: np.random.Generator, kind: str) -> dict:
    common = {"kind": kind, "level_db": rng.uniform(-10, 0), "spread_db": rng.uniform(2, 6)}
    if kind == "keys":
        low = int(rng.integers(2, 6))
        return common | {
            "rate_hz": _loguniform(rng, 0.1, 0.5),  # typing bursts per second
            "keys_per_burst": [low, low + int(rng.integers(2, 13))],
            "key_interval_s": rng.uniform(0.08, 0.25),
            "release_gap_s": rng.uniform(0.04, 0.12),
            "release_amp": rng.uniform(0.2, 0.7),
            "modes": _draw_modes(rng, int(rng.integers(1, 4)), (1500, 7000), (0.003, 0.02)),
            "click_s": _loguniform(rng, 0.001, 0.006),
            "click_hz": _loguniform(rng, 1500, 6000),
            "click_amp": rng.uniform(0.5, 1.5),
        }
    if kind == "impact":  # dishes, cutlery
        return common | {
            "rate_hz": _loguniform(rng, 0.3, 3.0),
            "bounce_prob": rng.uniform(0, 0.5),
            "modes": _draw_modes(rng, int(rng.integers(2, 7)), (700, 7000), (0.02, 0.3)),
            "click_s": _loguniform(rng, 0.0005, 0.003),
            "click_hz": _loguniform(rng, 2000, 7000),
            "click_amp": rng.uniform(0.1, 0.6),
        }
    return common | {  # knock: doors, footsteps, objects put down
        "rate_hz": _loguniform(rng, 0.2, 1.5),
        "bounce_prob": rng.uniform(0, 0.5),
        "modes": _draw_modes(rng, int(rng.integers(1, 4)), (60, 500), (0.015, 0.08)),
        "click_s": _loguniform(rng, 0.001, 0.005),
        "click_hz": _loguniform(rng, 300, 2000),
        "click_amp": rng.uniform(0.2, 0.8),
    }


def _draw_clatter(rng: np.random.Generator) -> dict:
    kinds = rng.choice(["keys", "impact", "knock"], int(rng.integers(2, 5)), p=[0.35, 0.4, 0.25])
    return {
        "classes": [_draw_clatter_class(rng, str(kind)) for kind in kinds],
        "floor_db": rng.uniform(-20, -8),
        "floor_slope": rng.uniform(0.5, 1.5),
        "floor_lowpass_hz": _loguniform(rng, 1500, 6000),
    }


_BRIGHTNESS = (-0.5, 0.8)  # per-hit 2-tap excitation [1, -b]: b > 0 brighter, b < 0 duller


class _ClatterClass:
    """One kind of transient with a fixed timbre (impulse response); hits vary in level and brightness."""

    def __init__(self, seed: int, index: int, p: dict):
        self.seed, self.stream, self.p = seed, _S_EVENTS + 16 * index, p
        self.ir = self._impulse_response(_block_rng(seed, _S_TIMBRE, index))
        keys = p["kind"] == "keys"
        if keys:
            low, high = p["keys_per_burst"]
            self.extent = int((high * 1.4 * p["key_interval_s"] + 1.2 * p["release_gap_s"]) * SAMPLE_RATE)
            hits_per_s = (
                p["rate_hz"] * (low + high) / 2 * (1.0 + p["release_amp"] ** 2) * _uniform_db_power(3.0)
            )
        else:
            self.extent = int(0.15 * SAMPLE_RATE)
            hits_per_s = p["rate_hz"] * (1.0 + p["bounce_prob"] * (0.2**2 + 0.2 * 0.6 + 0.6**2) / 3)
        b_lo, b_hi = _BRIGHTNESS
        lag1 = float(np.dot(self.ir[:-1], self.ir[1:]))
        brightness = 1.0 + (b_lo**2 + b_lo * b_hi + b_hi**2) / 3 - (b_lo + b_hi) * lag1
        self.gain = 10.0 ** (p["level_db"] / 20.0)
        self.power = hits_per_s / SAMPLE_RATE * _uniform_db_power(p["spread_db"]) * brightness * self.gain**2
        self.reach_blocks = (self.extent + self.ir.size) // BLOCK_SAMPLES + 1

    def _impulse_response(self, rng: np.random.Generator) -> np.ndarray:
        p = self.p
        longest = max([decay for _, decay, _ in p["modes"]] + [p["click_s"]])
        n = int(min(0.35 * SAMPLE_RATE, max(160, 5 * longest * SAMPLE_RATE)))
        t = np.arange(n) / SAMPLE_RATE
        ir = np.zeros(n)
        for hz, decay, amp in p["modes"]:
            ir += amp * np.exp(-t / decay) * np.sin(_TWO_PI * hz * t + rng.uniform(0, np.pi / 2))
        ir /= np.sqrt(np.sum(ir**2))
        click = np.fft.rfft(rng.standard_normal(n) * np.exp(-t / p["click_s"]))
        f = np.maximum(np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE), 1.0)
        click = np.fft.irfft(click * np.exp(-0.5 * (np.log2(f / p["click_hz"]) / 0.75) ** 2), n)
        ir += p["click_amp"] * click / np.sqrt(np.sum(click**2))
        fade = max(16, n // 10)
        ir[-fade:] *= np.cos(np.linspace(0, np.pi / 2, fade)) ** 2
        return (ir / np.sqrt(np.sum(ir**2))).astype(np.float32)

    def hits(self, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(absolute sample, amplitude, brightness) of every hit whose event starts in ``block``."""
        p, rng = self.p, _block_rng(self.seed, self.stream, block)
        onsets = block * BLOCK_SAMPLES + np.sort(
            rng.integers(0, BLOCK_SAMPLES, rng.poisson(p["rate_hz"] * BLOCK_SAMPLES / SAMPLE_RATE))
        )
        times, amps = [], []
        for onset in onsets:
            amp = 10.0 ** (rng.uniform(-p["spread_db"], p["spread_db"]) / 20.0)
            if p["kind"] == "keys":
                count = int(rng.integers(p["keys_per_burst"][0], p["keys_per_burst"][1] + 1))
                presses = onset + np.cumsum(rng.uniform(0.6, 1.4, count) * p["key_interval_s"] * SAMPLE_RATE)
                press_amps = amp * 10.0 ** (rng.uniform(-3, 3, count) / 20.0)
                releases = presses + rng.uniform(0.8, 1.2, count) * p["release_gap_s"] * SAMPLE_RATE
                times += [presses, releases]
                amps += [press_amps, press_amps * p["release_amp"]]
            else:
                times.append([onset])
                amps.append([amp])
                if rng.random() < p["bounce_prob"]:
                    times.append([onset + rng.uniform(0.04, 0.15) * SAMPLE_RATE])
                    amps.append([amp * rng.uniform(0.2, 0.6)])
        if not times:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        positions = np.concatenate(times).astype(np.int64)
        return positions, np.concatenate(amps) * self.gain, rng.uniform(*_BRIGHTNESS, positions.size)

    def add_to(self, out: np.ndarray, start: int, k0: int, k1: int) -> None:
        """Add every hit that sounds in ``out`` (absolute samples from ``start``); event order is fixed."""
        ir, n = self.ir, out.size
        for block in range(k0 - self.reach_blocks, k1):
            for position, amp, bright in zip(*self.hits(block), strict=True):
                for offset, scale in ((0, amp), (1, -amp * bright)):
                    lo = position + offset - start
                    a, b = max(lo, 0), min(lo + ir.size, n)
                    if a < b:
                        out[a:b] += np.float32(scale) * ir[a - lo : b - lo]


class _Clatter:
    def __init__(self, seed: int, p: dict):
        self.classes = [_ClatterClass(seed, i, c) for i, c in enumerate(p["classes"])]
        events_power = sum(c.power for c in self.classes)
        floor_power = events_power * 10.0 ** (p["floor_db"] / 10.0)
        self.gain = NOMINAL_RMS / math.sqrt(events_power + floor_power)
        self.floor_gain = np.float32(math.sqrt(floor_power) * self.gain)
        fir = _design_fir(lambda f: _colour_magnitude(f, p["floor_slope"], 40.0, p["floor_lowpass_hz"]))
        self.floor = _NoiseSource(seed, _S_NOISE, [fir])

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        events = np.zeros((k1 - k0) * BLOCK_SAMPLES, dtype=np.float32)
        for clatter_class in self.classes:
            clatter_class.add_to(events, k0 * BLOCK_SAMPLES, k0, k1)
        (floor,) = self.floor.blocks(k0, k1)
        return events * np.float32(self.gain) + floor * self.floor_gain


# --------------------------------------------------------------------------------------------------------------
# traffic: modulated low rumble plus passing vehicles (tyre-noise swells, engine tones with Doppler)


def _draw_traffic(rng: np.random.Generator) -> dict:
    return {
        "rumble_slope": rng.uniform(1.0, 2.0),
        "rumble_lowpass_hz": _loguniform(rng, 60, 300),
        "rumble_mod_db": rng.uniform(1, 6),
        "rumble_mod_rates_hz": [_loguniform(rng, 0.01, 0.05), _loguniform(rng, 0.05, 0.15)],
        "rumble_mod_phases": rng.random(2),
        "passby_rate_hz": _loguniform(rng, 0.03, 0.25),
        "passby_db": rng.uniform(-6, 3),  # long-term power of pass-bys relative to the rumble
        "distance_m": [rng.uniform(2, 8), rng.uniform(15, 50)],
        "speed_mps": [rng.uniform(6, 12), rng.uniform(14, 28)],
        "spread_db": rng.uniform(2, 6),
        "tyre_highpass_hz": _loguniform(rng, 60, 200),
        "tyre_lowpass_hz": _loguniform(rng, 1000, 5000),
        "tone_prob": rng.uniform(0.2, 0.8),
        "tone_db": rng.uniform(-10, 0),  # engine tone relative to tyre noise at the swell's peak
        "engine_hz": [_loguniform(rng, 25, 60), _loguniform(rng, 60, 120)],
        "engine_harmonic_db": [0.0, *(-rng.uniform(0, 12, 3).cumsum())],
    }


_PASSBY_WINDOW_S = 5.0  # a pass-by is heard from 5 s before its closest approach to 5 s after


def _swell(s: np.ndarray, distance: float, speed: float, window_s: float) -> np.ndarray:
    """Amplitude of a source passing at closest ``distance`` (1/r law), tapered to 0 at |s| = window_s."""
    edge = distance / math.hypot(distance, speed * window_s)
    near = distance / np.sqrt(distance**2 + (speed * s) ** 2)
    return np.maximum((near - edge) / (1.0 - edge), 0.0)


class _Traffic:
    def __init__(self, seed: int, p: dict):
        self.seed, self.p = seed, p
        rumble = _design_fir(
            lambda f: _colour_magnitude(f, p["rumble_slope"], 20.0, p["rumble_lowpass_hz"], 2)
        )
        tyre = _design_fir(
            lambda f: _colour_magnitude(f, 1.0, p["tyre_highpass_hz"], p["tyre_lowpass_hz"], 2)
        )
        self.noise = _NoiseSource(seed, _S_NOISE, [rumble, tyre])
        depth = p["rumble_mod_db"] / (20.0 * math.log10(math.e)) / 2.0  # nepers per modulator
        self.rumble_gain = 1.0 / float(i0(2 * depth))  # E[exp(2 m sin a + 2 m sin b)] = I0(2m)^2
        self.mod_depth = depth
        amps = 10.0 ** (np.asarray(p["engine_harmonic_db"]) / 20.0)
        phases = _block_rng(seed, _S_TIMBRE, 0).random(amps.size)
        self.engine_coefs = (amps / np.sqrt(np.sum(amps**2) / 2.0) * np.exp(_TWO_PI * 1j * phases)).astype(
            np.complex64
        )
        self.tone_amp = 10.0 ** (p["tone_db"] / 20.0)
        self.reach_blocks = int(_PASSBY_WINDOW_S * SAMPLE_RATE) // BLOCK_SAMPLES + 2
        passby_power = self._expected_passby_power(_block_rng(seed, _S_CALIBRATE, 0))
        self.passby_gain = math.sqrt(10.0 ** (p["passby_db"] / 10.0) / passby_power)
        self.gain = NOMINAL_RMS / math.sqrt(1.0 + 10.0 ** (p["passby_db"] / 10.0))

    def _draw_vehicles(self, rng: np.random.Generator, count: int) -> dict:
        p = self.p
        d_lo, d_hi = p["distance_m"]
        distance = np.exp(rng.uniform(math.log(d_lo), math.log(d_hi), count))
        return {
            "distance": distance,
            "speed": rng.uniform(*p["speed_mps"], count),
            "amp": 5.0 / distance * 10.0 ** (rng.uniform(-p["spread_db"], p["spread_db"], count) / 20.0),
            "has_tone": rng.random(count) < p["tone_prob"],
            "engine_hz": np.exp(rng.uniform(*np.log(p["engine_hz"]), count)),
            "phase": rng.random(count),
        }

    def _tone_window_s(self, distance: float, speed: float) -> float:
        return min(_PASSBY_WINDOW_S, 3.0 * distance / speed)

    def _expected_passby_power(self, rng: np.random.Generator, draws: int = 256) -> float:
        """Campbell's theorem for the shot-noise envelope (mean^2 + variance) plus incoherent engine tones."""
        cars = self._draw_vehicles(rng, draws)
        s = np.linspace(-_PASSBY_WINDOW_S, _PASSBY_WINDOW_S, 2001)
        ds = s[1] - s[0]
        env_sum = env_sq = tone_sq = 0.0
        for d, v, a, has_tone in zip(
            cars["distance"], cars["speed"], cars["amp"], cars["has_tone"], strict=True
        ):
            e = a * _swell(s, d, v, _PASSBY_WINDOW_S)
            env_sum += e.sum() * ds
            env_sq += (e**2).sum() * ds
            if has_tone:
                tone = a * _swell(s, d, v, self._tone_window_s(d, v)) ** 2
                tone_sq += (tone**2).sum() * ds * self.tone_amp**2
        rate = self.p["passby_rate_hz"]
        return rate * env_sq / draws + (rate * env_sum / draws) ** 2 + rate * tone_sq / draws

    def _rumble_modulation(self, t: np.ndarray) -> np.ndarray:
        p, total = self.p, np.zeros_like(t)
        for rate, phase in zip(p["rumble_mod_rates_hz"], p["rumble_mod_phases"], strict=True):
            total += self.mod_depth * np.sin(_TWO_PI * (rate * t + phase))
        return np.exp(total)

    def _vehicles(self, k0: int, k1: int):
        """Vehicles whose closest approach falls in blocks near [k0, k1), in a fixed order."""
        for block in range(k0 - self.reach_blocks, k1 + self.reach_blocks):
            rng = _block_rng(self.seed, _S_EVENTS, block)
            count = rng.poisson(self.p["passby_rate_hz"] * BLOCK_SAMPLES / SAMPLE_RATE)
            closest = block * BLOCK_SAMPLES + rng.integers(0, BLOCK_SAMPLES, count)
            cars = self._draw_vehicles(rng, count)
            for i in range(count):
                yield int(closest[i]), {key: value[i] for key, value in cars.items()}

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        start, length = k0 * BLOCK_SAMPLES, (k1 - k0) * BLOCK_SAMPLES
        rumble, tyre = self.noise.blocks(k0, k1)
        control_times = (start + _CONTROL_STEP * np.arange(length // _CONTROL_STEP + 1)) / SAMPLE_RATE
        swell = np.zeros(control_times.size)
        tones = np.zeros(length, dtype=np.float32)
        for closest, car in self._vehicles(k0, k1):
            d, v = car["distance"], car["speed"]
            swell += car["amp"] * _swell(control_times - closest / SAMPLE_RATE, d, v, _PASSBY_WINDOW_S)
            if car["has_tone"]:
                self._add_engine(tones, start, closest, car)
        rumble *= _control_curve(self._rumble_modulation, start, length)
        rumble *= np.float32(self.rumble_gain)
        passing = tyre * _interpolate_control(swell) + np.float32(self.tone_amp) * tones
        return (rumble + np.float32(self.passby_gain) * passing) * np.float32(self.gain)

    def _add_engine(self, out: np.ndarray, start: int, closest: int, car: dict) -> None:
        """Engine harmonics whose pitch falls as the vehicle passes (retarded time: t - r/c)."""
        d, v = car["distance"], car["speed"]
        window_s = self._tone_window_s(d, v)
        half = int(window_s * SAMPLE_RATE)
        lo, hi = max(closest - half, start), min(closest + half + 1, start + out.size)
        if lo >= hi:
            return
        s = (np.arange(lo, hi) - closest) / SAMPLE_RATE
        r = np.sqrt(d**2 + (v * s) ** 2)
        z = _unit_phasor(car["engine_hz"] * (s - (r - d) / _SOUND_SPEED_MPS) + car["phase"])
        envelope = car["amp"] * _swell(s, d, v, window_s) ** 2
        out[lo - start : hi - start] += _harmonic_sum(self.engine_coefs, z) * envelope.astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# music: additive instruments playing a chord progression on a beat grid, optional drums

_SCALES = {
    "major": [0, 2, 4, 5, 7, 9, 11],
    "minor": [0, 2, 3, 5, 7, 8, 10],
    "dorian": [0, 2, 3, 5, 7, 9, 10],
    "mixolydian": [0, 2, 4, 5, 7, 9, 10],
    "pentatonic_major": [0, 2, 4, 7, 9],
    "pentatonic_minor": [0, 3, 5, 7, 10],
}
_PROGRESSIONS = [
    [0, 4, 5, 3],
    [0, 3, 4, 4],
    [0, 5, 3, 4],
    [5, 3, 0, 4],
    [0, 0, 3, 4],
    [0, 6, 5, 4],
    [1, 4, 0, 0],
]
_ROLES = ("pad", "bass", "lead", "arp")


def _draw_voice(rng: np.random.Generator, role: str, beat_s: float, bar_s: float) -> dict:
    n_partials = int(rng.integers(3, 13))
    partials_db = -rng.uniform(3, 12) * np.log2(np.arange(1, n_partials + 1)) + rng.normal(0, 3, n_partials)
    if rng.random() < 0.25:  # hollow, clarinet-like: weak even partials
        partials_db[1::2] -= 15
    shape = {
        "pad": {
            "attack_s": (0.05, 0.4),
            "decay_s": (1.0, 3.0),
            "note_s": (min(bar_s, 3.0),) * 2,
            "prob": (1, 1),
        },
        "bass": {
            "attack_s": (0.005, 0.02),
            "decay_s": (0.2, 0.8),
            "note_s": (0.5 * beat_s, 1.5),
            "prob": (0.6, 1),
        },
        "lead": {"attack_s": (0.005, 0.05), "decay_s": (0.2, 1.0), "note_s": (0.2, 1.0), "prob": (0.2, 0.6)},
        "arp": {"attack_s": (0.002, 0.01), "decay_s": (0.1, 0.4), "note_s": (0.15, 0.6), "prob": (0.7, 1)},
    }[role]
    voice = {
        "role": role,
        "octave": {"pad": 0, "bass": -12, "lead": 12, "arp": int(rng.choice([12, 24]))}[role],
        "partials_db": partials_db,
        "inharmonicity": 0.0 if rng.random() < 0.6 else _loguniform(rng, 1e-4, 2e-3),
        "attack_s": _loguniform(rng, *shape["attack_s"]),
        "decay_s": _loguniform(rng, *shape["decay_s"]),
        "note_s": rng.uniform(*shape["note_s"]),
        "note_prob": rng.uniform(*shape["prob"]),
        "level_db": rng.uniform(-8, 0),
    }
    if role == "lead":
        voice["contour"] = {
            "periods_steps": [rng.uniform(16, 64), rng.uniform(4, 16)],
            "phases": rng.random(2),
        }
        voice["contour"] |= {
            "depths": [rng.uniform(2, 4), rng.uniform(0.5, 2)],
            "jitter": rng.uniform(0.5, 1.5),
        }
    if role == "arp":
        voice["pattern"] = [int(i) for i in rng.integers(0, 4, int(rng.choice([3, 4, 6, 8])))]
    return voice


def _draw_music(rng: np.random.Generator) -> dict:
    bpm = rng.uniform(60, 150)
    beats_per_bar = int(rng.choice([3, 4], p=[0.25, 0.75]))
    beat_s = 60.0 / bpm
    roles = rng.choice(_ROLES, int(rng.integers(2, 5)), replace=False)
    return {
        "bpm": bpm,
        "beats_per_bar": beats_per_bar,
        "steps_per_beat": int(rng.choice([2, 4])),
        "swing": rng.uniform(0, 0.25) if rng.random() < 0.4 else 0.0,
        "root_midi": int(rng.integers(45, 58)),
        "scale": str(rng.choice(list(_SCALES))),
        "progression": _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))],
        "voices": [_draw_voice(rng, str(role), beat_s, beat_s * beats_per_bar) for role in sorted(roles)],
        "drums": None
        if rng.random() < 0.4
        else {
            "kick_db": rng.uniform(-6, 0),
            "snare_db": rng.uniform(-10, -2),
            "hat_db": rng.uniform(-16, -6),
            "hat_prob": rng.uniform(0.3, 1.0),
            "kick_hz": _loguniform(rng, 40, 70),
            "snare_hz": _loguniform(rng, 1000, 4000),
        },
    }


def _hash_uniform(seed: int, stream: int, index: np.ndarray, draw: int) -> np.ndarray:
    """Counter-based uniforms in [0, 1) from (seed, stream, index, draw): splitmix64, vectorised over index."""
    x = index.astype(np.int64).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x += np.uint64(
        (seed * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB + draw * 0xD6E8FEB86659FD93) % 2**64
    )
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


class _Music:
    def __init__(self, seed: int, p: dict):
        self.seed, self.p = seed, p
        self.scale = np.asarray(_SCALES[p["scale"]])
        self.steps_per_bar = p["steps_per_beat"] * p["beats_per_bar"]
        self.step_samples = SAMPLE_RATE * 60.0 / (p["bpm"] * p["steps_per_beat"])
        self.waves: dict[tuple[int, int], np.ndarray] = {}
        self.drums = self._drum_sounds(_block_rng(seed, _S_TIMBRE, 99)) if p["drums"] else {}
        longest = max(
            [v["note_s"] * SAMPLE_RATE for v in p["voices"]] + [w.size for w in self.drums.values()]
        )
        self.reach_steps = int(longest / self.step_samples) + 2
        self.gain = NOMINAL_RMS / math.sqrt(self._expected_power())

    # --- what is played: stateless functions of the absolute step index -------------------------------------

    def _degree_to_midi(self, degree: np.ndarray, octave: int) -> np.ndarray:
        n = self.scale.size
        return self.p["root_midi"] + octave + 12 * (degree // n) + self.scale[degree % n]

    def _chord_root(self, steps: np.ndarray) -> np.ndarray:
        progression = np.asarray(self.p["progression"])
        return progression[(steps // self.steps_per_bar) % progression.size]

    def _notes(self, v: int, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(step, midi, velocity) of voice ``v``'s notes starting on ``steps``."""
        voice = self.p["voices"][v]
        stream, role = _S_MUSIC + 8 * v, voice["role"]
        chance = _hash_uniform(self.seed, stream, steps, 0)
        velocity = 10.0 ** ((_hash_uniform(self.seed, stream, steps, 1) - 0.5) * 6 / 20)  # +-3 dB
        root = self._chord_root(steps)
        if role == "pad":
            on = steps % self.steps_per_bar == 0
            s, r, vel = steps[on], root[on], velocity[on]
            chord = np.stack([r, r + 2, r + 4], axis=1)
            return (
                np.repeat(s, 3),
                self._degree_to_midi(chord.ravel(), voice["octave"]),
                np.repeat(vel, 3) / 1.7,
            )
        if role == "bass":
            on = (steps % self.p["steps_per_beat"] == 0) & (chance < voice["note_prob"])
            fifth = 4 * (_hash_uniform(self.seed, stream, steps, 2) < 0.25)
            degree = root + fifth
        elif role == "lead":
            on = chance < voice["note_prob"]
            c = voice["contour"]
            contour = sum(
                depth * np.sin(_TWO_PI * (steps / period + phase))
                for depth, period, phase in zip(c["depths"], c["periods_steps"], c["phases"], strict=True)
            )
            jitter = (_hash_uniform(self.seed, stream, steps, 2) - 0.5) * 2 * c["jitter"]
            degree = np.rint(contour + jitter).astype(np.int64)
        else:  # arp: chord tones in a repeating pattern (3 = root an octave up)
            on = chance < voice["note_prob"]
            tone = np.asarray(voice["pattern"])[steps % len(voice["pattern"])]
            degree = root + np.where(tone == 3, self.scale.size, 2 * tone)
        return steps[on], self._degree_to_midi(degree[on], voice["octave"]), velocity[on]

    def _hits(self, steps: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
        drums = self.p["drums"]
        on_beat = steps % self.p["steps_per_beat"] == 0
        beat = (steps % self.steps_per_bar) // self.p["steps_per_beat"]
        velocity = 10.0 ** ((_hash_uniform(self.seed, _S_MUSIC - 1, steps, 0) - 0.5) * 4 / 20)
        hat = _hash_uniform(self.seed, _S_MUSIC - 1, steps, 1) < drums["hat_prob"]
        return [
            (name, steps[mask], velocity[mask])
            for name, mask in (
                ("kick", on_beat & (beat % 2 == 0)),
                ("snare", on_beat & (beat % 2 == 1)),
                ("hat", hat),
            )
        ]

    def _onset(self, steps: np.ndarray) -> np.ndarray:
        swing = self.p["swing"] * (steps % 2)
        return np.rint((steps + swing) * self.step_samples).astype(np.int64)

    # --- how it sounds ---------------------------------------------------------------------------------------

    def _partials(self, v: int, midi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        voice = self.p["voices"][v]
        amps = 10.0 ** (np.asarray(voice["partials_db"]) / 20.0)
        k = np.arange(1, amps.size + 1)
        hz = 440.0 * 2.0 ** ((midi - 69) / 12) * k * np.sqrt(1.0 + voice["inharmonicity"] * k**2)
        decays = voice["decay_s"] / (1.0 + 0.3 * (k - 1))  # upper partials die away first
        audible = hz < _NYQUIST_SAFE_HZ
        return hz[audible], amps[audible], decays[audible]

    def _envelope(self, v: int, t: np.ndarray, decays: np.ndarray) -> np.ndarray:
        voice = self.p["voices"][v]
        release = np.clip((voice["note_s"] - t) / 0.04, 0.0, 1.0)  # 40 ms fade at the note's end
        return (1.0 - np.exp(-t / voice["attack_s"])) * release * np.exp(-t[None, :] / decays[:, None])

    def _wave(self, v: int, midi: int) -> np.ndarray:
        """One note of voice ``v`` (cached per pitch): decaying additive partials with fixed phases."""
        if (v, midi) not in self.waves:
            hz, amps, decays = self._partials(v, midi)
            t = np.arange(int(self.p["voices"][v]["note_s"] * SAMPLE_RATE)) / SAMPLE_RATE
            phases = _block_rng(self.seed, _S_TIMBRE, v).random(len(self.p["voices"][v]["partials_db"]))
            partials = np.sin(_TWO_PI * (hz[:, None] * t + phases[: hz.size, None]))
            level = 10.0 ** (self.p["voices"][v]["level_db"] / 20.0)
            self.waves[v, midi] = (level * amps @ (partials * self._envelope(v, t, decays))).astype(
                np.float32
            )
        return self.waves[v, midi]

    def _note_energy(self, v: int, midi: int) -> float:
        """Energy of ``_wave(v, midi)`` from a 1 kHz envelope grid, assuming incoherent partials (cheap)."""
        hz, amps, decays = self._partials(v, midi)
        t = np.arange(0, self.p["voices"][v]["note_s"], 1e-3)
        level = 10.0 ** (self.p["voices"][v]["level_db"] / 20.0)
        envelope_energy = np.sum(self._envelope(v, t, decays) ** 2, axis=1) * (1e-3 * SAMPLE_RATE)
        return float(level**2 * np.sum(amps**2 / 2 * envelope_energy))

    def _drum_sounds(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        d = self.p["drums"]
        t = np.arange(int(0.3 * SAMPLE_RATE)) / SAMPLE_RATE
        sweep = d["kick_hz"] * t + 60.0 * 0.03 * (1.0 - np.exp(-t / 0.03))  # pitch falls by 60 Hz in ~30 ms
        kick = np.sin(_TWO_PI * sweep) * np.exp(-t / 0.12)
        f = np.maximum(np.fft.rfftfreq(t.size, 1.0 / SAMPLE_RATE), 1.0)
        band = np.exp(-0.5 * np.log2(f / d["snare_hz"]) ** 2)
        snare = np.fft.irfft(np.fft.rfft(rng.standard_normal(t.size)) * band, t.size) * np.exp(-t / 0.06)
        snare = snare / np.max(np.abs(snare)) + 0.5 * np.sin(_TWO_PI * 185 * t) * np.exp(-t / 0.04)
        hat = np.fft.irfft(np.fft.rfft(rng.standard_normal(t.size)) * (f > 5000), t.size) * np.exp(-t / 0.02)
        sounds = {"kick": kick, "snare": snare, "hat": hat[: t.size // 3]}
        levels = {"kick": d["kick_db"], "snare": d["snare_db"], "hat": d["hat_db"]}
        return {
            name: (10.0 ** (levels[name] / 20.0) * 0.5 * w / np.max(np.abs(w))).astype(np.float32)
            for name, w in sounds.items()
        }

    def _expected_power(self, steps: int = 4096) -> float:
        """Mean power over a stretch of the (infinite) score, counting each note's energy once."""
        index = np.arange(-steps, 0)
        energy = 0.0
        for v in range(len(self.p["voices"])):
            _, midi, velocity = self._notes(v, index)
            energy += sum(
                float(np.sum(velocity[midi == m] ** 2)) * self._note_energy(v, m) for m in np.unique(midi)
            )
        if self.drums:
            for name, _, velocity in self._hits(index):
                energy += float(np.sum(velocity**2) * np.sum(self.drums[name].astype(np.float64) ** 2))
        return max(energy / (steps * self.step_samples), 1e-12)

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        start, end = k0 * BLOCK_SAMPLES, k1 * BLOCK_SAMPLES
        out = np.zeros(end - start, dtype=np.float32)
        steps = np.arange(
            int(start // self.step_samples) - self.reach_steps, int(end // self.step_samples) + 2
        )
        for v in range(len(self.p["voices"])):
            note_steps, midi, velocity = self._notes(v, steps)
            for onset, m, vel in zip(self._onset(note_steps), midi, velocity, strict=True):
                self._place(out, start, int(onset), self._wave(v, int(m)), vel)
        if self.drums:
            for name, hit_steps, velocity in self._hits(steps):
                for onset, vel in zip(self._onset(hit_steps), velocity, strict=True):
                    self._place(out, start, int(onset), self.drums[name], vel)
        return out * np.float32(self.gain)

    @staticmethod
    def _place(out: np.ndarray, start: int, onset: int, wave: np.ndarray, scale: float) -> None:
        lo = onset - start
        a, b = max(lo, 0), min(lo + wave.size, out.size)
        if a < b:
            out[a:b] += np.float32(scale) * wave[a - lo : b - lo]


# --------------------------------------------------------------------------------------------------------------

_DRAW: dict[str, Callable[[np.random.Generator], dict]] = {
    "stationary": _draw_stationary,
    "babble": _draw_babble,
    "hum": _draw_hum,
    "clatter": _draw_clatter,
    "traffic": _draw_traffic,
    "music": _draw_music,
}
_SYNTH = {
    "stationary": _Stationary,
    "babble": _Babble,
    "hum": _Hum,
    "clatter": _Clatter,
    "traffic": _Traffic,
    "music": _Music,
}


@lru_cache(maxsize=16)
def _compiled(family: str, seed: int, params_json: str):
    """The place's synthesiser (filters designed, timbres built, level computed), cached across renders."""
    try:
        return _SYNTH[family](seed, json.loads(params_json))
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{family} environment (seed {seed}): malformed recipe params ({err!r})") from None
