"""The held-out noise families (wind, rain): places no shipped model heard in pretraining, rendered like every
other family (one seamless timeline at a fixed nominal level), and added without moving any built-in place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import welch
from scipy.stats import kurtosis

from fedpse.audio.io import SAMPLE_RATE
from fedpse.config import load_config
from fedpse.world.noise import FAMILIES, NOMINAL_RMS, Environment, render, sample_environment
from tests.conftest import tiny_config

HELDOUT = ("wind", "rain")
BUILTIN = ("stationary", "babble", "hum", "clatter", "traffic", "music")
HELDOUT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "heldout-noise.yaml"


def places(family: str, count: int, seed: int = 7) -> list[Environment]:
    rng = np.random.default_rng(seed)
    return [sample_environment(family, rng, f"{family}-{i}") for i in range(count)]


def level_db(audio: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) / NOMINAL_RMS))


def share_below(audio: np.ndarray, hz: float) -> float:
    freqs, psd = welch(audio.astype(np.float64), fs=SAMPLE_RATE, nperseg=4096)
    return float(psd[freqs < hz].sum() / psd.sum())


@pytest.mark.parametrize("family", HELDOUT)
def test_a_stretch_rendered_alone_is_the_same_stretch_of_the_long_timeline(family):
    for env in places(family, 3):
        whole = render(env, 0.0, 7.0)
        for start_s, seconds in [(2.5, 4.5), (1.0240625, 0.5), (0.0, 1.0)]:
            a = round(start_s * SAMPLE_RATE)
            np.testing.assert_array_equal(
                render(env, start_s, seconds), whole[a : a + round(seconds * SAMPLE_RATE)]
            )
        hour = render(env, 3600.0, 4.0)  # far along the timeline, from two starting points
        np.testing.assert_array_equal(render(env, 3601.5, 2.0), hour[24000:56000])


@pytest.mark.parametrize(("family", "seconds", "within_db"), [("wind", 240.0, 1.5), ("rain", 40.0, 1.0)])
def test_the_long_term_level_is_nominal(family, seconds, within_db):
    # Gusty wind wanders by several dB over tens of seconds (as wind does); its long-term level is still nominal.
    for env in places(family, 3):
        audio = render(env, 10.0, seconds)
        assert audio.dtype == np.float32 and np.all(np.isfinite(audio))
        assert abs(level_db(audio)) < within_db, f"{env.env_id}: {level_db(audio):+.2f} dB from nominal"


@pytest.mark.parametrize("family", HELDOUT)
def test_a_place_is_determined_by_its_seed(family):
    a, b = places(family, 2)
    assert places(family, 1)[0] == a
    again = Environment.from_dict(json.loads(json.dumps(a.to_dict())))
    assert again == a
    np.testing.assert_array_equal(render(a, 5.0, 2.0), render(again, 5.0, 2.0))
    assert np.corrcoef(render(a, 0.0, 4.0), render(b, 0.0, 4.0))[0, 1] < 0.5


def test_wind_is_low_and_gusty_and_rain_is_bright_and_impulsive():
    wind, rain = render(places("wind", 1)[0], 0.0, 30.0), render(places("rain", 1)[0], 0.0, 30.0)
    assert share_below(wind, 500.0) > 0.6 and share_below(rain, 500.0) < 0.2
    half_seconds = wind.reshape(-1, SAMPLE_RATE // 2).astype(np.float64)
    assert np.std(10 * np.log10(np.mean(half_seconds**2, axis=1))) > 2.0  # gusts and lulls
    assert kurtosis(rain) > 1.0  # drops, not a steady hiss


def test_the_heldout_families_come_after_the_builtin_ones_and_move_no_builtin_place():
    from fedpse.world.cache import plan_world
    from fedpse.world.reader import world_key

    assert list(FAMILIES)[: len(BUILTIN)] == list(BUILTIN) and set(HELDOUT) <= set(FAMILIES)
    cfg = load_config()
    with_heldout = plan_world(cfg), world_key(cfg), [places(f, 2, seed=2024) for f in BUILTIN]
    registered = dict(FAMILIES)
    try:
        for family in HELDOUT:  # as if wind.py and rain.py did not exist
            del FAMILIES[family]
        without = plan_world(cfg), world_key(cfg), [places(f, 2, seed=2024) for f in BUILTIN]
    finally:
        FAMILIES.clear()
        FAMILIES.update(registered)
    assert with_heldout[1] == without[1] and with_heldout[2] == without[2]
    for key in ("users", "pretrain_noise"):
        assert json.dumps(with_heldout[0][key], default=vars) == json.dumps(without[0][key], default=vars)


def test_the_heldout_noise_world_has_the_default_worlds_users_in_other_noise():
    from fedpse.world.cache import plan_world

    default, heldout = plan_world(load_config()), plan_world(load_config(HELDOUT_CONFIG))
    assert {u["plan"].place["family"] for u in heldout["users"]} == set(HELDOUT)
    assert {p["place"]["family"] for p in heldout["pretrain_noise"]} == set(HELDOUT)
    for ours, theirs in zip(heldout["users"], default["users"], strict=True):
        assert ours["speaker"] == theirs["speaker"]  # the same voice ...
        assert (ours["plan"].user_id, ours["plan"].snr_db) == (theirs["plan"].user_id, theirs["plan"].snr_db)
        assert ours["plan"].segments == theirs["plan"].segments  # ... at the same SNRs, on the same timeline


def test_a_world_of_the_heldout_families_builds(tmp_path):
    from fedpse.world.cache import build_world

    world = build_world(tiny_config(tmp_path, "world.noise.families=[wind, rain]"), progress=False)
    manifest = json.loads((Path(world.root) / "manifest.json").read_text())
    assert {user["place"]["family"] for user in manifest["users"]} == set(HELDOUT)
    noisy, clean = world.test_set(world.user_ids()[0])[0]
    assert noisy.shape == clean.shape and np.all(np.isfinite(noisy)) and not np.allclose(noisy, clean)
