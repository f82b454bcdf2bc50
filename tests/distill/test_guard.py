"""The personalization guard (``adapt.guard``): it turns down a student fine-tuned on a teacher that returns its
input, keeps one fine-tuned on clean targets, decides the same way for the same seed and changes nothing when off."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedpse.config import load_config
from fedpse.distill import guard
from fedpse.distill.adapt import adapt, personalize_user, pseudo_targets
from fedpse.models.zoo import load_student, load_teacher

STEPS = ["adapt.steps=30", "adapt.segment_seconds=2.0", "adapt.patience=0"]


def _adapt_cfg(*extra: str):
    return load_config(overrides=[*STEPS, *extra]).adapt


@pytest.fixture(scope="module")
def generic():
    """The shipped generic 2x32 student."""
    return load_student(load_config())[0]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_guard_refuses_a_student_taught_by_a_teacher_that_returns_its_input(tiny_world, generic):
    _, world = tiny_world
    identity = load_teacher(load_config(overrides=["teacher.arch=identity"]))[0]
    noisy = world.adaptation_chunks("u0001", "noisy")
    student = copy.deepcopy(generic)
    cfg = _adapt_cfg("adapt.guard=on")
    result = adapt(student, noisy, pseudo_targets(identity, noisy), cfg, seed=3, teacher=identity)
    assert result.guard == "kept_generic"
    assert (
        result.guard_teacher_lead_db < -1.0
    )  # the teacher check: the mixture itself is no better on the probes
    assert result.guard_personalized_db < result.guard_generic_db - 1.0  # the student unlearned its denoising
    assert _same_weights(student, generic)  # the device keeps exactly the generic student
    turned_down = copy.deepcopy(generic)
    turned_down.load_state_dict(result.finetuned_state)
    assert not _same_weights(turned_down, generic)
    costs = result.costs(noisy)
    assert costs["guard_decision"] == "kept_generic" and costs["guard_macs"] > 0
    assert costs["device_macs"] >= costs["guard_macs"]  # the guard's compute is charged with the adaptation's


def test_the_guard_adopts_a_good_adaptation_and_off_changes_nothing(tiny_world, generic):
    _, world = tiny_world
    noisy = world.adaptation_chunks("u0002", "noisy")
    clean = world.adaptation_chunks("u0002", "clean")  # the oracle: the best teacher there is
    guarded, plain = copy.deepcopy(generic), copy.deepcopy(generic)
    result = adapt(guarded, noisy, clean, _adapt_cfg("adapt.guard=on"), seed=5)
    off = adapt(plain, noisy, clean, _adapt_cfg(), seed=5)
    assert result.guard == "adopted" and result.finetuned_state is None
    assert _same_weights(guarded, plain)  # the guard draws nothing from the training's random streams
    assert off.guard == "off" and not any(k.startswith("guard") for k in off.costs(noisy))
    assert result.device_macs == pytest.approx(off.device_macs + result.guard_macs)
    # the same student with a teacher check made elsewhere (the server, in pseudo_targets mode): its lead decides
    held = world.adaptation_chunks("u0002", "noisy")
    cfg = _adapt_cfg("adapt.guard=on")
    ahead = guard.TeacherCheck(generic_score=5.0, teacher_score=5.5)
    behind = guard.TeacherCheck(generic_score=5.0, teacher_score=4.5)
    assert guard.guard_verdict(cfg, generic, guarded, held, seed=5, teacher=ahead).decision == "adopted"
    assert guard.guard_verdict(cfg, generic, guarded, held, seed=5, teacher=behind).decision == "kept_generic"


def test_the_guard_decides_the_same_for_the_same_seed(tiny_world, generic):
    _, world = tiny_world
    noisy = world.adaptation_chunks("u0000", "noisy")
    worse = copy.deepcopy(generic)
    with torch.no_grad():
        worse.mask.bias.add_(0.5)  # a student that lets more noise through
    cfg = _adapt_cfg("adapt.guard=on", "adapt.guard_probe_seconds=8")
    first = guard.guard_verdict(cfg, generic, worse, noisy, seed=11)
    guard.probe_speech.cache_clear()  # the probe speech is synthesized again, identically
    again = guard.guard_verdict(cfg, generic, worse, noisy, seed=11)
    assert first == again
    other = guard.guard_verdict(cfg, generic, worse, noisy, seed=12)  # other noise windows
    assert other.generic_score != first.generic_score


def test_probe_speech_is_clean_speech_of_voices_of_its_own(tiny_world):
    _, world = tiny_world
    clips = guard.probe_speech(3)
    assert [len(c) for c in clips] == [int(guard.PROBE_SECONDS * 16000)] * 3
    assert all(np.sqrt(np.mean(c**2)) > 0.01 for c in clips)
    assert not clips[0].flags.writeable  # shared by every caller in the process
    world_voices = {v["voice_id"] for pool in world.manifest["voices"].values() for v in pool}
    assert world_voices and not any(v.startswith(f"{guard.PROBE_PREFIX}-") for v in world_voices)


def test_the_noise_estimate_is_the_generic_students_residual():
    chunks = [np.full(1600, 0.2, np.float32)]
    speech = [np.full(1600, 0.1, np.float32)]  # what the generic student kept
    residuals, snr_db = guard.noise_estimate(speech, chunks)
    assert np.allclose(residuals[0], 0.1) and snr_db == pytest.approx(0.0, abs=1e-6)
    _, clipped = guard.noise_estimate([c * 0 for c in chunks], chunks)  # all noise: clipped to the range
    assert clipped == guard.SNR_RANGE_DB[0]


def test_guard_dnsmos_compares_the_non_intrusive_score_of_teacher_and_students(
    tiny_world, generic, monkeypatch
):
    """guard=dnsmos with a stand-in scorer (the real one is an optional extra): the louder the output, the lower
    its OVR. The teacher's outputs for the held-out chunks are the pseudo-targets the device holds anyway."""
    from fedpse.models import dnsmos

    class Scorer:
        macs_per_second = 1e6

        def score_many(self, clips):
            return [{"sig": 3.0, "bak": 3.0, "ovr": 4.0 - 100 * float(np.sqrt(np.mean(c**2)))} for c in clips]

    monkeypatch.setattr(dnsmos, "load_dnsmos", lambda device="cpu": Scorer())
    _, world = tiny_world
    noisy = world.adaptation_chunks("u0000", "noisy")
    cfg = _adapt_cfg("adapt.guard=dnsmos")
    same = guard.guard_verdict(cfg, generic, copy.deepcopy(generic), noisy, seed=0)
    assert same.decision == "adopted" and np.isnan(same.teacher_lead)
    per_second = guard.forward_macs(generic, 1.0)
    assert same.macs == pytest.approx(2 * 24 * (per_second + 1e6))  # two students and two scorings, of 24 s
    identity = guard.guard_verdict(cfg, generic, copy.deepcopy(generic), noisy, seed=0, teacher_outputs=noisy)
    assert identity.decision == "kept_generic" and identity.teacher_lead < 0  # noisy "targets" score lower
    louder = copy.deepcopy(generic)
    with torch.no_grad():
        louder.mask.bias.add_(5.0)  # its mask opens: the noise comes through
    student = guard.guard_verdict(cfg, generic, louder, noisy, seed=0)
    assert student.decision == "kept_generic" and student.personalized_score < student.generic_score - 3.0


def test_personalize_user_reports_the_guard_and_the_score_it_prevented(tiny_world, generic):
    _, world = tiny_world
    identity = load_teacher(load_config(overrides=["teacher.arch=identity"]))[0]
    row = personalize_user(world, "u0001", generic, identity, _adapt_cfg("adapt.guard=on"), seed=3)
    assert row["guard_decision"] == "kept_generic" and row["gain_db"] == pytest.approx(0.0, abs=1e-9)
    assert row["si_sdr_unguarded"] < row["si_sdr_generic"]  # what the guard saved the user from
