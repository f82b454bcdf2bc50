"""Stationary noise places: white to brown coloured noise, high-passed, optionally low-passed and equalised."""

from __future__ import annotations

import numpy as np

from fedpse.world.noise.bank import BabbleBank
from fedpse.world.noise.base import NoiseFamily
from fedpse.world.noise.common import (
    NOMINAL_RMS,
    S_NOISE,
    NoiseSource,
    colour_magnitude,
    design_fir,
    loguniform,
)


class Stationary(NoiseFamily):
    """Coloured noise: white to brown, high-passed, optionally low-passed and equalised."""

    name = "stationary"

    @staticmethod
    def draw(rng: np.random.Generator) -> dict:
        colour = str(rng.choice(["white", "pink", "brown", "between"], p=[0.2, 0.3, 0.2, 0.3]))
        slope = {"white": 0.0, "pink": 1.0, "brown": 2.0}.get(colour, rng.uniform(0.2, 1.8))
        eq = [
            {"hz": loguniform(rng, 100, 6000), "gain_db": rng.uniform(-6, 6), "q": rng.uniform(0.7, 3.0)}
            for _ in range(int(rng.integers(0, 4)))
        ]
        return {
            "colour": colour,
            "slope": slope,
            "highpass_hz": loguniform(rng, 15, 60),
            "lowpass_hz": None if rng.random() < 0.5 else loguniform(rng, 2000, 7000),
            "lowpass_order": int(rng.integers(1, 4)),
            "eq": eq,
        }

    def __init__(self, seed: int, p: dict):
        fir = design_fir(
            lambda f: colour_magnitude(
                f, p["slope"], p["highpass_hz"], p["lowpass_hz"], p["lowpass_order"], p["eq"]
            )
        )
        self.noise = NoiseSource(seed, S_NOISE, [fir])

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        (noise,) = self.noise.blocks(k0, k1)
        return noise * np.float32(NOMINAL_RMS)
