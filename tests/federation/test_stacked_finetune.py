"""Cloud fine-tuning across users: by default each user's server copy is fine-tuned alone, where its conversation
asks (``adapt``, as always); with ``device.stack_finetune`` on a server that batches (here ``device.batch_on_cpu``)
``drive`` gathers the requests of a loop step and the students step together (``distill/stacked.py``).

Scores are compared to 1e-3 dB: stacked fine-tuning equals ``adapt`` up to float summation order (after 6 steps the
weights differed by at most 3.3e-5, ``tests/distill/test_stacked.py``); the runs below measured no difference at
the 6 decimals ``users.csv`` holds."""

from __future__ import annotations

import copy
import types
from pathlib import Path

import pytest
import torch

from fedpse.config import load_config
from fedpse.distill.adapt import adapt
from fedpse.distill.stacked import AdaptJob
from fedpse.federation.plan import RunPlan
from fedpse.federation.runner import simulate_many
from fedpse.federation.strategies.base import Outcome, ServerSide, UserRound, drive
from fedpse.federation.strategies.cloud_student import FineTuneRequest
from fedpse.models.gru import GRUMaskNet
from fedpse.results.store import RunStore
from tests.federation.test_federation_parts import tiny_run_config


def _server(*overrides: str) -> ServerSide:
    cfg = load_config(overrides=["device.server=cpu", "federation.cache_dir=null", *overrides])
    return ServerSide(types.SimpleNamespace(cfg=cfg))


class FineTuneEach:
    """A delivery mode's server side only: each user's conversation asks for its student's fine-tuning."""

    name = "test"

    def __init__(self, server: ServerSide, jobs: dict[str, AdaptJob]):
        self.server, self.jobs = server, jobs
        self.got: dict[str, object] = {}

    def conversation(self, job: UserRound):
        self.got[job.user] = yield FineTuneRequest(self.server, self.jobs[job.user])
        return Outcome(job.user)


def _users(tiny_world, *adapt_overrides: str) -> dict[str, tuple[GRUMaskNet, AdaptJob]]:
    """Each tiny-world user's generic student and its fine-tuning on its clean references (4 steps)."""
    _, world = tiny_world
    cfg = load_config(overrides=["adapt.steps=4", "adapt.segment_seconds=1", *adapt_overrides]).adapt
    torch.manual_seed(0)
    users = {}
    for k, user in enumerate(world.user_ids()):
        student = GRUMaskNet()
        noisy, clean = world.adaptation_chunks(user, "noisy"), world.adaptation_chunks(user, "clean")
        users[user] = (student, AdaptJob(copy.deepcopy(student), noisy, clean, cfg, seed=k, user=user))
    return users


def _drive(server: ServerSide, users, monkeypatch) -> tuple[FineTuneEach, list[tuple[str, list[str]]]]:
    """Drive the users' conversations; return the mode and the fine-tuning calls made (path, users)."""
    calls: list[tuple[str, list[str]]] = []
    run, run_together = FineTuneRequest.run, FineTuneRequest.run_together.__func__

    def alone(self):
        calls.append(("alone", [self.job.user]))
        return run(self)

    def together(cls, works):
        calls.append(("together", [w.job.user for w in works]))
        return run_together(cls, works)

    monkeypatch.setattr(FineTuneRequest, "run", alone)
    monkeypatch.setattr(FineTuneRequest, "run_together", classmethod(together))
    mode = FineTuneEach(server, {user: job for user, (_, job) in users.items()})
    jobs = [UserRound(user, 1, [], []) for user in users]
    outcomes = drive(None, mode, jobs, {}, ledger=None, timeout_s=10.0)
    assert all(o.ok for o in outcomes.values())
    return mode, calls


def _adapted_alone(student: GRUMaskNet, job: AdaptJob) -> tuple[GRUMaskNet, object]:
    model = copy.deepcopy(student)
    return model, adapt(model, job.noisy, job.targets, job.cfg, seed=job.seed, user=job.user)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize(
    "overrides", [[], ["device.batch_on_cpu=true"], ["device.stack_finetune=true"]], ids=str
)
def test_without_both_keys_each_user_is_fine_tuned_alone_bit_for_bit(
    tiny_world, monkeypatch, capsys, overrides
):
    users = _users(tiny_world)
    mode, calls = _drive(_server(*overrides), users, monkeypatch)
    assert calls == [("alone", [user]) for user in users]  # at once, in the order the conversations asked
    for user, (student, job) in users.items():
        expected, result = _adapted_alone(student, job)
        assert _same_weights(job.student, expected)
        assert mode.got[user].device_macs == result.device_macs
    told = capsys.readouterr().err
    asked_in_vain = overrides == ["device.stack_finetune=true"]
    assert told.count("device.stack_finetune=true does nothing on a CPU server") == (
        1 if asked_in_vain else 0
    )


def test_stacked_fine_tuning_gathers_the_users_of_a_step(tiny_world, monkeypatch):
    users = _users(tiny_world)
    mode, calls = _drive(
        _server("device.batch_on_cpu=true", "device.stack_finetune=true"), users, monkeypatch
    )
    assert calls == [("together", list(users))]
    for user, (student, job) in users.items():
        expected, result = _adapted_alone(student, job)
        got = mode.got[user]
        assert (got.steps, got.device_macs, got.train_audio_seconds) == (
            result.steps,
            result.device_macs,
            result.train_audio_seconds,
        )  # each user charged its own compute
        for p, q in zip(job.student.parameters(), expected.parameters(), strict=True):
            torch.testing.assert_close(
                p, q, rtol=0, atol=0.05 * job.cfg.lr * job.cfg.steps
            )  # see test_stacked


def test_options_the_stack_cannot_take_are_told_once_and_run_alone(tiny_world, monkeypatch, capsys):
    users = _users(tiny_world, "adapt.refresh=remix")
    _drive(_server("device.batch_on_cpu=true", "device.stack_finetune=true"), users, monkeypatch)
    told = capsys.readouterr().err
    assert told.count("fedpse: device.stack_finetune: users are fine-tuned one at a time here") == 1
    assert "adapt.refresh=remix" in told
    for student, job in users.values():
        assert _same_weights(job.student, _adapted_alone(student, job)[0])


# ------------------------------------------------------------------------------------ Flower + Ray runs
FAST = [
    "federation.num_rounds=2",
    "federation.chunks_per_round=1",
    "federation.steps_per_round=3",
    "federation.weights_precision=fp32",  # the students' weights reach the devices as they were fine-tuned
    "adapt.eval_every=2",
]
STACKED = ["device.batch_on_cpu=true", "device.stack_finetune=true"]
RUNS = {
    "cloud_student": ["federation.mode=cloud_student"],
    "cloud_student-stacked": ["federation.mode=cloud_student", *STACKED],
    "oracle_clean": ["federation.mode=oracle_clean"],
    "oracle_clean-stacked": ["federation.mode=oracle_clean", *STACKED],
}


@pytest.fixture(scope="module")
def runs(tiny_world, tmp_path_factory):
    """Each run once, in one Ray start-up; return {label: (plan, fine-tuning calls by path)}."""
    root = tmp_path_factory.mktemp("stacked")
    configs = [(tiny_run_config(tiny_world, *FAST, *extra), root / label) for label, extra in RUNS.items()]
    calls: dict[Path, dict[str, list[int]]] = {}  # run directory -> path -> users per call
    run, run_together = FineTuneRequest.run, FineTuneRequest.run_together.__func__

    def count(work, path: str, users: int) -> None:
        calls.setdefault(work.server.plan.run_dir, {"alone": [], "together": []})[path].append(users)

    def alone(self):
        count(self, "alone", 1)
        return run(self)

    def together(cls, works):
        count(works[0], "together", len(works))
        return run_together(cls, works)

    with pytest.MonkeyPatch.context() as patch:  # the server runs in this process; the devices in Ray actors
        patch.setattr(FineTuneRequest, "run", alone)
        patch.setattr(FineTuneRequest, "run_together", classmethod(together))
        simulate_many(configs, progress=False)
    return {
        label: (RunPlan.load(run_dir), calls[run_dir.resolve()])
        for (_, run_dir), label in zip(configs, RUNS, strict=True)
    }


def _per_user(plan: RunPlan) -> dict[str, dict]:
    return {row["user"]: row for row in RunStore(plan.run_dir).read_table("users")}


def _server_macs(plan: RunPlan) -> dict[tuple[str, str], float]:
    rows = RunStore(plan.run_dir).read_table("ledger")
    return {(r["user"], r["round"]): float(r["server_macs"]) for r in rows if r["kind"] == "student_weights"}


@pytest.mark.ray
@pytest.mark.parametrize("mode", ["cloud_student", "oracle_clean"])
def test_stacked_runs_score_each_user_as_the_default_path(runs, mode):
    (default, default_calls), (stacked, stacked_calls) = runs[mode], runs[f"{mode}-stacked"]
    assert default_calls == {"alone": [1] * 6, "together": []}  # 3 users x 2 rounds, each alone as always
    assert not stacked_calls["alone"] and sum(stacked_calls["together"]) == 6  # every fine-tuning was stacked
    if mode == "oracle_clean":  # its users all start their round in the same step, so they share one stack
        assert stacked_calls["together"] == [3, 3]
    expected, got = _per_user(default), _per_user(stacked)
    assert set(got) == set(expected) and all(row["status"] == "ok" for row in got.values())
    for user, row in expected.items():
        assert float(got[user]["si_sdr_personalized"]) == pytest.approx(
            float(row["si_sdr_personalized"]), abs=1e-3
        )
        assert (
            got[user]["si_sdr_personalized"] != got[user]["si_sdr_generic"]
        )  # fine-tuning changed the student
    assert _server_macs(stacked) == _server_macs(default)  # each user is charged its own fine-tuning
