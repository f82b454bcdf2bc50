"""Rain places: dense random drops striking a surface (roof, metal, foliage, water) over a hiss of distant rain.

Held out of every shipped model's pretraining: not in the default ``world.noise.families``.

Each nearby drop is a sharp noise burst (0.1-3 ms) through the surface's fixed response (a FIR: its colour and
resonances); drops into water also ring as a small bubble, a damped sinusoid gliding upwards. Drops arrive as a
Poisson process whose rate, like the hiss bed, follows the shower's slow intensity swell. Every component's
long-term power is known from the recipe (bursts.py), so the place's fixed gain puts it at ``NOMINAL_RMS``.
"""

from __future__ import annotations

import math

import numpy as np

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world.noise.bank import BabbleBank
from fedpse.world.noise.base import NoiseFamily
from fedpse.world.noise.bursts import decaying_power, place_bursts, poisson_onsets, unit_energy
from fedpse.world.noise.common import (
    BLOCK_SAMPLES,
    HISTORY,
    NOMINAL_RMS,
    S_EVENTS,
    S_NOISE,
    TWO_PI,
    NoiseSource,
    block_rng,
    colour_magnitude,
    control_curve,
    design_fir,
    filter_blocks,
    fir_spectrum,
    loguniform,
    uniform_db_power,
)

_SURFACES = ("roof", "metal", "foliage", "water")
_IMPACT_CLASSES = 4  # impact decay times, log-spaced over the surface's range
S_IMPACTS = 21  # random stream of the impacts' noise
_BUBBLE_DELAY_S = (0.001, 0.004)  # a drop's bubble rings just after its impact
_BUBBLE_SPREAD_DB = 6.0  # a bubble's level around its drop's


def _draw_surface(rng: np.random.Generator, kind: str) -> dict:
    """The struck surface: its response (colour, band, resonances) and how long a drop's impact lasts."""
    if kind == "metal":  # tin roof, car roof, gutter: bright, strongly resonant, impacts ring longer
        bells = [
            {"hz": loguniform(rng, 500, 5000), "gain_db": rng.uniform(8, 18), "q": rng.uniform(3, 8)}
            for _ in range(int(rng.integers(2, 5)))
        ]
        return {
            "slope": rng.uniform(0, 0.8),
            "highpass_hz": loguniform(rng, 200, 600),
            "lowpass_hz": 7000.0,
            "eq": bells,
            "impact_s": [0.0005, loguniform(rng, 0.0015, 0.003)],
        }
    if kind == "foliage":  # leaves, grass, an umbrella's fabric: soft and dull
        return {
            "slope": rng.uniform(0.5, 1.5),
            "highpass_hz": loguniform(rng, 100, 300),
            "lowpass_hz": loguniform(rng, 1500, 4000),
            "eq": [],
            "impact_s": [0.0003, 0.0015],
        }
    bells = [
        {"hz": loguniform(rng, 300, 6000), "gain_db": rng.uniform(-6, 8), "q": rng.uniform(0.7, 3)}
        for _ in range(int(rng.integers(0, 3)))
    ]
    return {  # roof tiles, pavement, a window; or the splash of water
        "slope": rng.uniform(0, 1),
        "highpass_hz": loguniform(rng, 200, 1000),
        "lowpass_hz": loguniform(rng, 4000, 7500),
        "eq": bells,
        "impact_s": [0.0001, loguniform(rng, 0.0005, 0.0015)],
    }


class Rain(NoiseFamily):
    """Dense random drops striking a surface (roof, metal, foliage, water) over a hiss of distant rain."""

    name = "rain"

    @staticmethod
    def draw(rng: np.random.Generator) -> dict:
        kind = str(rng.choice(_SURFACES, p=[0.35, 0.2, 0.2, 0.25]))
        params = {
            "surface": kind,
            "response": _draw_surface(rng, kind),
            "drops_hz": loguniform(rng, 150, 2500),  # nearby drops heard one by one, per second
            "drop_spread_db": rng.uniform(6, 15),  # drop sizes: level uniform in +- spread dB
            "swell_depth": rng.uniform(0, 0.4),  # the shower's intensity: 1 +- depth, slowly
            "swell_rates_hz": [loguniform(rng, 0.01, 0.04), loguniform(rng, 0.04, 0.15)],
            "swell_phases": rng.random(2),
            "hiss_db": rng.uniform(-15, -3),  # distant rain, relative to the nearby drops
            "hiss_slope": rng.uniform(0, 1),
            "hiss_highpass_hz": loguniform(rng, 300, 1500),
            "hiss_lowpass_hz": loguniform(rng, 4000, 7500),
        }
        if kind == "water":
            params["bubbles"] = {
                "prob": rng.uniform(0.2, 0.6),  # share of drops that trap a ringing bubble
                "level_db": rng.uniform(-6, 6),  # bubbles' power relative to the drops' impacts
                "hz": sorted([loguniform(rng, 1000, 2500), loguniform(rng, 3000, 6000)]),
                "decay_s": [0.002, loguniform(rng, 0.006, 0.012)],
                "glide": rng.uniform(0.1, 0.5),  # pitch rise per decay time
            }
        return params

    def __init__(self, seed: int, p: dict):
        self.seed, self.p = seed, p
        r = p["response"]
        self.surface = fir_spectrum(
            design_fir(
                lambda f: colour_magnitude(f, r["slope"], r["highpass_hz"], r["lowpass_hz"], 2, r["eq"])
            )
        )
        lo, hi = np.log(np.asarray(r["impact_s"]) * SAMPLE_RATE)
        self.impact_decays = np.exp(np.linspace(lo, hi, _IMPACT_CLASSES))  # samples
        self.swell_max = 1.0 + p["swell_depth"]
        drop_power = p["drops_hz"] / SAMPLE_RATE * uniform_db_power(p["drop_spread_db"])
        powers = {"drops": 1.0, "hiss": 10.0 ** (p["hiss_db"] / 10.0)}
        bubbles = p.get("bubbles")
        if bubbles:
            powers["bubbles"] = 10.0 ** (bubbles["level_db"] / 10.0)
            bubble_power = drop_power * bubbles["prob"] * uniform_db_power(_BUBBLE_SPREAD_DB)
            self.bubble_length = int(
                math.ceil((5 * bubbles["decay_s"][1] + _BUBBLE_DELAY_S[1]) * SAMPLE_RATE)
            )
        gain = NOMINAL_RMS / math.sqrt(sum(powers.values()))
        self.drop_gain = np.float32(gain / math.sqrt(drop_power))
        self.hiss_gain = np.float32(gain * math.sqrt(powers["hiss"]))
        self.bubble_gain = np.float32(gain * math.sqrt(powers["bubbles"] / bubble_power)) if bubbles else None
        hiss = design_fir(
            lambda f: colour_magnitude(f, p["hiss_slope"], p["hiss_highpass_hz"], p["hiss_lowpass_hz"], 4)
        )
        self.hiss = NoiseSource(seed, S_NOISE, [hiss])

    def _swell(self, t: np.ndarray) -> np.ndarray:
        """The shower's intensity at times ``t`` (s): mean 1 over the long term, within 1 +- swell_depth."""
        p, total = self.p, np.zeros_like(t)
        for rate, phase in zip(p["swell_rates_hz"], p["swell_phases"], strict=True):
            total += 0.5 * np.sin(TWO_PI * (rate * t + phase))
        return 1.0 + p["swell_depth"] * total

    def _drops(self, block: int) -> dict:
        """The drops that land in ``block`` (thinned by the swell): onsets, levels, impacts, and their bubbles."""
        p, rng = self.p, block_rng(self.seed, S_EVENTS, block)
        onsets = poisson_onsets(rng, p["drops_hz"] * self.swell_max, block)
        count = onsets.size
        kept = rng.random(count) * self.swell_max < self._swell(onsets / SAMPLE_RATE)
        levels = 10.0 ** (rng.uniform(-p["drop_spread_db"], p["drop_spread_db"], count) / 20.0)
        impacts = rng.integers(0, _IMPACT_CLASSES, count)
        drops = {"onsets": onsets[kept], "levels": levels[kept], "impacts": impacts[kept]}
        if "bubbles" in p:
            drops["bubbles"] = self._bubbles(rng, count, kept, onsets, levels)
        return drops

    def _bubbles(
        self, rng: np.random.Generator, count: int, kept: np.ndarray, onsets: np.ndarray, levels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(onsets, scaled unit-energy tones) of the bubbles rung by the kept drops among ``count`` drawn."""
        b = self.p["bubbles"]
        draws = {
            "rings": rng.random(count) < b["prob"],
            "delay": rng.uniform(*_BUBBLE_DELAY_S, count) * SAMPLE_RATE,
            "level": rng.choice([-1.0, 1.0], count)
            * 10.0 ** (rng.uniform(-_BUBBLE_SPREAD_DB, _BUBBLE_SPREAD_DB, count) / 20.0),
            "hz": np.exp(rng.uniform(*np.log(b["hz"]), count)),
            "decay_s": np.exp(rng.uniform(*np.log(b["decay_s"]), count)),
        }
        ringing = kept & draws["rings"]
        delay, level, hz, decay_s = (draws[key][ringing] for key in ("delay", "level", "hz", "decay_s"))
        delay, hz, decay_s = (x.astype(np.float32)[:, None] for x in (delay, hz, decay_s))
        n = np.arange(self.bubble_length, dtype=np.float32)[None, :]
        t = np.maximum(n - delay, 0.0) / np.float32(SAMPLE_RATE)
        cycles = hz * t * (1.0 + np.float32(b["glide"] / 2.0) * t / decay_s)  # a tone gliding upwards
        tones = np.exp(-t / decay_s) * np.sin(np.float32(TWO_PI) * cycles) * (n >= delay)
        scale = (levels[ringing] * level).astype(np.float32)[:, None]
        return onsets[ringing], unit_energy(tones) * scale

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        start, length = k0 * BLOCK_SAMPLES, (k1 - k0) * BLOCK_SAMPLES
        drops = [self._drops(block) for block in range(k0 - 1, k1)]
        onsets, levels, impacts = (
            np.concatenate([d[key] for d in drops]) for key in ("onsets", "levels", "impacts")
        )
        # Each impact is a noise burst; drawn as one white noise under their summed power envelope (bursts.py).
        span = start - BLOCK_SAMPLES, length + BLOCK_SAMPLES
        power = decaying_power(onsets, levels**2, impacts, self.impact_decays, *span)
        white = np.concatenate(
            [
                block_rng(self.seed, S_IMPACTS, k).standard_normal(BLOCK_SAMPLES, np.float32)
                for k in range(k0 - 1, k1)
            ]
        )
        (out,) = filter_blocks((white * np.sqrt(power))[BLOCK_SAMPLES - HISTORY :], [self.surface], k1 - k0)
        out *= self.drop_gain
        (hiss,) = self.hiss.blocks(k0, k1)
        out += hiss * np.sqrt(control_curve(self._swell, start, length)) * self.hiss_gain
        if self.bubble_gain is not None:
            bubble_onsets = np.concatenate([d["bubbles"][0] for d in drops])
            tones = np.concatenate([d["bubbles"][1] for d in drops])
            out += place_bursts(bubble_onsets, tones, start, length) * self.bubble_gain
        return out
