"""One user's zero-shot test-time adaptation: fine-tune the student toward the teacher's outputs (pseudo-targets).

This is the function the federated client, the cloud-student strategy and the bare-loop benchmark all call.
Loss: negative SI-SDR between the student's output and the (detached) pseudo-target, on random crops of the
user's unlabeled chunks. Stopping rule (unsupervised): a share of the chunks is held out; every ``eval_every``
steps the student's agreement with the teacher on them (SI-SDR student-vs-pseudo-target) is measured, training
stops after ``patience`` checks without improvement and the best-agreeing weights are kept.
``adapt.refresh`` (``distill/refresh.py``) may change the training targets and mixtures step by step; the stopping
rule still measures agreement with the teacher's own targets on the held-out chunks, the one reference outside the
student.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fedpse.audio.io import SAMPLE_RATE
from fedpse.config import AdaptConfig, ConfigError
from fedpse.distill.guard import TeacherCheck, guard_verdict
from fedpse.distill.loss import neg_si_sdr_loss, si_sdr
from fedpse.distill.refresh import TargetRefresh
from fedpse.distill.scores import score_row
from fedpse.models.accelerator import model_device
from fedpse.models.finite import NonFiniteOutputError, check_outputs
from fedpse.models.identity import describe_model
from fedpse.models.macs import forward_macs, train_macs


@dataclass
class AdaptResult:
    steps: int
    stopped_early: bool
    agreement_db: list[dict] = field(default_factory=list)  # [{"step", "agreement_db"}] on held-out chunks
    best_agreement_db: float = float("nan")
    train_audio_seconds: float = 0.0
    device_macs: float = 0.0  # student training + stopping-rule forward passes + refresh_macs
    wall_seconds: float = 0.0
    refresh_generations: int = 0  # adapt.refresh=sequential: times the targets were re-made from the student
    refresh_audio_seconds: float = 0.0  # audio the student (or its EMA copy) enhanced for refreshed targets
    refresh_macs: float = 0.0  # their forward passes (part of device_macs)
    guard: str = "off"  # adapt.guard's decision: adopted | kept_generic | off (distill/guard.py)
    # the guard's scores (dB of SI-SDR on probe mixtures; guard=dnsmos: 10 x OVR): the generic student's, the
    # fine-tuned one's and the teacher's lead over the generic student (NaN: not measured)
    guard_generic_db: float = float("nan")
    guard_personalized_db: float = float("nan")
    guard_teacher_lead_db: float = float("nan")
    guard_macs: float = 0.0  # the guard's forward passes (part of device_macs)
    # the fine-tuned weights the guard turned down (kept_generic), for scoring what the guard prevented
    finetuned_state: dict | None = field(default=None, repr=False)

    def costs(self, noisy: list[np.ndarray]) -> dict:
        """The adaptation's columns of a user's row: what it did and cost, on the user's ``noisy`` chunks."""
        return {
            "steps": self.steps,
            "stopped_early": self.stopped_early,
            "best_agreement_db": self.best_agreement_db,
            "train_audio_seconds": self.train_audio_seconds,
            "device_macs": self.device_macs,
            "refresh_macs": self.refresh_macs,
            "refresh_audio_seconds": self.refresh_audio_seconds,
            "adapt_wall_seconds": self.wall_seconds,
            "adaptation_audio_seconds": sum(len(x) for x in noisy) / SAMPLE_RATE,
            **self.guard_columns(),
        }

    def guard_columns(self) -> dict:
        """The guard's decision, its two scores and its compute (columns of a user's row); none when it is off."""
        if self.guard == "off":
            return {}
        return {
            "guard_decision": self.guard,
            "guard_generic_db": self.guard_generic_db,
            "guard_personalized_db": self.guard_personalized_db,
            "guard_teacher_lead_db": self.guard_teacher_lead_db,
            "guard_macs": self.guard_macs,
        }


@torch.no_grad()
def enhance(
    model: nn.Module, chunks: list[np.ndarray], max_batch: int = 8, fixed_batch: bool = False
) -> list[np.ndarray]:
    """Run ``model`` on each chunk, where the model is (equal-length chunks are batched). Used for pseudo-targets
    and scoring. ``fixed_batch``: every forward pass has exactly ``max_batch`` rows (a short group is filled with
    silent rows), so a chunk's output does not depend on how many chunks shared its pass."""
    model.eval()
    device = model_device(model)
    out: list[np.ndarray | None] = [None] * len(chunks)
    by_len: dict[int, list[int]] = {}
    for i, c in enumerate(chunks):
        by_len.setdefault(len(c), []).append(i)
    for length, idx in by_len.items():
        for s in range(0, len(idx), max_batch):
            part = idx[s : s + max_batch]
            rows = [np.asarray(chunks[i], np.float32) for i in part]
            if fixed_batch:
                rows += [np.zeros(length, np.float32)] * (max_batch - len(part))
            res = model(torch.from_numpy(np.stack(rows)).to(device)).cpu().numpy()
            for j, i in enumerate(part):
                out[i] = res[j]
    return out  # type: ignore[return-value]


def pseudo_targets(teacher: nn.Module, chunks: list[np.ndarray], user: str | None = None) -> list[np.ndarray]:
    """The teacher's outputs for ``user``'s unlabeled chunks (no gradients); ``NonFiniteOutputError`` on NaN or inf.

    One chunk at a time: a batched forward pass rounds differently with each batch size (~1e-8), so a chunk's
    pseudo-target would depend on which other chunks shared its batch; computed alone, it is a function of the
    chunk only, which keeps cached targets, resumed runs and the bare benchmark loop bit-identical."""
    return check_outputs(enhance(teacher, chunks, max_batch=1), "teacher", teacher, user)


def pseudo_targets_batched(
    teacher: nn.Module, chunks: list[np.ndarray], batch: int, user: str | None = None
) -> list[np.ndarray]:
    """``pseudo_targets`` with ``batch`` equal-length chunks per forward pass, for a teacher on an accelerator.

    Every pass has the same shape ``[batch, T]`` (short groups are filled with silent rows) and a batch's rows are
    computed independently, so a chunk's output is still a function of the chunk (and of ``batch`` and the
    hardware), never of the chunks it shared a pass with: cached targets and resumed runs stay bit-identical. It
    differs from the one-at-a-time outputs by float rounding; ``batch=1`` is ``pseudo_targets``."""
    return check_outputs(enhance(teacher, chunks, batch, fixed_batch=True), "teacher", teacher, user)


def select_trainable(student: nn.Module, layers: str) -> list[nn.Parameter]:
    """Freeze everything except ``layers``: all | gru | mask | last_gru (GRU mask nets)."""
    names = dict(student.named_parameters())
    if layers == "all":
        chosen = set(names)
    elif layers == "gru":
        chosen = {n for n in names if n.startswith("gru.")}
    elif layers == "mask":
        chosen = {n for n in names if n.startswith("mask.")}
    elif layers == "last_gru":
        last = max(
            (int(n.rsplit("_l", 1)[1].split("_")[0]) for n in names if n.startswith("gru.")), default=0
        )
        chosen = {n for n in names if n.startswith("gru.") and f"_l{last}" in n}
    else:
        raise ValueError(f"adapt.layers: expected all | gru | mask | last_gru, got {layers!r}")
    if not chosen:
        raise ValueError(f"adapt.layers={layers!r} selects no parameters of {type(student).__name__}")
    for n, p in names.items():
        p.requires_grad_(n in chosen)
    return [names[n] for n in sorted(chosen)]


def _crops(rng, noisy, targets, size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = np.array([len(c) for c in noisy], dtype=np.float64)
    picks = rng.choice(len(noisy), size=size, p=lengths / lengths.sum())
    xs, ys = [], []
    for k in picks:
        start = int(rng.integers(0, len(noisy[k]) - n + 1))
        xs.append(noisy[k][start : start + n])
        ys.append(targets[k][start : start + n])
    return torch.from_numpy(np.stack(xs).astype(np.float32)), torch.from_numpy(
        np.stack(ys).astype(np.float32)
    )


@torch.no_grad()
def agreement(student: nn.Module, noisy: list[np.ndarray], targets: list[np.ndarray]) -> float:
    """Mean SI-SDR (dB) of the student's outputs against the pseudo-targets."""
    outs = enhance(student, noisy)
    scores = [
        si_sdr(torch.from_numpy(o)[None], torch.from_numpy(np.asarray(t, np.float32))[None])
        for o, t in zip(outs, targets, strict=True)
    ]
    return float(torch.cat(scores).mean())


class Adaptation:
    """One user's adaptation call, step by step (what ``adapt`` runs): the chunks split into training and held-out
    ones, the crops of each step from the user's own seeded generator, the stopping rule and the closing checks.
    ``adapt`` takes its optimizer steps with the user's ``student``; ``distill/stacked.py`` takes those of several
    users' sessions at once, and writes each user's weights into its ``student`` before the rule looks at them."""

    def __init__(
        self,
        student: nn.Module,
        noisy: list[np.ndarray],
        targets: list[np.ndarray],
        cfg: AdaptConfig,
        seed: int = 0,
        user: str | None = None,
        generic: nn.Module | None = None,
        teacher: nn.Module | TeacherCheck | None = None,
    ):
        if len(noisy) != len(targets) or not noisy:
            raise ValueError(
                f"adapt: need matching non-empty lists of chunks and targets, got {len(noisy)} and {len(targets)}"
            )
        for i, (x, y) in enumerate(zip(noisy, targets, strict=True)):
            if len(x) != len(y):
                raise ValueError(f"adapt: chunk {i} has {len(x)} samples but its target has {len(y)}")
            if not np.isfinite(y).all():
                raise NonFiniteOutputError(
                    "teacher",
                    "outputs (pseudo-targets)",
                    user,
                    f"chunk {i} of {len(targets)} holds NaN or inf; expected finite audio",
                )
        self.started = time.perf_counter()
        torch.set_num_threads(cfg.threads)
        self.student, self.cfg, self.seed, self.user = student, cfg, seed, user
        self.generic, self.teacher = generic, teacher
        self.rng = np.random.default_rng([seed, 31])
        order = self.rng.permutation(len(noisy))
        n_hold = math.floor(len(noisy) * cfg.holdout_fraction) if len(noisy) > 1 else 0
        hold, train = sorted(order[:n_hold]), sorted(order[n_hold:])
        self.tr_x, self.tr_y = [noisy[i] for i in train], [targets[i] for i in train]
        self.ho_x, self.ho_y = [noisy[i] for i in hold], [targets[i] for i in hold]
        self.crop_samples = min(int(cfg.segment_seconds * SAMPLE_RATE), min(len(x) for x in self.tr_x))
        self.result = AdaptResult(steps=0, stopped_early=False)
        self.params: list[nn.Parameter] = []
        if cfg.steps == 0:
            return
        if cfg.guard != "off" and generic is None:
            self.generic = copy.deepcopy(student).eval()
        self.params = select_trainable(student, cfg.layers)
        self.device = model_device(student)  # the crops follow the student
        self.hold_seconds = sum(len(x) for x in self.ho_x) / SAMPLE_RATE
        self.use_rule = bool(self.ho_x) and cfg.patience > 0
        self.best_state, self.best, self.stale = None, -math.inf, 0
        if self.use_rule:
            self.best = _finite_agreement(student, self.ho_x, self.ho_y, 0, user)
            self.best_state = copy.deepcopy(student.state_dict())
            self.result.agreement_db.append({"step": 0, "agreement_db": self.best})
            self.result.device_macs += forward_macs(student, self.hold_seconds)
        # refresh=off: the teacher's targets, unchanged
        self.refresh = TargetRefresh(cfg, student, self.tr_x, self.tr_y, seed)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training crops of ``step`` (1-based) and their targets, on the student's device."""
        sources = self.refresh.chunk_targets(step, self.student)
        self.student.train()
        x, y = _crops(self.rng, self.tr_x, sources, self.cfg.batch_size, self.crop_samples)
        return self.refresh.batch(step, x.to(self.device), y.to(self.device))

    def check_loss(self, loss: torch.Tensor, step: int) -> None:
        """A NaN or inf KD loss is the student's divergence: ``NonFiniteOutputError`` naming it and the user."""
        if not torch.isfinite(loss):
            raise NonFiniteOutputError(
                "student",
                describe_model(self.student),
                self.user,
                f"the KD loss is {loss.item()} at step {step} of adaptation: the student diverged "
                "(expected a finite loss; a lower adapt.lr?)",
            )

    def stepped(self, step: int) -> None:
        """After ``step``'s optimizer step (the student holds the updated weights)."""
        self.refresh.after_step(self.student)
        self.result.steps = step

    def checks(self, step: int) -> bool:
        """Whether the stopping rule measures the student after ``step``."""
        return self.use_rule and (step % self.cfg.eval_every == 0 or step == self.cfg.steps)

    def stops(self, step: int) -> bool:
        """The stopping rule after ``step``: keep the best-agreeing weights; True when it is time to stop."""
        if not self.checks(step):
            return False
        score = _finite_agreement(self.student, self.ho_x, self.ho_y, step, self.user)
        self.result.device_macs += forward_macs(self.student, self.hold_seconds)
        self.result.agreement_db.append({"step": step, "agreement_db": score})
        if score > self.best + 1e-3:
            self.best, self.best_state, self.stale = score, copy.deepcopy(self.student.state_dict()), 0
            return False
        self.stale += 1
        self.result.stopped_early = self.stale >= self.cfg.patience
        return self.result.stopped_early

    def finish(self) -> AdaptResult:
        """After the last step: the best weights back, the divergence check, the costs and the guard."""
        student, cfg, result = self.student, self.cfg, self.result
        if self.use_rule and self.best_state is not None:
            student.load_state_dict(self.best_state)
            result.best_agreement_db = self.best
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            raise NonFiniteOutputError(
                "student",
                describe_model(student),
                self.user,
                f"its weights hold NaN or inf after {result.steps} adaptation step(s): the student diverged "
                "(a lower adapt.lr?)",
            )
        for p in student.parameters():
            p.requires_grad_(True)
        student.eval()
        result.train_audio_seconds = result.steps * cfg.batch_size * self.crop_samples / SAMPLE_RATE
        result.device_macs += train_macs(student, result.train_audio_seconds)
        result.refresh_generations = self.refresh.generations
        result.refresh_audio_seconds = self.refresh.audio_seconds
        result.refresh_macs = forward_macs(student, self.refresh.audio_seconds)
        result.device_macs += result.refresh_macs
        if cfg.guard != "off":
            held_out = (self.ho_x, self.ho_y) if self.ho_x else (self.tr_x, self.tr_y)
            _guard(result, cfg, student, self.generic, held_out, self.seed, self.teacher)
        result.wall_seconds = time.perf_counter() - self.started
        return result


def adapt(
    student: nn.Module,
    noisy: list[np.ndarray],
    targets: list[np.ndarray],
    cfg: AdaptConfig,
    seed: int = 0,
    on_step: Callable[[int, nn.Module], None] | None = None,
    user: str | None = None,
    generic: nn.Module | None = None,
    teacher: nn.Module | TeacherCheck | None = None,
) -> AdaptResult:
    """Fine-tune ``student`` in place on ``user``'s (noisy chunk, pseudo-target) pairs; return what it did and cost.

    With ``adapt.guard`` on, the fine-tuned student is then compared with ``generic`` (the user's generic student;
    None = ``student`` as it was before this call), and so is the ``teacher`` where the caller has it (or its
    ``TeacherCheck``, made where it is); if the guard turns the fine-tuned student down, ``student`` gets the generic
    weights back (``distill/guard.py``).

    ``on_step(step, student)`` is called after every optimizer step (e.g. to score a gain-vs-steps curve). A student
    that diverges (NaN or inf loss, agreement or weights) raises ``NonFiniteOutputError`` naming it and ``user``.
    """
    session = Adaptation(student, noisy, targets, cfg, seed, user, generic, teacher)
    if cfg.steps == 0:
        return session.result
    opt = torch.optim.Adam(session.params, lr=cfg.lr)
    for step in range(1, cfg.steps + 1):
        x, y = session.batch(step)
        loss = neg_si_sdr_loss(student(x), y)
        session.check_loss(loss, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        session.stepped(step)
        if on_step is not None:
            on_step(step, student)
        if session.stops(step):
            break
    return session.finish()


def _guard(
    result: AdaptResult,
    cfg: AdaptConfig,
    student: nn.Module,
    generic: nn.Module,
    held_out: tuple[list[np.ndarray], list[np.ndarray]],
    seed: int,
    teacher: nn.Module | TeacherCheck | None,
) -> None:
    """Run the guard on the ``held_out`` (chunks, pseudo-targets): all of them when none is held out; restore the
    generic weights into ``student`` when it turns the fine-tuned ones down."""
    chunks, targets = held_out
    verdict = guard_verdict(cfg, generic, student, chunks, seed, teacher, teacher_outputs=targets)
    result.guard = verdict.decision
    result.guard_generic_db, result.guard_personalized_db = verdict.generic_score, verdict.personalized_score
    result.guard_teacher_lead_db = verdict.teacher_lead
    result.guard_macs = verdict.macs
    result.device_macs += verdict.macs
    if not verdict.adopted:
        result.finetuned_state = {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}
        student.load_state_dict(generic.state_dict())


def _finite_agreement(student: nn.Module, noisy, targets, step: int, user: str | None) -> float:
    value = agreement(student, noisy, targets)
    if not math.isfinite(value):
        raise NonFiniteOutputError(
            "student",
            describe_model(student),
            user,
            f"its agreement with the pseudo-targets of held-out chunks is {value} dB at step {step} of adaptation "
            "(its outputs hold NaN or inf; expected a finite SI-SDR)",
        )
    return value


def score(
    models: dict[str, nn.Module], test_set: list[tuple[np.ndarray, np.ndarray]], user: str | None = None
) -> dict[str, float]:
    """Mean SI-SDR (dB) on ``user``'s held-out test set: ``noisy`` (the mixture itself) and each model.

    A model whose outputs hold NaN or inf raises ``NonFiniteOutputError`` (role ``teacher`` for the model named
    ``teacher``, else ``student``)."""
    from fedpse.audio.metrics import si_sdr as si_sdr_np

    noisy = [x for x, _ in test_set]
    clean = [y for _, y in test_set]
    out = {"noisy": float(np.mean([si_sdr_np(x, y) for x, y in test_set]))}
    for name, model in models.items():
        role = "teacher" if name == "teacher" else "student"
        est = check_outputs(enhance(model, noisy), role, model, user)
        out[name] = float(np.mean([si_sdr_np(e, y) for e, y in zip(est, clean, strict=True)]))
    return out


def personalize_user(
    world,
    user_id: str,
    student: nn.Module,
    teacher: nn.Module,
    cfg: AdaptConfig,
    seed: int = 0,
    targets: str = "teacher",
    teacher_scores: dict | None = None,
    device: torch.device | None = None,
) -> dict:
    """The paper's zero-shot loop for one user, end to end: pseudo-targets -> fine-tune a copy -> score.

    ``targets="clean"`` fine-tunes on clean references instead (the simulation-only oracle upper bound).
    ``teacher_scores`` lets callers reuse a teacher's test-set score computed once per user.
    ``device``: where the work runs (``student`` and ``teacher`` are moved there; None = where they are).
    Returns a flat dict of SI-SDR scores, gain, gap closure and the adaptation's costs (with ``adapt.guard``: its
    decision and ``si_sdr_unguarded``, the fine-tuned student's score whatever the guard decided).
    """
    if device is not None:
        student, teacher = student.to(device), teacher.to(device)
    noisy = world.adaptation_chunks(user_id, "noisy")
    if targets == "teacher":
        goal = pseudo_targets(teacher, noisy, user=user_id)
    elif targets == "clean":
        if cfg.refresh != "off":  # as federation.mode=oracle_clean: the upper bound trains on the references
            raise ConfigError(
                f"adapt.refresh={cfg.refresh}: clean targets need no refresh; set adapt.refresh=off"
            )
        goal = world.adaptation_chunks(user_id, "clean")
    else:
        raise ValueError(f"targets: expected 'teacher' or 'clean', got {targets!r}")
    personalized = copy.deepcopy(student)
    checked = teacher if targets == "teacher" else None  # the guard's teacher check (clean targets: none)
    result = adapt(personalized, noisy, goal, cfg, seed=seed, user=user_id, generic=student, teacher=checked)
    test_set = world.test_set(user_id)
    scores = score({"generic": student, "personalized": personalized}, test_set, user=user_id)
    scores["teacher"] = (teacher_scores or score({"teacher": teacher}, test_set, user=user_id))["teacher"]
    row = {
        "user": user_id,
        **score_row(scores["noisy"], scores["generic"], scores["personalized"], scores["teacher"]),
        **result.costs(noisy),
    }
    if result.guard != "off":  # the fine-tuned student as if the guard had adopted it
        row["si_sdr_unguarded"] = scores["personalized"]
        if result.finetuned_state is not None:
            personalized.load_state_dict(result.finetuned_state)
            row["si_sdr_unguarded"] = score({"u": personalized}, test_set, user=user_id)["u"]
    return row
