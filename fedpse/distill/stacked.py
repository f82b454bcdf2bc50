"""Several users' adaptations at once: each user's ``adapt`` session, with one forward and backward pass per step for
all of them (their students stacked, ``models/stacked_gru.py``).

Each user keeps what ``adapt`` gives it alone: its own training/held-out split and crops from its own seeded
generator, the same KD loss, its own Adam (one ``torch.optim.Adam`` over weights with a leading user axis is an Adam
per user: every operation of its update is elementwise), the same stopping rule on its held-out chunks (it stops
alone and leaves the stack), the same closing checks, costs and guard. Its numbers equal ``adapt``'s up to float
summation order: the written-out GRU's, and which kernel paths the stack's shape takes (a user's weights depend, in
their last bits, on how many users shared its stack and on its row; see docs/gpu.md).

Sessions ``adapt`` runs alone instead (``alone_reason``): ``adapt.refresh`` other than off (its targets are made by
the student during the steps), a student that is not a unidirectional ``GRUMaskNet``, and ``adapt.steps=0``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor, nn

from fedpse.config import AdaptConfig
from fedpse.distill.adapt import Adaptation, AdaptResult, adapt
from fedpse.distill.guard import TeacherCheck
from fedpse.distill.loss import si_sdr
from fedpse.models.stacked_gru import stack_refusal, stack_weights, stacked_forward


@dataclasses.dataclass
class AdaptJob:
    """One user's ``adapt(student, noisy, targets, cfg, seed=seed, user=user, generic=generic, teacher=teacher)``."""

    student: nn.Module
    noisy: list[np.ndarray]
    targets: list[np.ndarray]
    cfg: AdaptConfig
    seed: int = 0
    user: str | None = None
    generic: nn.Module | None = None
    teacher: nn.Module | TeacherCheck | None = None

    def run_alone(self) -> AdaptResult:
        return adapt(
            self.student,
            self.noisy,
            self.targets,
            self.cfg,
            seed=self.seed,
            user=self.user,
            generic=self.generic,
            teacher=self.teacher,
        )

    def session(self) -> Adaptation:
        return Adaptation(
            self.student, self.noisy, self.targets, self.cfg, self.seed, self.user, self.generic, self.teacher
        )


def alone_reason(job: AdaptJob) -> str | None:
    """Why ``job`` is adapted alone by ``adapt_stacked`` (None: it is stacked)."""
    if job.cfg.refresh != "off":
        return f"adapt.refresh={job.cfg.refresh} makes its targets with the student during the steps"
    if job.cfg.steps == 0:
        return "adapt.steps=0"
    return stack_refusal(job.student)


def adapt_stacked(jobs: list[AdaptJob]) -> list[AdaptResult | Exception]:
    """Each job's ``AdaptResult`` (its student fine-tuned in place), or the exception its ``adapt`` would raise, in
    order. Jobs that can share a stack (same architecture, adaptation settings, crop length and device) are
    stacked; the rest run ``adapt`` alone (``alone_reason``)."""
    results: list[AdaptResult | Exception | None] = [None] * len(jobs)
    groups: dict[tuple, list[tuple[int, Adaptation]]] = {}
    for i, job in enumerate(jobs):
        try:
            if alone_reason(job) is not None:
                results[i] = job.run_alone()
                continue
            session = job.session()
        except Exception as err:  # what adapt would raise, for this user only
            results[i] = err
            continue
        groups.setdefault(_stack_key(session), []).append((i, session))
    for members in groups.values():
        for i, outcome in zip((i for i, _ in members), _run_stack([s for _, s in members]), strict=True):
            results[i] = outcome
    return results  # type: ignore[return-value]


def _stack_key(session: Adaptation) -> tuple:
    """Sessions with equal keys step together: same architecture and trainable weights, settings, crop shape."""
    trainable = tuple(n for n, p in session.student.named_parameters() if p.requires_grad)
    config = tuple(sorted(session.student.config.items()))
    return (config, trainable, dataclasses.astuple(session.cfg), session.crop_samples, str(session.device))


class _Stack:
    """The stacked weights of the sessions still stepping, and their Adam."""

    def __init__(self, sessions: list[Adaptation]):
        self.sessions = sessions
        student = sessions[0].student
        self.trainable = [n for n, p in student.named_parameters() if p.requires_grad]
        self.weights = stack_weights([s.student for s in sessions])
        for name in self.trainable:
            self.weights[name].requires_grad_(True)
        self.opt = torch.optim.Adam([self.weights[n] for n in self.trainable], lr=sessions[0].cfg.lr)

    def write_back(self, row: int) -> None:
        """The weights of the session at ``row`` into its student (for the stopping rule, or at its end)."""
        with torch.no_grad():
            for name, param in self.sessions[row].student.named_parameters():
                param.copy_(self.weights[name][row])

    def keep(self, rows: list[int]) -> None:
        """Only the sessions at ``rows`` go on stepping: their weights and Adam states, the others dropped."""
        old = {name: self.weights[name] for name in self.trainable}
        self.sessions = [self.sessions[r] for r in rows]
        index = torch.tensor(rows, dtype=torch.long, device=next(iter(old.values())).device)
        self.weights = {name: w.detach()[index].clone() for name, w in self.weights.items()}
        opt = torch.optim.Adam([self.weights[n] for n in self.trainable], lr=self.opt.defaults["lr"])
        for name in self.trainable:
            self.weights[name].requires_grad_(True)
            state = self.opt.state.get(old[name], {})
            opt.state[self.weights[name]] = {
                k: (v.clone() if k == "step" else v[index].clone()) for k, v in state.items()
            }
        self.opt = opt


def _run_stack(sessions: list[Adaptation]) -> list[AdaptResult | Exception]:
    """The steps of ``sessions`` (equal ``_stack_key``) together; each ends with its own ``finish``."""
    outcomes: dict[Adaptation, AdaptResult | Exception] = {}
    template = sessions[0].student
    stack = _Stack(sessions)

    def end(session: Adaptation) -> None:
        try:
            outcomes[session] = session.finish()
        except Exception as err:  # its weights diverged, or its guard failed: this user's error only
            outcomes[session] = err

    for step in range(1, sessions[0].cfg.steps + 1):
        if not stack.sessions:
            break
        x, y = (torch.stack(t) for t in zip(*(s.batch(step) for s in stack.sessions), strict=True))
        losses = _user_losses(stacked_forward(template, stack.weights, x), y)
        going = []
        for row, session in enumerate(stack.sessions):
            try:
                session.check_loss(losses[row], step)
                going.append(row)
            except Exception as err:
                outcomes[session] = err
        if going:
            stack.opt.zero_grad()
            (losses[going].sum() if len(going) < len(losses) else losses.sum()).backward()
            stack.opt.step()
        still = []
        for row in going:
            session = stack.sessions[row]
            if session.checks(step):  # the stopping rule measures the user's student
                stack.write_back(row)
            session.stepped(step)
            if session.stops(step):
                end(session)
            else:
                still.append(row)
        if len(still) < len(stack.sessions):
            stack.keep(still)
    for row, session in enumerate(stack.sessions):  # every step taken
        stack.write_back(row)
        end(session)
    return [outcomes[s] for s in sessions]


def _user_losses(estimates: Tensor, targets: Tensor) -> Tensor:
    """Each user's KD loss (``neg_si_sdr_loss`` of its crops): [U, B, T] twice -> [U]."""
    users, batch, samples = estimates.shape
    scores = si_sdr(estimates.reshape(users * batch, samples), targets.reshape(users * batch, samples))
    return -scores.view(users, batch).mean(dim=1)
