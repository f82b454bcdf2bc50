"""Wind places: low turbulent rumble swelling and dying in random gusts, brighter in the gusts, with mic buffeting.

Held out of every shipped model's pretraining: not in the default ``world.noise.families``.

The wind's strength is a smooth random gust curve: a unit Gaussian at every instant, the sum of three octaves of
cubic B-splines through Gaussian knots (the slowest every ``gust_period_s``, each octave twice as fast and weaker), so
the level wanders in seconds-long gusts and lulls rather than in periodic swells. The rumble (noise flat up to a
corner of 80-300 Hz, falling as f^-2 or steeper above) follows exp(depth x gust); a whoosh band above it follows a
higher power of it, so gusts brighten; buffets (the wind hitting the microphone: thumps of low-passed noise, tens
to hundreds of ms) come mostly in the gusts. Every level is an expectation over the gust curve's normal
distribution, so the place's fixed gain puts it at ``NOMINAL_RMS`` over the long term; a 20 s stretch is within a
few dB of it, a gust or a lull of 1-2 s much less so.
"""

from __future__ import annotations

import math

import numpy as np

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world.noise.bank import BabbleBank
from fedpse.world.noise.base import NoiseFamily
from fedpse.world.noise.bursts import (
    decay_envelopes,
    filtered_train,
    noise_kernels,
    normal_mean,
    poisson_onsets,
)
from fedpse.world.noise.common import (
    BLOCK_SAMPLES,
    NOMINAL_RMS,
    S_EVENTS,
    S_NOISE,
    NoiseSource,
    block_rng,
    colour_magnitude,
    control_curve,
    design_fir,
    fir_spectrum,
    loguniform,
    uniform_db_power,
)

S_WHOOSH, S_GUSTS = 22, 23  # random streams: the whoosh band's noise, the gust curve's knots (one per octave)
_OCTAVES = 3
_KNOTS_PER_DRAW = 64  # gust knots drawn per generator
_DB_PER_NEPER = 20.0 / math.log(10.0)


class GustCurve:
    """A smooth random curve of time, N(0, 1) at every instant: octaves of cubic B-splines through Gaussian knots.

    Knot ``j`` of an octave is drawn from a generator of (seed, octave, j // 64), so any stretch of the curve is
    computed from its own knots only, the same whatever else is computed.
    """

    def __init__(self, seed: int, period_s: float, roughness: float):
        self.seed = seed
        self.periods_s = [period_s / 2**octave for octave in range(_OCTAVES)]
        weights = np.asarray([roughness**octave for octave in range(_OCTAVES)])
        self.weights = weights / np.sqrt(np.sum(weights**2))  # independent octaves: unit variance in all

    def __call__(self, t: np.ndarray) -> np.ndarray:
        total = np.zeros_like(t, dtype=np.float64)
        for octave, (period, weight) in enumerate(zip(self.periods_s, self.weights, strict=True)):
            x = np.asarray(t, dtype=np.float64) / period
            j = np.floor(x).astype(np.int64)
            u = x - j
            basis = (
                np.stack([(1 - u) ** 3, 3 * u**3 - 6 * u**2 + 4, -3 * u**3 + 3 * u**2 + 3 * u + 1, u**3]) / 6
            )
            knots = self._knots(octave, j[None, :] + np.arange(-1, 3)[:, None])
            # the basis's squares sum to 0.46-0.5 between knots: divided out so the variance is 1 everywhere
            total += weight * np.sum(basis * knots, axis=0) / np.sqrt(np.sum(basis**2, axis=0))
        return total

    def _knots(self, octave: int, index: np.ndarray) -> np.ndarray:
        groups, where = np.divmod(index, _KNOTS_PER_DRAW)
        found = np.empty(index.shape)
        for group in np.unique(groups):
            draw = block_rng(self.seed, S_GUSTS + 16 * octave, int(group)).standard_normal(_KNOTS_PER_DRAW)
            mask = groups == group
            found[mask] = draw[where[mask]]
        return found


class Wind(NoiseFamily):
    """Low turbulent rumble swelling and dying in random gusts, brighter in the gusts, with mic buffeting."""

    name = "wind"

    @staticmethod
    def draw(rng: np.random.Generator) -> dict:
        params = {
            "gust_period_s": loguniform(rng, 1.0, 3.0),  # knot spacing of the slowest octave
            "gust_roughness": rng.uniform(0.35, 0.8),  # each faster octave's weight relative to the one below
            "gust_db": rng.uniform(2.5, 4.5),  # standard deviation of the rumble's level, in dB
            # turbulence at the microphone: flat up to a corner, then falling as f^-(2 + tilt) in power
            "rumble_corner_hz": loguniform(rng, 80, 300),
            "rumble_tilt": rng.uniform(0, 0.8),
            "rumble_highpass_hz": loguniform(rng, 15, 40),
            "whoosh_db": rng.uniform(-12, -4),  # long-term power of the whoosh band relative to the rumble
            "whoosh_power": rng.uniform(1.3, 2.0),  # its amplitude follows the rumble's to this power
            "whoosh_slope": rng.uniform(0.5, 1.5),
            "whoosh_highpass_hz": loguniform(rng, 200, 500),
            "whoosh_lowpass_hz": loguniform(rng, 1000, 4000),
            "buffets": None,
        }
        if rng.random() < 0.7:  # else a windshield keeps the wind off the microphone
            params["buffets"] = {
                "rate_hz": loguniform(rng, 0.2, 1.0),  # long-term mean
                "threshold": rng.uniform(0.3, 1.5),  # gust strength (standard deviations) where they set in
                "level_db": rng.uniform(-12, -4),  # long-term power relative to the rumble
                "spread_db": rng.uniform(3, 6),
                "attack_s": loguniform(rng, 0.005, 0.03),
                "decay_s": loguniform(rng, 0.03, 0.15),
                "lowpass_hz": loguniform(rng, 40, 200),
            }
        return params

    def __init__(self, seed: int, p: dict):
        self.seed, self.p = seed, p
        self.gusts = GustCurve(seed, p["gust_period_s"], p["gust_roughness"])
        self.depth = p["gust_db"] / _DB_PER_NEPER  # rumble amplitude exp(depth * gust)
        rumble = design_fir(
            lambda f: colour_magnitude(f, p["rumble_tilt"], p["rumble_highpass_hz"], p["rumble_corner_hz"], 1)
        )
        whoosh = design_fir(
            lambda f: colour_magnitude(
                f, p["whoosh_slope"], p["whoosh_highpass_hz"], p["whoosh_lowpass_hz"], 2
            )
        )
        self.rumble, self.whoosh = NoiseSource(seed, S_NOISE, [rumble]), NoiseSource(seed, S_WHOOSH, [whoosh])
        # E[exp(2 a s)] = exp(2 a^2) for s ~ N(0, 1): each amplitude curve divided by its RMS
        self.rumble_norm = math.exp(self.depth**2)
        self.whoosh_norm = math.exp((p["whoosh_power"] * self.depth) ** 2)
        powers = {"rumble": 1.0, "whoosh": 10.0 ** (p["whoosh_db"] / 10.0)}
        b = p["buffets"]
        if b:
            powers["buffets"] = 10.0 ** (b["level_db"] / 10.0)
            self.buffet_peak_hz = b["rate_hz"] / normal_mean(self._buffet_chance)
            buffet_power = b["rate_hz"] / SAMPLE_RATE * uniform_db_power(b["spread_db"])  # unit-energy bursts
            attack, decay = b["attack_s"] * SAMPLE_RATE, b["decay_s"] * SAMPLE_RATE
            self.buffet_shape = (attack, decay, int(math.ceil(attack + 4 * decay)))
            lowpass = design_fir(lambda f: colour_magnitude(f, 1.0, 15.0, b["lowpass_hz"], 4))
            self.buffet_filter = fir_spectrum(lowpass)
        gain = NOMINAL_RMS / math.sqrt(sum(powers.values()))
        self.rumble_gain = gain
        self.whoosh_gain = gain * math.sqrt(powers["whoosh"])
        self.buffet_gain = gain * math.sqrt(powers["buffets"] / buffet_power) if b else 0.0

    def _rumble(self, gust: np.ndarray) -> np.ndarray:
        """The rumble's amplitude at gust strength ``gust`` (RMS 1 over the gust curve's distribution)."""
        return np.exp(self.depth * gust) / self.rumble_norm

    def _whoosh(self, gust: np.ndarray) -> np.ndarray:
        return np.exp(self.p["whoosh_power"] * self.depth * gust) / self.whoosh_norm

    def _buffet_chance(self, gust: np.ndarray) -> np.ndarray:
        """Probability that a candidate buffet happens at gust strength ``gust``: a soft step at the threshold."""
        return 1.0 / (1.0 + np.exp(-4.0 * (gust - self.p["buffets"]["threshold"])))

    def _buffets(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(onsets, kernels) of the buffets that start in ``block``: mostly in gusts."""
        b, rng = self.p["buffets"], block_rng(self.seed, S_EVENTS, block)
        onsets = poisson_onsets(rng, self.buffet_peak_hz, block)
        gust = self.gusts(onsets / SAMPLE_RATE)
        kept = rng.random(onsets.size) < self._buffet_chance(gust)
        levels = 10.0 ** (rng.uniform(-b["spread_db"], b["spread_db"], onsets.size) / 20.0)
        attack, decay, length = self.buffet_shape
        kernels = noise_kernels(rng, decay_envelopes(np.full(onsets.size, decay), length, attack))
        return onsets[kept], kernels[kept] * levels[kept].astype(np.float32)[:, None]

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        start, length = k0 * BLOCK_SAMPLES, (k1 - k0) * BLOCK_SAMPLES
        gust = control_curve(self.gusts, start, length)
        (rumble,) = self.rumble.blocks(k0, k1)
        (whoosh,) = self.whoosh.blocks(k0, k1)
        out = rumble * (self._rumble(gust) * self.rumble_gain).astype(np.float32)
        out += whoosh * (self._whoosh(gust) * self.whoosh_gain).astype(np.float32)
        if self.p["buffets"]:
            out += filtered_train(self._buffets, self.buffet_filter, k0, k1) * np.float32(self.buffet_gain)
        return out
