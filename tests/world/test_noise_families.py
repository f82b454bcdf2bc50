"""Noise families are registered one file each: a new one needs no other file, and the built-in ones keep drawing
the same places and rendering the same audio (world caches and every result built on them depend on it)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fedpse.world.noise import FAMILIES, NOMINAL_RMS, Environment, render, sample_environment
from tests.conftest import tiny_config
from tests.world.test_noise import BANK

# Measured with the single-module fedpse/world/noise.py before it became a package: per family, the recipe of the
# place drawn from default_rng(2024) (sha256 of its JSON, exact) and samples 0, 4000, 16000, 31999 of its 2 s from
# 3.5 s (to 6 decimals; exact float32 bits can differ across CPUs' vectorised sin/cos).
BUILTIN = {
    "stationary": ("4014c3b35d91b701", [-0.033836, 0.024112, 0.050624, 0.017909]),
    "babble": ("47c71855c4e36456", [-0.023035, 0.006255, 0.041945, -0.017011]),
    "hum": ("79b333c6c0798b0a", [-0.091992, -0.078875, -0.042316, 0.024976]),
    "clatter": ("0f3fc40522ae5fc2", [-0.01193, -0.003185, 0.004792, 0.007617]),
    "traffic": ("13348795a02ae565", [-0.028631, -0.004614, 0.03302, 0.040007]),
    "music": ("9740ccda7af7b004", [0.002271, -0.033294, 0.016095, 0.041668]),
}

BREEZE = '''
"""Breeze: brown noise (a family defined outside fedpse; fedpse has its own wind)."""

import numpy as np

from fedpse.world.noise.base import NoiseFamily
from fedpse.world.noise.common import NOMINAL_RMS, S_NOISE, NoiseSource, colour_magnitude, design_fir


class Breeze(NoiseFamily):
    name = "breeze"

    @staticmethod
    def draw(rng):
        return {"slope": rng.uniform(1.5, 2.0), "highpass_hz": rng.uniform(20, 60)}

    def __init__(self, seed, p):
        fir = design_fir(lambda f: colour_magnitude(f, p["slope"], p["highpass_hz"]))
        self.noise = NoiseSource(seed, S_NOISE, [fir])

    def blocks(self, k0, k1, bank):
        (noise,) = self.noise.blocks(k0, k1)
        return noise * np.float32(NOMINAL_RMS)
'''


@pytest.fixture
def breeze(tmp_path):
    """The module ``breeze.py`` written to a temporary folder and imported: its family registers itself."""
    path = tmp_path / "breeze.py"
    path.write_text(BREEZE)
    spec = importlib.util.spec_from_file_location("fedpse_test_breeze", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module.Breeze
    FAMILIES.pop("breeze", None)
    sys.modules.pop(spec.name, None)


def test_the_builtin_families_draw_and_render_as_before():
    # A family's position in FAMILIES seeds its recipes: the built-in order is part of every world's data.
    assert list(FAMILIES)[: len(BUILTIN)] == list(BUILTIN)
    for family, (recipe, samples) in BUILTIN.items():
        env = sample_environment(family, np.random.default_rng(2024), f"{family}-0")
        assert hashlib.sha256(json.dumps(env.to_dict(), sort_keys=True).encode()).hexdigest()[:16] == recipe
        audio = render(env, 3.5, 2.0, bank=BANK)
        np.testing.assert_allclose(audio[[0, 4000, 16000, 31999]], samples, atol=2e-6, err_msg=family)


def test_a_family_in_one_new_file_is_drawn_and_rendered_like_the_builtin_ones(breeze):
    # appended after every other family: no built-in (or held-out) place changes
    assert list(FAMILIES)[-1] == "breeze" and FAMILIES["breeze"] is breeze

    env = sample_environment("breeze", np.random.default_rng(0), "garden")
    assert Environment.from_dict(json.loads(json.dumps(env.to_dict()))) == env
    audio = render(env, 0.0, 3.0)
    assert audio.dtype == np.float32 and audio.shape == (48000,) and np.all(np.isfinite(audio))
    assert abs(20 * np.log10(np.sqrt(np.mean(audio**2)) / NOMINAL_RMS)) < 2.0
    np.testing.assert_array_equal(render(env, 1.25, 1.75), audio[20000:])  # one seamless timeline


def test_a_world_of_the_new_family_builds(breeze, tmp_path):
    from fedpse.world.cache import build_world

    world = build_world(tiny_config(tmp_path, "world.noise.families=[breeze]"), progress=False)
    manifest = json.loads((Path(world.root) / "manifest.json").read_text())
    assert {user["place"]["family"] for user in manifest["users"]} == {"breeze"}
