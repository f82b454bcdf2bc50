"""Clatter places: Poisson transients (keyboard bursts, resonant impacts, knocks) over a low floor."""

from __future__ import annotations

import math

import numpy as np

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world.noise.bank import BabbleBank
from fedpse.world.noise.base import NoiseFamily
from fedpse.world.noise.common import (
    BLOCK_SAMPLES,
    NOMINAL_RMS,
    S_EVENTS,
    S_NOISE,
    S_TIMBRE,
    TWO_PI,
    NoiseSource,
    block_rng,
    colour_magnitude,
    design_fir,
    loguniform,
    uniform_db_power,
)


def _draw_modes(rng: np.random.Generator, count: int, hz: tuple, decay_s: tuple) -> list:
    return [[loguniform(rng, *hz), loguniform(rng, *decay_s), rng.uniform(0.2, 1.0)] for _ in range(count)]


def _draw_clatter_class(rng: np.random.Generator, kind: str) -> dict:
    common = {"kind": kind, "level_db": rng.uniform(-10, 0), "spread_db": rng.uniform(2, 6)}
    if kind == "keys":
        low = int(rng.integers(2, 6))
        return common | {
            "rate_hz": loguniform(rng, 0.1, 0.5),  # typing bursts per second
            "keys_per_burst": [low, low + int(rng.integers(2, 13))],
            "key_interval_s": rng.uniform(0.08, 0.25),
            "release_gap_s": rng.uniform(0.04, 0.12),
            "release_amp": rng.uniform(0.2, 0.7),
            "modes": _draw_modes(rng, int(rng.integers(1, 4)), (1500, 7000), (0.003, 0.02)),
            "click_s": loguniform(rng, 0.001, 0.006),
            "click_hz": loguniform(rng, 1500, 6000),
            "click_amp": rng.uniform(0.5, 1.5),
        }
    if kind == "impact":  # dishes, cutlery
        return common | {
            "rate_hz": loguniform(rng, 0.3, 3.0),
            "bounce_prob": rng.uniform(0, 0.5),
            "modes": _draw_modes(rng, int(rng.integers(2, 7)), (700, 7000), (0.02, 0.3)),
            "click_s": loguniform(rng, 0.0005, 0.003),
            "click_hz": loguniform(rng, 2000, 7000),
            "click_amp": rng.uniform(0.1, 0.6),
        }
    return common | {  # knock: doors, footsteps, objects put down
        "rate_hz": loguniform(rng, 0.2, 1.5),
        "bounce_prob": rng.uniform(0, 0.5),
        "modes": _draw_modes(rng, int(rng.integers(1, 4)), (60, 500), (0.015, 0.08)),
        "click_s": loguniform(rng, 0.001, 0.005),
        "click_hz": loguniform(rng, 300, 2000),
        "click_amp": rng.uniform(0.2, 0.8),
    }


_BRIGHTNESS = (-0.5, 0.8)  # per-hit 2-tap excitation [1, -b]: b > 0 brighter, b < 0 duller


class _ClatterClass:
    """One kind of transient with a fixed timbre (impulse response); hits vary in level and brightness."""

    def __init__(self, seed: int, index: int, p: dict):
        self.seed, self.stream, self.p = seed, S_EVENTS + 16 * index, p
        self.ir = self._impulse_response(block_rng(seed, S_TIMBRE, index))
        keys = p["kind"] == "keys"
        if keys:
            low, high = p["keys_per_burst"]
            self.extent = int((high * 1.4 * p["key_interval_s"] + 1.2 * p["release_gap_s"]) * SAMPLE_RATE)
            hits_per_s = (
                p["rate_hz"] * (low + high) / 2 * (1.0 + p["release_amp"] ** 2) * uniform_db_power(3.0)
            )
        else:
            self.extent = int(0.15 * SAMPLE_RATE)
            hits_per_s = p["rate_hz"] * (1.0 + p["bounce_prob"] * (0.2**2 + 0.2 * 0.6 + 0.6**2) / 3)
        b_lo, b_hi = _BRIGHTNESS
        lag1 = float(np.dot(self.ir[:-1], self.ir[1:]))
        brightness = 1.0 + (b_lo**2 + b_lo * b_hi + b_hi**2) / 3 - (b_lo + b_hi) * lag1
        self.gain = 10.0 ** (p["level_db"] / 20.0)
        self.power = hits_per_s / SAMPLE_RATE * uniform_db_power(p["spread_db"]) * brightness * self.gain**2
        self.reach_blocks = (self.extent + self.ir.size) // BLOCK_SAMPLES + 1

    def _impulse_response(self, rng: np.random.Generator) -> np.ndarray:
        p = self.p
        longest = max([decay for _, decay, _ in p["modes"]] + [p["click_s"]])
        n = int(min(0.35 * SAMPLE_RATE, max(160, 5 * longest * SAMPLE_RATE)))
        t = np.arange(n) / SAMPLE_RATE
        ir = np.zeros(n)
        for hz, decay, amp in p["modes"]:
            ir += amp * np.exp(-t / decay) * np.sin(TWO_PI * hz * t + rng.uniform(0, np.pi / 2))
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
        p, rng = self.p, block_rng(self.seed, self.stream, block)
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


class Clatter(NoiseFamily):
    """Poisson transients (keyboard bursts, resonant impacts, knocks) over a low floor."""

    name = "clatter"

    @staticmethod
    def draw(rng: np.random.Generator) -> dict:
        kinds = rng.choice(["keys", "impact", "knock"], int(rng.integers(2, 5)), p=[0.35, 0.4, 0.25])
        return {
            "classes": [_draw_clatter_class(rng, str(kind)) for kind in kinds],
            "floor_db": rng.uniform(-20, -8),
            "floor_slope": rng.uniform(0.5, 1.5),
            "floor_lowpass_hz": loguniform(rng, 1500, 6000),
        }

    def __init__(self, seed: int, p: dict):
        self.classes = [_ClatterClass(seed, i, c) for i, c in enumerate(p["classes"])]
        events_power = sum(c.power for c in self.classes)
        floor_power = events_power * 10.0 ** (p["floor_db"] / 10.0)
        self.gain = NOMINAL_RMS / math.sqrt(events_power + floor_power)
        self.floor_gain = np.float32(math.sqrt(floor_power) * self.gain)
        fir = design_fir(lambda f: colour_magnitude(f, p["floor_slope"], 40.0, p["floor_lowpass_hz"]))
        self.floor = NoiseSource(seed, S_NOISE, [fir])

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        events = np.zeros((k1 - k0) * BLOCK_SAMPLES, dtype=np.float32)
        for clatter_class in self.classes:
            clatter_class.add_to(events, k0 * BLOCK_SAMPLES, k0, k1)
        (floor,) = self.floor.blocks(k0, k1)
        return events * np.float32(self.gain) + floor * self.floor_gain
