"""Stacked fine-tuning: several users' students stepped together (``distill/stacked.py``) give what ``adapt`` gives
each alone, up to float summation order.

Tolerances: the written-out GRU sums its matmuls in another order than ``nn.GRU``'s kernel, so a forward pass
differs by a few 1e-8 (float32 rounding of outputs of about 0.1) and gradients by about 1e-7 relative. Adam moves a
weight by at most about lr per step, whatever its gradient's size, so where a gradient is nearly zero its rounding
can change that step; the weights are compared against that bound, lr x steps. Measured here: after 6 steps of lr
1e-3, at most 0.55 % of it (3.3e-5); after 3 to 12 steps of lr 0.02, at most 1.1 % (6.6e-4); 5 % is asserted. The
stopping rule's agreements differed by at most 7e-6 dB (1e-3 asserted, the rule's own margin).
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from fedpse.config import load_config
from fedpse.distill.adapt import adapt
from fedpse.distill.stacked import AdaptJob, adapt_stacked, alone_reason
from fedpse.models.finite import NonFiniteOutputError
from fedpse.models.gru import GRUMaskNet
from fedpse.models.stacked_gru import gru_frames, stack_weights, stacked_forward

GRU_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def _adapt_cfg(*overrides: str):
    base = ["adapt.steps=6", "adapt.eval_every=3", "adapt.segment_seconds=1", "adapt.batch_size=2"]
    base.append(
        "adapt.holdout_fraction=0.25"
    )  # 1 of the 4 chunks a tiny-world user has: the stopping rule on
    return load_config(overrides=[*base, *overrides]).adapt


def _users(tiny_world) -> list[tuple[str, list[np.ndarray], list[np.ndarray]]]:
    """(user, noisy chunks, clean references as targets) for the 3 users of the tiny world."""
    _, world = tiny_world
    return [
        (u, world.adaptation_chunks(u, "noisy"), world.adaptation_chunks(u, "clean"))
        for u in world.user_ids()
    ]


def _students(count: int) -> list[GRUMaskNet]:
    torch.manual_seed(0)
    return [GRUMaskNet() for _ in range(count)]


def _alone_and_stacked(tiny_world, cfg):
    """Each user's student adapted by ``adapt`` alone, and the same students adapted stacked."""
    users = _users(tiny_world)
    students = _students(len(users))
    alone = [copy.deepcopy(s) for s in students]
    stacked = [copy.deepcopy(s) for s in students]
    results_alone = [
        adapt(m, x, y, cfg, seed=k, user=u) for k, (m, (u, x, y)) in enumerate(zip(alone, users, strict=True))
    ]
    jobs = [
        AdaptJob(m, x, y, cfg, seed=k, user=u)
        for k, (m, (u, x, y)) in enumerate(zip(stacked, users, strict=True))
    ]
    return students, (alone, results_alone), (stacked, adapt_stacked(jobs))


def _max_weight_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(
        float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def _within_rounding(a: torch.nn.Module, b: torch.nn.Module, cfg, steps: int) -> bool:
    """Weights that differ by float rounding only: at most 5 % of the farthest Adam can move them (lr x steps)."""
    return _max_weight_difference(a, b) <= 0.05 * cfg.lr * steps


# ------------------------------------------------------------------------------------- the written-out GRU
def test_the_written_out_gru_gives_nn_grus_outputs_and_gradients():
    torch.manual_seed(0)
    grus = [torch.nn.GRU(20, 8, batch_first=True) for _ in range(3)]
    x = torch.randn(3, 2, 15, 20)  # 3 users, 2 crops, 15 frames
    weights = {n: torch.stack([getattr(g, n).detach() for g in grus]).requires_grad_(True) for n in GRU_NAMES}
    out = gru_frames(x, *(weights[n] for n in GRU_NAMES))
    (out * torch.linspace(-1, 1, 8)).sum().backward()
    for u, gru in enumerate(grus):
        expected, _ = gru(x[u])
        (expected * torch.linspace(-1, 1, 8)).sum().backward()
        torch.testing.assert_close(out[u], expected, rtol=1e-5, atol=1e-6)
        for name in GRU_NAMES:
            torch.testing.assert_close(weights[name].grad[u], getattr(gru, name).grad, rtol=1e-4, atol=1e-6)


def test_stacked_students_enhance_as_each_student_alone():
    students = _students(3)
    wave = 0.1 * torch.randn(3, 2, 8000)
    out = stacked_forward(students[0], stack_weights(students), wave)
    for u, student in enumerate(students):
        torch.testing.assert_close(out[u], student(wave[u]), rtol=0, atol=1e-6)


def test_one_adam_over_stacked_weights_is_each_users_own_adam_bit_for_bit():
    torch.manual_seed(0)
    stacked = torch.randn(3, 6, 5, requires_grad=True)
    own = [stacked[u].detach().clone().requires_grad_(True) for u in range(3)]
    opt = torch.optim.Adam([stacked], lr=1e-3)
    opts = [torch.optim.Adam([w], lr=1e-3) for w in own]
    for _ in range(4):
        grad = torch.randn(3, 6, 5)
        stacked.grad = grad.clone()
        opt.step()
        for u in range(3):
            own[u].grad = grad[u].clone()
            opts[u].step()
    assert all(torch.equal(stacked[u], own[u]) for u in range(3))


# ----------------------------------------------------------------------------------------- stacked adapt
def test_three_users_stacked_adapt_as_three_adapt_calls(tiny_world):
    cfg = _adapt_cfg()
    students, (alone, results_alone), (stacked, results_stacked) = _alone_and_stacked(tiny_world, cfg)
    for k in range(3):
        a, s = results_alone[k], results_stacked[k]
        assert (s.steps, s.stopped_early) == (a.steps, a.stopped_early) == (6, False)
        # same crops, same costs: every count comes from the same session code
        assert (s.train_audio_seconds, s.device_macs) == (a.train_audio_seconds, a.device_macs)
        assert [r["step"] for r in s.agreement_db] == [r["step"] for r in a.agreement_db] == [0, 3, 6]
        np.testing.assert_allclose(
            [r["agreement_db"] for r in s.agreement_db],
            [r["agreement_db"] for r in a.agreement_db],
            atol=1e-3,
        )
        assert _within_rounding(stacked[k], alone[k], cfg, steps=6)
        assert _max_weight_difference(alone[k], students[k]) > 1e-3  # the students did move
        assert all(p.requires_grad for p in stacked[k].parameters()) and not stacked[k].training


def test_users_stop_early_alone_and_leave_the_stack(tiny_world):
    cfg = _adapt_cfg("adapt.steps=12", "adapt.eval_every=1", "adapt.patience=1", "adapt.lr=0.02")
    _, (alone, results_alone), (stacked, results_stacked) = _alone_and_stacked(tiny_world, cfg)
    assert len({r.steps for r in results_alone}) > 1  # users left the stack at different steps
    for k in range(3):
        a, s = results_alone[k], results_stacked[k]
        assert (s.steps, s.stopped_early) == (a.steps, a.stopped_early)
        assert s.best_agreement_db == pytest.approx(a.best_agreement_db, abs=1e-3)
        assert _within_rounding(stacked[k], alone[k], cfg, steps=a.steps)


def test_the_layers_left_frozen_stay_exactly_as_they_were(tiny_world):
    students, _, (stacked, results) = _alone_and_stacked(tiny_world, _adapt_cfg("adapt.layers=mask"))
    for before, after in zip(students, stacked, strict=True):
        for (name, p), q in zip(before.named_parameters(), after.parameters(), strict=True):
            assert torch.equal(p, q) == name.startswith("gru."), name


def test_a_users_bad_targets_fail_that_user_only(tiny_world):
    (u0, x0, y0), (u1, x1, y1), (u2, x2, y2) = _users(tiny_world)
    cfg = _adapt_cfg()
    bad = [y.copy() for y in y1]
    bad[0][5] = np.nan
    students = _students(3)
    results = adapt_stacked(
        [
            AdaptJob(m, x, y, cfg, seed=0, user=u)
            for m, (u, x, y) in zip(students, [(u0, x0, y0), (u1, x1, bad), (u2, x2, y2)], strict=True)
        ]
    )
    assert isinstance(results[1], NonFiniteOutputError) and u1 in str(results[1])
    assert results[0].steps == results[2].steps == 6


def test_refresh_runs_adapt_alone_bit_for_bit(tiny_world):
    cfg = _adapt_cfg("adapt.refresh=remix")
    (user, noisy, targets), *_ = _users(tiny_world)
    (student,) = _students(1)
    job = AdaptJob(copy.deepcopy(student), noisy, targets, cfg, seed=3, user=user)
    assert "adapt.refresh=remix" in alone_reason(job)
    expected = copy.deepcopy(student)
    result = adapt(expected, noisy, targets, cfg, seed=3, user=user)
    (stacked_result,) = adapt_stacked([job])
    assert all(
        torch.equal(p, q) for p, q in zip(job.student.parameters(), expected.parameters(), strict=True)
    )
    same = dataclasses.replace(stacked_result, wall_seconds=0), dataclasses.replace(result, wall_seconds=0)
    assert repr(same[0]) == repr(same[1])  # every field (NaN guard scores included)


def test_students_that_cannot_be_written_out_are_named():
    cfg = _adapt_cfg()
    bidirectional = AdaptJob(GRUMaskNet(bidirectional=True), [], [], cfg)
    assert alone_reason(bidirectional) == "the student's GRU is bidirectional"
    assert "not a GRUMaskNet" in alone_reason(AdaptJob(torch.nn.Identity(), [], [], cfg))
