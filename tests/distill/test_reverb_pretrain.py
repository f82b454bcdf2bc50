"""Reverberant pretraining (joint denoising + dereverberation): RIR banks of pretraining rooms disjoint from users'
rooms, reverberant training batches whose dry or early target is aligned with the input's direct path, warm starts
from a shipped checkpoint, and what the model card records."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpse.config import ConfigError, load_config
from fedpse.distill.pretrain import MixingPool, pretrain, reverb_banks
from fedpse.models.checkpoints import load_checkpoint
from fedpse.world.rooms import RirBank, Room, pretraining_rooms, room_key
from tests.conftest import TINY_WORLD

SHORT_ROOMS = "pretrain.reverb_rt60_s=[0.2, 0.35]"  # short RIRs: fast to simulate


def _room_world_cfg(cache, *extra):
    return load_config(
        overrides=[
            *TINY_WORLD,
            f"world.cache_dir={cache}",
            "world.noise.families=[hum, babble]",
            "world.room.enabled=true",
            "world.room.rt60_s=[0.25, 0.4]",
            "world.room.target=early",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def room_world(tmp_path_factory):
    """A 3-user world whose users sit in rooms (early-reverb references)."""
    from fedpse.world.cache import build_world

    cfg = _room_world_cfg(tmp_path_factory.mktemp("room-worlds"))
    return cfg, build_world(cfg, progress=False)


def _pretrain_cfg(world_cfg, out, *extra):
    return load_config(
        overrides=[
            *TINY_WORLD,
            f"world.cache_dir={world_cfg.world.cache_dir}",
            "world.noise.families=[hum, babble]",
            "world.room.enabled=true",
            "world.room.rt60_s=[0.25, 0.4]",
            "world.room.target=early",
            f"pretrain.out_dir={out}",
            "pretrain.batch_size=2",
            "pretrain.segment_seconds=1.0",
            "pretrain.val_mixtures=4",
            "pretrain.reverb_rooms=5",
            SHORT_ROOMS,
            "student.checkpoint=null",
            *extra,
        ]
    )


def _one_room(seed=3) -> Room:
    return pretraining_rooms(seed, "train", 1, (0.3, 0.4))[0]


@pytest.mark.parametrize("target", ["dry", "early"])
def test_reverberant_input_and_target_share_the_direct_path(target, tmp_path):
    """An impulse in the speech lands at the same sample in the reverberant input and in its target: no delay."""
    bank = RirBank([_one_room()], target, 50.0, tmp_path)
    n, at = 8000, 3000
    speech = np.zeros(bank.pre + n, np.float32)
    speech[bank.pre + at] = 1.0
    reverberant, clean = bank.apply(speech, np.random.default_rng(0), n)
    assert reverberant.shape == clean.shape == (n,)
    assert int(np.argmax(np.abs(reverberant))) == at  # direct path, unit gain, at the impulse
    assert 0.5 < float(reverberant[at]) <= 1.05  # (a fractional delay spreads the unit gain over a few taps)
    assert int(np.argmax(np.abs(clean))) == at
    energy_after = float(np.sum(reverberant[at + 800 :] ** 2))  # 50 ms on: the late tail
    if target == "dry":
        assert np.array_equal(clean, speech[bank.pre :])
    else:
        assert float(np.sum(clean[at + 1000 :] ** 2)) < 1e-6  # early target ends ~55 ms after the direct path
    assert energy_after > 1e-3  # the input really is reverberant
    # the lead-in's tail reaches into the crop: an impulse before the crop still rings in it
    lead = np.zeros_like(speech)
    lead[bank.pre - 200] = 1.0
    ringing, _ = bank.apply(lead, np.random.default_rng(0), n)
    assert float(np.sum(ringing**2)) > 1e-4


def test_reverberant_batches_are_aligned_and_share_zero_is_bit_identical(room_world):
    cfg, world = room_world
    speech, noise = world.pretrain_speech_files("train"), world.pretrain_noise_files("train")
    banks = reverb_banks(_pretrain_cfg(cfg, "unused"), world, log=lambda _: None)
    plain = MixingPool(speech, noise)
    off = MixingPool(speech, noise, reverb=banks["train"], reverb_share=0.0)
    a = plain.batch(np.random.default_rng(5), 3, 16000, (0.0, 5.0))
    b = off.batch(np.random.default_rng(5), 3, 16000, (0.0, 5.0))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # share 0: exactly the old batches

    wet = MixingPool(speech, noise, reverb=banks["train"], reverb_share=1.0)
    rng = np.random.default_rng(1)
    for _ in range(4):
        noisy, clean = wet.mixture(rng, 16000, (40.0, 40.0))  # almost no noise: noisy ~ reverberant speech
        assert np.isfinite(noisy).all() and np.isfinite(clean).all()
        xc = np.correlate(noisy, clean, mode="full")[len(clean) - 1 - 400 : len(clean) + 400]
        assert int(np.argmax(xc)) - 400 == 0  # target aligned with the input's direct path
        assert float(np.mean((noisy - clean) ** 2)) > 1e-3 * float(np.mean(clean**2))  # and it is reverberant


def test_pretraining_rooms_never_are_users_rooms(room_world):
    cfg, world = room_world
    users = [Room.from_dict(r) for r in world.user_rooms()]
    assert len(users) == 3
    banks = reverb_banks(_pretrain_cfg(cfg, "unused"), world, log=lambda _: None)
    train, val = banks["train"].rooms, banks["val"].rooms
    assert len(train) == 5 and len(val) == 1
    keys = [{room_key(r) for r in rooms} for rooms in (users, train, val)]
    seeds = [{r.seed for r in rooms} for rooms in (users, train, val)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not keys[i] & keys[j] and not seeds[i] & seeds[j]
    # a room that is a user's is skipped, even when the pretraining stream draws it
    first = pretraining_rooms(cfg.seed, "train", 3, (0.2, 0.35))
    again = pretraining_rooms(cfg.seed, "train", 3, (0.2, 0.35), exclude=[first[1]])
    assert again[0] == first[0] and first[1] not in again and again[1] == first[2]


def test_reverberant_pretraining_warm_starts_and_records_its_rooms(room_world, tmp_path):
    world_cfg, world = room_world
    first = _pretrain_cfg(world_cfg, tmp_path / "a", "pretrain.steps=3", "pretrain.val_every=3")
    start = pretrain(first, "student", world, progress=False, log=lambda _: None)
    lines: list[str] = []
    cfg = _pretrain_cfg(
        world_cfg,
        tmp_path / "b",
        "pretrain.steps=4",
        "pretrain.val_every=2",
        "pretrain.reverb_share=0.75",
        f"pretrain.init_checkpoint={start.best_path}",
    )
    result = pretrain(cfg, "student", world, progress=False, log=lines.append)
    _, card = load_checkpoint(result.best_path)
    warm, _ = load_checkpoint(start.best_path)
    assert any("reverberant pretraining: 5 train + 1 validation rooms" in line for line in lines)
    assert any(f"starting from {start.best_path}" in line for line in lines)
    assert card["reverb"]["share"] == 0.75 and card["reverb"]["train"]["target"] == "early"
    assert card["reverb"]["noise_reverberated"] is False
    assert card["init_checkpoint"]["ref"] == str(start.best_path)
    # with lr 0 the trained weights are exactly the warm start's: it really started from them
    frozen = _pretrain_cfg(
        world_cfg,
        tmp_path / "c",
        "pretrain.steps=1",
        "pretrain.lr=0",
        "pretrain.reverb_share=0.75",
        f"pretrain.init_checkpoint={start.best_path}",
    )
    last = pretrain(frozen, "student", world, progress=False, log=lambda _: None).last_path
    trained, warm = load_checkpoint(last)[0], load_checkpoint(start.best_path)[0]
    assert all(
        torch.equal(a, b)
        for a, b in zip(trained.state_dict().values(), warm.state_dict().values(), strict=True)
    )


def test_bad_reverberation_settings_are_one_line_errors(room_world, tmp_path):
    world_cfg, world = room_world
    with pytest.raises(ConfigError, match=r"pretrain.reverb_rt60_s: expected RT60 values above 0 s"):
        pretrain(
            _pretrain_cfg(
                world_cfg, tmp_path, "pretrain.reverb_share=0.5", "pretrain.reverb_rt60_s=[0, 0.3]"
            ),
            "student",
            world,
            progress=False,
            log=lambda _: None,
        )
    with pytest.raises(
        ConfigError, match=r"pretrain.init_checkpoint: checkpoint file .*nowhere.pt not found"
    ):
        pretrain(
            _pretrain_cfg(world_cfg, tmp_path, f"pretrain.init_checkpoint={tmp_path}/nowhere.pt"),
            "student",
            world,
            progress=False,
            log=lambda _: None,
        )
