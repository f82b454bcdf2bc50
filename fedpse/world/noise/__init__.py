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

Layout, one family per file:

    place.py       Environment, sample_environment, render: a place and its timeline
    base.py        NoiseFamily (what a family provides) and FAMILIES (every family, registered by its class)
    common.py      shared machinery: block randomness, FIR design, overlap-save filtering, control curves
    bank.py        BabbleBank: the caller's speech that babble places play
    bursts.py      short random bursts (raindrops, wind buffets) on the timeline, rendered many at a time
    stationary.py, babble.py, hum.py, clatter.py, traffic.py, music.py: the families of the default world
    wind.py, rain.py: families held out of every shipped model's pretraining (in no default list)

Adding a family = adding one file here: a ``NoiseFamily`` subclass with a ``name``, a static ``draw(rng)`` that
draws the recipe, ``__init__(seed, params)`` that builds the synthesiser and ``blocks(k0, k1, bank)`` that renders
whole blocks (see ``stationary.py``, the smallest). Every module of this package is imported, so the family is
registered and ``world.noise.families`` accepts its name. Its recipes are drawn with its position in ``FAMILIES``:
the built-in families are imported first, in the order their places have always been drawn in, then the package's
other modules by file name, so a new family never changes an existing family's places.
"""

from __future__ import annotations

import importlib
import pkgutil

from fedpse.world.noise.bank import BabbleBank
from fedpse.world.noise.base import FAMILIES, NoiseFamily
from fedpse.world.noise.common import BLOCK_SAMPLES, NOMINAL_RMS
from fedpse.world.noise.place import (
    Environment,
    render,
    render_samples,
    sample_environment,
)

BUILTIN_FAMILIES = (
    "stationary",
    "babble",
    "hum",
    "clatter",
    "traffic",
    "music",
)  # their FAMILIES order, fixed
for _module in [*BUILTIN_FAMILIES, *sorted(m.name for m in pkgutil.iter_modules(__path__))]:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "BLOCK_SAMPLES",
    "FAMILIES",
    "NOMINAL_RMS",
    "BabbleBank",
    "Environment",
    "NoiseFamily",
    "render",
    "render_samples",
    "sample_environment",
]
