"""The server's teacher work across users: on a CPU server each user's request runs at once, alone (the path fedpse
always took); on a GPU server (here: ``device.batch_on_cpu``) ``drive`` gathers the requests of all active users into
fixed-shape passes, and every chunk still gets the output it gets alone."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from fedpse.config import load_config
from fedpse.distill.adapt import pseudo_targets, pseudo_targets_batched
from fedpse.federation.interrupts import ServerError
from fedpse.federation.strategies.base import Outcome, ServerSide, TeacherRequest, UserRound, drive
from fedpse.models.registry import build_model


def _chunks(seed: int, count: int, seconds: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) for _ in range(count)]


# three users with 3, 2 and 4 new chunks; user c has one chunk of another length
CHUNKS = {"a": _chunks(1, 3), "b": _chunks(2, 2), "c": _chunks(3, 3) + _chunks(4, 1, seconds=0.7)}


def _server(*overrides: str, teacher: torch.nn.Module | None = None) -> ServerSide:
    cfg = load_config(overrides=["device.server=cpu", "federation.cache_dir=null", *overrides])
    server = ServerSide(types.SimpleNamespace(cfg=cfg))
    if teacher is None:
        torch.manual_seed(0)
        teacher = build_model("gru", num_layers=1, hidden=16, bidirectional=True).eval()
    server.__dict__["teacher"] = teacher  # instead of the run's shipped teacher
    return server


class AskTwice:
    """A delivery mode's server side only: each user asks the teacher for its first chunk, then for the rest."""

    name = "test"

    def __init__(self, server: ServerSide):
        self.server = server
        self.got: dict[str, list[np.ndarray]] = {}

    def conversation(self, job: UserRound):
        chunks = CHUNKS[job.user]
        first = yield from self.server.ask_teacher(chunks[:1], job.user)
        rest = yield from self.server.ask_teacher(chunks[1:], job.user)
        self.got[job.user] = first + rest
        return Outcome(job.user)


def _drive(server: ServerSide, monkeypatch) -> tuple[dict[str, list[np.ndarray]], list[list[str]]]:
    """Run the three users' conversations; return their teacher outputs and the users of each teacher call."""
    calls: list[list[str]] = []
    teacher_outputs = ServerSide.teacher_outputs

    def recorded(self, chunks, user=None):
        calls.append(user.split(", "))
        return teacher_outputs(self, chunks, user)

    monkeypatch.setattr(ServerSide, "teacher_outputs", recorded)
    mode = AskTwice(server)
    jobs = [UserRound(user, 1, [], []) for user in CHUNKS]
    outcomes = drive(None, mode, jobs, {}, ledger=None, timeout_s=10.0, max_in_flight=8)
    assert all(o.ok for o in outcomes.values()) and set(outcomes) == set(CHUNKS)
    return mode.got, calls


def test_on_a_cpu_server_each_users_request_runs_at_once_alone_as_always(monkeypatch):
    server = _server()
    assert not server.batches and server.teacher_batch == 1
    got, calls = _drive(server, monkeypatch)
    assert calls == [
        ["a"],
        ["a"],
        ["b"],
        ["b"],
        ["c"],
        ["c"],
    ]  # each conversation runs through before the next
    for user, chunks in CHUNKS.items():
        assert all(
            np.array_equal(x, y)
            for x, y in zip(got[user], pseudo_targets(server.teacher, chunks), strict=True)
        )


def test_gathered_requests_give_every_chunk_the_output_it_gets_alone(monkeypatch):
    server = _server("device.batch_on_cpu=true", "device.teacher_batch=4")
    assert server.batches and server.teacher_batch == 4
    got, calls = _drive(server, monkeypatch)
    assert calls == [["a", "b", "c"], ["a", "b", "c"]]  # one call per drive step, all users' chunks together
    # exactly the fixed-shape batched teacher over the users' chunks in the order they asked
    firsts = pseudo_targets_batched(server.teacher, [c[0] for c in CHUNKS.values()], batch=4)
    rests = iter(pseudo_targets_batched(server.teacher, [x for c in CHUNKS.values() for x in c[1:]], batch=4))
    for user, first in zip(CHUNKS, firsts, strict=True):
        expected = [first] + [next(rests) for _ in CHUNKS[user][1:]]
        assert all(np.array_equal(x, y) for x, y in zip(got[user], expected, strict=True))
    for user, chunks in CHUNKS.items():
        # a chunk's row in a pass may change its last bit on this CPU (not its batch-mates' content):
        # alone or gathered, the outputs agree to float rounding
        batched_alone = pseudo_targets_batched(server.teacher, chunks, batch=4)
        one_by_one = pseudo_targets(server.teacher, chunks)
        for x, y, z in zip(got[user], batched_alone, one_by_one, strict=True):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-7)
            np.testing.assert_allclose(x, z, rtol=0, atol=1e-5)


def test_gathered_requests_with_one_chunk_per_pass_are_the_cpu_path_bit_for_bit(monkeypatch):
    server = _server("device.batch_on_cpu=true", "device.teacher_batch=1")
    got, calls = _drive(server, monkeypatch)
    assert len(calls) == 2
    for user, chunks in CHUNKS.items():
        assert all(
            np.array_equal(x, y)
            for x, y in zip(got[user], pseudo_targets(server.teacher, chunks), strict=True)
        )


def test_an_onnx_like_teacher_without_torch_weights_keeps_one_chunk_per_pass():
    class NoWeights(torch.nn.Module):
        def forward(self, wave):
            return wave * 0.5

    assert _server("device.batch_on_cpu=true", teacher=NoWeights()).teacher_batch == 1


def test_a_non_finite_teacher_output_in_a_gathered_pass_stops_the_run(monkeypatch):
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(float("nan")))

        def forward(self, wave):
            return wave * self.scale

    server = _server("device.batch_on_cpu=true", teacher=Broken())
    with pytest.raises(ServerError, match=r"server-side test work for user a in round 1 failed"):
        _drive(server, monkeypatch)


def test_teacher_requests_gather_only_where_the_server_batches():
    assert not TeacherRequest(_server(), [], "a").gather
    assert TeacherRequest(_server("device.batch_on_cpu=true"), [], "a").gather
