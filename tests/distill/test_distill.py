"""Pretraining and single-user test-time adaptation on a tiny generated world."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from fedpse.cli import main
from fedpse.config import load_config
from fedpse.distill.adapt import (
    adapt,
    agreement,
    personalize_user,
    pseudo_targets,
    select_trainable,
)
from fedpse.distill.loss import neg_si_sdr_loss
from fedpse.distill.pretrain import MixingPool, pretrain
from fedpse.distill.scores import gap_closure
from fedpse.models.checkpoints import load_checkpoint
from fedpse.models.registry import build_model
from tests.conftest import TINY_WORLD


def _cfg(world_cfg, tmp_path, *extra):
    return load_config(
        overrides=[
            *TINY_WORLD,
            f"world.cache_dir={world_cfg.world.cache_dir}",
            f"world.noise.families={world_cfg.world.noise.families}".replace("'", ""),
            f"pretrain.out_dir={tmp_path}",
            "pretrain.batch_size=2",
            "pretrain.segment_seconds=1.0",
            "pretrain.val_mixtures=4",
            "student.checkpoint=null",
            "teacher.arch=gru",
            "teacher.layers=1",
            "teacher.hidden=16",
            "teacher.checkpoint=null",
            *extra,
        ]
    )


def test_pretraining_improves_validation_and_writes_a_model_card(tiny_world, tmp_path):
    world_cfg, world = tiny_world
    cfg = _cfg(
        world_cfg, tmp_path, "pretrain.steps=40", "pretrain.val_every=20", "pretrain.checkpoint_every=20"
    )
    result = pretrain(cfg, "student", world, progress=False, log=lambda _: None)
    model, card = load_checkpoint(
        result.best_path, expected_arch={"arch": "gru", "num_layers": 2, "hidden": 32}
    )
    history = card["history"]
    assert [h["step"] for h in history if h["step"] <= card["steps"]][0] == 0
    assert card["val_si_sdr"] == max(h["val_si_sdr"] for h in history)  # best.pt is the best validation
    # Training fits the training pool: loss on fresh training mixtures is lower than the untrained model's.
    trained, _ = load_checkpoint(result.last_path)
    torch.manual_seed(cfg.seed)
    untrained = build_model("gru", num_layers=2, hidden=32).eval()
    pool = MixingPool(world.pretrain_speech_files("train"), world.pretrain_noise_files("train"))
    noisy, clean = pool.batch(np.random.default_rng(99), 16, 16000, (-5.0, 10.0))
    with torch.no_grad():
        assert neg_si_sdr_loss(trained(noisy), clean) < neg_si_sdr_loss(untrained(noisy), clean)
    assert card["world_seed"] == world.seed and card["world_key"] == world.manifest["key"]
    assert card["arch"] == "gru 2x32" and card["params"] > 0 and card["macs_per_second"] > 0
    assert json.loads((tmp_path / "student" / "best.pt.card.json").read_text())["steps"] == card["steps"]


def test_pretraining_resumes_from_its_last_checkpoint(tiny_world, tmp_path):
    world_cfg, world = tiny_world
    cfg = _cfg(
        world_cfg, tmp_path, "pretrain.steps=10", "pretrain.val_every=5", "pretrain.checkpoint_every=5"
    )
    pretrain(cfg, "teacher", world, progress=False, log=lambda _: None)
    longer = _cfg(
        world_cfg, tmp_path, "pretrain.steps=15", "pretrain.val_every=5", "pretrain.checkpoint_every=5"
    )
    lines = []
    result = pretrain(longer, "teacher", world, resume=True, progress=False, log=lines.append)
    assert "resumed teacher at step 10" in lines[0]
    assert result.steps == 15
    _, card = load_checkpoint(result.last_path)
    assert [h["step"] for h in card["history"]] == [0, 5, 10, 15]


def test_resume_without_a_checkpoint_is_a_clear_error(tiny_world, tmp_path):
    world_cfg, world = tiny_world
    with pytest.raises(ValueError, match="no last.pt"):
        pretrain(_cfg(world_cfg, tmp_path), "student", world, resume=True, progress=False)


def test_noise_augmentation_makes_new_noises_and_is_off_by_default(tiny_world):
    _, world = tiny_world
    speech, noise = world.pretrain_speech_files("train"), world.pretrain_noise_files("train")
    plain, augmented = MixingPool(speech, noise), MixingPool(speech, noise, noise_augment=1.0)
    pool_audio = [x.astype(np.float32) / 32767 for x in plain.noise]

    def in_pool(x):  # a contiguous slice of one pool place (tiled if short)
        for place in pool_audio:
            tiled = np.tile(place, 3)
            hits = np.flatnonzero(np.isclose(tiled[: len(tiled) - len(x)], x[0]))
            if any(np.allclose(tiled[h : h + len(x)], x) for h in hits):
                return True
        return False

    plain_draws = [plain._noise(np.random.default_rng(s), 4000) for s in range(6)]
    assert all(in_pool(x) for x in plain_draws)  # noise_augment=0: the pool's own audio, untouched
    new = [augmented._noise(np.random.default_rng(s), 4000) for s in range(12)]
    assert all(x.dtype == np.float32 and x.shape == (4000,) and np.isfinite(x).all() for x in new)
    assert sum(not in_pool(x) for x in new) >= 10  # 7 of 8 draws change something (3 coin flips)
    # the same rng gives the same augmented noise (seeded training stays reproducible)
    again = augmented._noise(np.random.default_rng(3), 4000)
    assert np.array_equal(again, new[3])


def _noise_like(n_chunks=4, seconds=2.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return [
        (0.1 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.05 * rng.standard_normal(len(t))).astype(
            np.float32
        )
        for _ in range(n_chunks)
    ]


def test_a_few_kd_steps_bring_the_student_closer_to_the_teacher():
    torch.manual_seed(0)
    teacher = build_model("gru", num_layers=1, hidden=16).eval()
    student = build_model("gru", num_layers=2, hidden=32)
    chunks = _noise_like()
    targets = pseudo_targets(teacher, chunks)
    before = agreement(student, chunks, targets)
    cfg = load_config(
        overrides=["adapt.steps=40", "adapt.lr=0.003", "adapt.segment_seconds=1.0", "adapt.patience=0"]
    ).adapt
    result = adapt(student, chunks, targets, cfg, seed=1)
    assert (
        result.steps == 40
        and result.device_macs > 0
        and result.train_audio_seconds == pytest.approx(40 * 4 * 1.0)
    )
    assert agreement(student, chunks, targets) > before + 1.0


def test_the_stopping_rule_keeps_the_best_agreeing_weights():
    torch.manual_seed(0)
    teacher = build_model("gru", num_layers=1, hidden=16).eval()
    student = build_model("gru", num_layers=2, hidden=32)
    chunks = _noise_like(n_chunks=5)
    targets = pseudo_targets(teacher, chunks)
    cfg = load_config(
        overrides=[
            "adapt.steps=200",
            "adapt.lr=0.05",
            "adapt.eval_every=5",
            "adapt.patience=2",
            "adapt.holdout_fraction=0.4",
        ]
    ).adapt
    result = adapt(student, chunks, targets, cfg, seed=2)
    scores = [a["agreement_db"] for a in result.agreement_db]
    assert result.best_agreement_db == pytest.approx(max(scores))
    if result.stopped_early:  # after `patience` checks without improvement
        assert all(s <= result.best_agreement_db + 1e-3 for s in scores[-2:])
    hold = [chunks[i] for i in sorted(np.random.default_rng([2, 31]).permutation(5)[:2])]
    hold_t = pseudo_targets(teacher, hold)
    assert agreement(student, hold, hold_t) == pytest.approx(result.best_agreement_db, abs=1e-3)


def test_layer_selection_freezes_the_rest():
    student = build_model("gru", num_layers=2, hidden=8)
    before = copy.deepcopy(student.state_dict())
    teacher = build_model("gru", num_layers=1, hidden=4).eval()
    chunks = _noise_like(n_chunks=2, seconds=1.0)
    cfg = load_config(
        overrides=["adapt.steps=3", "adapt.layers=mask", "adapt.segment_seconds=0.5", "adapt.patience=0"]
    ).adapt
    adapt(student, chunks, pseudo_targets(teacher, chunks), cfg)
    after = student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("gru."))
    assert not torch.equal(before["mask.weight"], after["mask.weight"])
    assert {n for n, _ in student.named_parameters()} >= {p for p in ("mask.weight",)}
    assert len(select_trainable(student, "last_gru")) == 4  # weight_ih/hh, bias_ih/hh of layer 1


def test_gap_closure():
    assert gap_closure(8.0, 9.0, 10.0) == pytest.approx(0.5)
    assert np.isnan(gap_closure(8.0, 9.0, 7.0))


def test_personalize_user_scores_generic_personalized_and_teacher(tiny_world):
    cfg, world = tiny_world
    torch.manual_seed(0)
    student = build_model("gru", num_layers=2, hidden=32).eval()
    teacher = build_model("gru", num_layers=1, hidden=16).eval()
    acfg = load_config(overrides=["adapt.steps=5", "adapt.segment_seconds=1.0"]).adapt
    row = personalize_user(world, "u0001", student, teacher, acfg, seed=0)
    assert set(row) >= {
        "si_sdr_noisy",
        "si_sdr_generic",
        "si_sdr_personalized",
        "si_sdr_teacher",
        "gain_db",
        "gap_closure",
    }
    assert row["gain_db"] == pytest.approx(row["si_sdr_personalized"] - row["si_sdr_generic"])
    assert row["adaptation_audio_seconds"] == pytest.approx(24.0)


def test_adapt_command_writes_result_and_config(tiny_world, tmp_path, capsys):
    cfg, _ = tiny_world
    args = ["adapt", "--user", "u0002", "--out", str(tmp_path / "run")]
    overrides = [
        *TINY_WORLD,
        f"world.cache_dir={cfg.world.cache_dir}",
        "world.noise.families=[babble, hum, clatter]",
    ]
    overrides += [
        "student.checkpoint=null",
        "teacher.arch=gru",
        "teacher.layers=1",
        "teacher.hidden=8",
        "teacher.checkpoint=null",
    ]
    overrides += ["adapt.steps=3", "adapt.segment_seconds=1.0"]
    assert main(args + [x for o in overrides for x in ("--set", o)]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["user"] == "u0002" and result["steps"] == 3
    assert load_config(tmp_path / "run" / "config.yaml").adapt.steps == 3
    assert main(args[:2] + ["u9999"] + [x for o in overrides for x in ("--set", o)]) == 2
    assert "not in the world" in capsys.readouterr().err
