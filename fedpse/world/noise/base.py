"""What a noise family is, and ``FAMILIES``: every family, registered when its class is defined."""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from fedpse.world.noise.bank import BabbleBank

# name -> family, in registration order. A place's recipe is drawn with its family's position here, so the built-in
# families keep their positions (the package imports them first, in a fixed order) and new ones come after them.
FAMILIES: dict[str, type[NoiseFamily]] = {}


class NoiseFamily(abc.ABC):
    """Base of the noise families: one subclass per family, registered in ``FAMILIES`` under its ``name``.

    ``draw(rng)`` draws a new place's recipe (its parameters, JSON-able); ``Family(seed, params)`` builds the place's
    synthesiser (filters designed, level set so the long-term RMS is ``NOMINAL_RMS``); ``blocks(k0, k1, bank)``
    renders blocks ``[k0, k1)`` of its timeline, every block the same whatever else is rendered with it.
    """

    name: ClassVar[str] = ""
    needs_bank: ClassVar[bool] = False  # plays the caller's speech: rendering it needs a BabbleBank

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            FAMILIES[cls.name] = cls

    @staticmethod
    @abc.abstractmethod
    def draw(rng: np.random.Generator) -> dict:
        """A new place's recipe parameters, every one drawn from ``rng`` (the place's own generator)."""

    @abc.abstractmethod
    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        """Blocks ``[k0, k1)`` of the place's timeline: float32, ``(k1 - k0) * BLOCK_SAMPLES`` samples."""
