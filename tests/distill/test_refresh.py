"""Teacher refresh during adaptation (``adapt.refresh``): sequential, EMA, bootstrapped remixing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedpse.config import ConfigError, load_config
from fedpse.distill.adapt import _crops, adapt, agreement, select_trainable
from fedpse.distill.loss import neg_si_sdr_loss
from fedpse.distill.refresh import TargetRefresh, derangement
from fedpse.models.macs import forward_macs, train_macs
from fedpse.models.registry import build_model

VARIANTS = ["sequential", "ema", "remix", "remix_ema"]


def _user(n_chunks=4, seconds=2.0, seed=0):
    """A tiny user: tones ('speech') in white noise, and a teacher that is right (its targets are the tones)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tones = [0.1 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) for _ in range(n_chunks)]
    noisy = [(s + 0.05 * rng.standard_normal(len(t))).astype(np.float32) for s in tones]
    return noisy, [s.astype(np.float32) for s in tones]


def _setup(n_chunks=4):
    torch.manual_seed(0)
    student = build_model("gru", num_layers=2, hidden=32)
    return (student, *_user(n_chunks))


def _cfg(*extra):
    base = ["adapt.steps=40", "adapt.lr=0.003", "adapt.segment_seconds=1.0", "adapt.patience=0"]
    return load_config(overrides=[*base, "adapt.refresh_every=10", *extra]).adapt


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_refresh_variant_still_brings_the_student_toward_the_teacher(variant):
    student, chunks, targets = _setup()
    before = agreement(student, chunks, targets)  # = - the KD loss on whole chunks
    result = adapt(student, chunks, targets, _cfg(f"adapt.refresh={variant}"), seed=1)
    assert result.steps == 40
    assert agreement(student, chunks, targets) > before + 1.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_refresh_is_deterministic_for_a_seed(variant):
    student, chunks, targets = _setup()
    cfg = _cfg(f"adapt.refresh={variant}", "adapt.steps=15")
    a, b, c = copy.deepcopy(student), copy.deepcopy(student), copy.deepcopy(student)
    adapt(a, chunks, targets, cfg, seed=4)
    adapt(b, chunks, targets, cfg, seed=4)
    adapt(c, chunks, targets, cfg, seed=5)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not all(torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())


def test_refresh_off_is_the_plain_kd_loop_bit_for_bit():
    """refresh=off trains exactly as the paper's loop written out here (no refresh code involved)."""
    student, chunks, targets = _setup()
    cfg = _cfg("adapt.refresh=off", "adapt.holdout_fraction=0", "adapt.steps=12")
    ours = copy.deepcopy(student)
    adapt(ours, chunks, targets, cfg, seed=3)

    plain = copy.deepcopy(student)
    rng = np.random.default_rng([3, 31])
    rng.permutation(len(chunks))  # the hold-out split's draw (nothing held out here)
    opt = torch.optim.Adam(select_trainable(plain, "all"), lr=cfg.lr)
    for _ in range(cfg.steps):
        plain.train()
        x, y = _crops(rng, chunks, targets, cfg.batch_size, 16000)
        loss = neg_si_sdr_loss(plain(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(ours.state_dict()[k], plain.state_dict()[k]) for k in ours.state_dict())


@pytest.mark.parametrize("size", [2, 3, 4, 8])
def test_remix_never_pairs_a_crop_with_its_own_noise(size):
    rng = np.random.default_rng(0)
    for _ in range(200):
        perm = derangement(rng, size)
        assert sorted(perm) == list(range(size)) and not (perm == np.arange(size)).any()
    student, _, _ = _setup()
    refresh = TargetRefresh(_cfg("adapt.refresh=remix", f"adapt.batch_size={size}"), student, [], [], seed=0)
    x, s = torch.randn(size, 1600), torch.randn(size, 1600)
    new_x, new_s = refresh.batch(1, x, s)
    assert torch.equal(new_s, s)  # the speech estimates stay the targets
    noise, new_noise = x - s, new_x - s
    for i in range(size):  # each new mixture holds another crop's noise estimate, never its own
        owners = [j for j in range(size) if torch.allclose(new_noise[i], noise[j], atol=1e-5)]
        assert len(owners) == 1 and owners[0] != i


def test_remix_needs_two_crops_per_batch():
    with pytest.raises(ConfigError, match=r"adapt.refresh=remix .* adapt.batch_size >= 2, got 1"):
        load_config(overrides=["adapt.refresh=remix", "adapt.batch_size=1"])


def test_refreshed_targets_are_charged_as_student_forward_passes():
    student, chunks, targets = _setup()
    steps, every, batch, seconds = 25, 10, 4, 1.0
    extra = [f"adapt.steps={steps}", f"adapt.batch_size={batch}", "adapt.holdout_fraction=0"]
    plain = adapt(copy.deepcopy(student), chunks, targets, _cfg(*extra), seed=2)
    assert plain.refresh_macs == 0 and plain.refresh_audio_seconds == 0
    assert plain.costs(chunks)["refresh_macs"] == 0

    seq = adapt(copy.deepcopy(student), chunks, targets, _cfg(*extra, "adapt.refresh=sequential"), seed=2)
    assert seq.refresh_generations == (steps - 1) // every == 2  # before steps 11 and 21
    assert seq.refresh_audio_seconds == pytest.approx(2 * 4 * 2.0)  # every training chunk, each time
    ema = adapt(copy.deepcopy(student), chunks, targets, _cfg(*extra, "adapt.refresh=ema"), seed=2)
    assert ema.refresh_audio_seconds == pytest.approx((steps - every) * batch * seconds)  # after the warm-up
    remix = adapt(copy.deepcopy(student), chunks, targets, _cfg(*extra, "adapt.refresh=remix"), seed=2)
    assert remix.refresh_macs == 0  # remixing is additions only
    for r in (seq, ema):
        assert r.refresh_macs > 0
        assert r.refresh_macs == pytest.approx(forward_macs(student, r.refresh_audio_seconds))
        assert r.device_macs == pytest.approx(plain.device_macs + r.refresh_macs)
        assert r.costs(chunks)["refresh_macs"] == r.refresh_macs
    assert plain.device_macs == pytest.approx(train_macs(student, steps * batch * seconds))


def test_the_stopping_rule_measures_agreement_with_the_teachers_held_out_targets():
    """Even when the training targets are the student's own outputs (sequential, refresh_mix=1), the stopping rule
    keeps the weights that agree best with the teacher on the held-out chunks."""
    student, chunks, targets = _setup(n_chunks=5)
    cfg = _cfg(
        "adapt.refresh=sequential",
        "adapt.refresh_mix=1",
        "adapt.eval_every=5",
        "adapt.patience=2",
        "adapt.holdout_fraction=0.4",
    )
    result = adapt(student, chunks, targets, cfg, seed=2)
    held = sorted(np.random.default_rng([2, 31]).permutation(5)[:2])
    kept = agreement(student, [chunks[i] for i in held], [targets[i] for i in held])
    assert kept == pytest.approx(result.best_agreement_db, abs=1e-3)
    assert result.best_agreement_db == pytest.approx(max(a["agreement_db"] for a in result.agreement_db))


def test_clean_targets_refuse_a_refresh(tiny_world):
    from fedpse.distill.adapt import personalize_user

    _, world = tiny_world
    student = build_model("gru", num_layers=2, hidden=8)
    with pytest.raises(ConfigError, match="adapt.refresh=ema: clean targets need no refresh"):
        personalize_user(world, "u0001", student, student, _cfg("adapt.refresh=ema"), targets="clean")


def test_oracle_clean_refuses_a_refresh_and_pseudo_targets_accepts_it():
    from fedpse.federation.strategies import strategy_class

    cfg = load_config(overrides=["adapt.refresh=remix"])
    strategy_class("pseudo_targets").check(cfg)
    strategy_class("cloud_student").check(cfg)
    with pytest.raises(ConfigError, match="oracle_clean.*set adapt.refresh=off"):
        strategy_class("oracle_clean").check(cfg)
