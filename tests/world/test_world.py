"""The built-in world: users with unlabeled adaptation streams, held-out test sets, a disjoint pretraining pool."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedpse.audio.io import SAMPLE_RATE
from fedpse.audio.metrics import si_sdr
from fedpse.world.cache import build_world, plan_world
from fedpse.world.reader import World, WorldError, world_dir
from fedpse.world.users import SegmentSpec, check_disjoint, segment_layout
from tests.conftest import tiny_config


def test_users_have_adaptation_chunks_and_test_mixtures(tiny_world):
    cfg, world = tiny_world
    assert world.user_ids() == ["u0000", "u0001", "u0002"]
    for uid in world.user_ids():
        chunks = world.adaptation_chunks(uid)
        assert [len(c) for c in chunks] == [6 * SAMPLE_RATE] * 4  # 24 s in 6 s chunks
        tests = world.test_set(uid)
        assert len(tests) == 2
        for noisy, clean in tests:
            assert noisy.dtype == np.float32 and len(noisy) == len(clean) == 4 * SAMPLE_RATE
            assert np.all(np.isfinite(noisy)) and np.max(np.abs(noisy)) <= 0.95 + 1e-4
            assert np.std(clean) > 1e-3  # there is speech in every test mixture


def test_mixtures_are_at_the_users_snr(tiny_world):
    _, world = tiny_world
    for uid in world.user_ids():
        for seg in world.segments(uid, "test"):
            noisy, clean = world.load(uid, seg["name"], "noisy"), world.load(uid, seg["name"], "clean")
            noise = noisy - clean
            snr = 10 * np.log10(np.sum(clean**2) / np.sum(noise**2))
            assert abs(snr - seg["snr_db"]) < 0.2
            assert abs(si_sdr(noisy, clean) - seg["snr_db"]) < 1.0  # SI-SDR of the mixture ~ its SNR


def test_test_noise_never_overlaps_adaptation_noise(tiny_world):
    _, world = tiny_world
    for uid in world.user_ids():
        segs = [
            SegmentSpec(**{k: s[k] for k in ("name", "part", "noise_start_s", "seconds", "snr_db")})
            for s in world.user(uid)["segments"]
        ]
        check_disjoint(segs, uid)
        last_adapt = max(s.noise_start_s + s.seconds for s in segs if s.part == "adapt")
        assert min(s.noise_start_s for s in segs if s.part == "test") >= last_adapt


def test_check_disjoint_catches_an_overlap():
    segs = [
        SegmentSpec("adapt_000", "adapt", 0.0, 10.0, 0.0),
        SegmentSpec("test_000", "test", 9.0, 10.0, 0.0),
    ]
    with pytest.raises(AssertionError, match="overlaps"):
        check_disjoint(segs, "u0")


def test_test_sentences_are_not_adaptation_sentences(tiny_world):
    _, world = tiny_world
    for uid in world.user_ids():
        texts = world.user(uid)["texts"]
        test_texts = {t for mixture in texts["test"] for t in mixture}
        assert test_texts and not test_texts & set(texts["adapt"])


def test_pretraining_pool_is_disjoint_from_users(tiny_world):
    _, world = tiny_world
    m = world.manifest
    user_voices = {u["speaker"] for u in m["users"]}
    pre_voices = {e["speaker"] for e in m["pretrain_speech"]}
    babble = {v["voice_id"] for pool in m["babble"].values() for v in pool["voices"]}
    assert not user_voices & pre_voices and not user_voices & babble and not pre_voices & babble
    user_places = {u["place"]["env_id"] for u in m["users"]}
    assert not user_places & {e["place"] for e in m["pretrain_noise"]}
    train, val = world.pretrain_speech_files("train"), world.pretrain_speech_files("val")
    assert train and val and not set(train) & set(val)
    assert world.pretrain_noise_files("train") and world.pretrain_noise_files("val")


def test_same_config_and_seed_give_identical_manifest_and_audio(tiny_world, tmp_path):
    cfg, world = tiny_world
    again = build_world(
        tiny_config(tmp_path, "world.noise.families=[babble, hum, clatter]", "world.workers=2"),
        progress=False,
    )
    a, b = dict(world.manifest), dict(again.manifest)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert again.verify() == []


def test_a_different_seed_gives_a_different_world(tmp_path):
    a = plan_world(tiny_config(tmp_path, "seed=1"))
    b = plan_world(tiny_config(tmp_path, "seed=2"))
    assert (
        a["users"][0]["plan"].speaker != b["users"][0]["plan"].speaker
        or a["users"][0]["plan"].snr_db != b["users"][0]["plan"].snr_db
    )


def test_a_matching_cache_is_reused_and_a_partial_one_resumes(tmp_path):
    cfg = tiny_config(tmp_path, "world.num_users=2", "world.noise.families=[stationary]")
    world = build_world(cfg, progress=False)
    flac = world.root / "users" / "u0000" / "adapt_000.noisy.flac"
    mtime = flac.stat().st_mtime_ns
    assert build_world(cfg, progress=False).manifest == world.manifest
    assert flac.stat().st_mtime_ns == mtime  # reused, not rewritten
    # Simulate a crash after user 0 finished: no manifest, user 1 incomplete.
    (world.root / "manifest.json").unlink()
    (world.root / "users" / "u0001" / "user.json").unlink()
    resumed = build_world(cfg, progress=False)
    assert flac.stat().st_mtime_ns == mtime
    assert resumed.manifest == world.manifest


def test_opening_a_world_that_is_missing_or_stale_is_a_clear_error(tmp_path):
    cfg = tiny_config(tmp_path, "world.num_users=1", "world.noise.families=[stationary]")
    with pytest.raises(WorldError, match="fedpse world build"):
        World.open(cfg)
    build_world(cfg, progress=False)
    manifest = world_dir(cfg) / "manifest.json"
    data = json.loads(manifest.read_text())
    data["key"] = "0" * 64
    manifest.write_text(json.dumps(data))
    with pytest.raises(WorldError, match="does not match"):
        World.open(cfg)
    with pytest.raises(WorldError, match="not in the world"):
        build_world(cfg, progress=False).user("u9999")


def test_segment_layout_covers_the_requested_minutes(tmp_path):
    cfg = tiny_config(tmp_path, "world.adaptation_minutes=0.25", "world.chunk_seconds=4")
    layout = segment_layout(cfg)
    adapt = [s for s in layout if s.part == "adapt"]
    assert sum(s.seconds for s in adapt) == pytest.approx(15.0)
    assert adapt[-1].seconds == pytest.approx(3.0)  # the last chunk is shorter


def test_reverberant_users_get_a_dry_or_early_reference(tmp_path):
    common = [
        "world.num_users=1",
        "world.noise.families=[stationary]",
        "world.room.enabled=true",
        "world.room.rt60_s=[0.3, 0.4]",
    ]
    dry = build_world(tiny_config(tmp_path / "d", *common, "world.room.target=dry"), progress=False)
    early = build_world(tiny_config(tmp_path / "e", *common, "world.room.target=early"), progress=False)
    assert dry.user("u0000")["room"]["rt60_s"] == early.user("u0000")["room"]["rt60_s"]
    noisy_d, clean_d = dry.test_set("u0000")[0]
    _, clean_e = early.test_set("u0000")[0]
    # The early-reverb reference is closer to the reverberant mixture than the dry one, and both differ.
    assert not np.allclose(clean_d, clean_e, atol=1e-3)
    assert si_sdr(noisy_d, clean_e) > si_sdr(noisy_d, clean_d)
