"""Teacher refresh during adaptation (``adapt.refresh``; beyond the paper, after RemixIT, Tzinis et al. 2022).

The paper's loop trains the student toward fixed teacher pseudo-targets. A ``TargetRefresh`` changes, step by step,
what the student is trained on — only from what the adaptation already holds (the student, the user's noisy chunks,
the teacher's targets), so it runs wherever ``distill.adapt.adapt`` runs and sends nothing:

- ``sequential``: every ``refresh_every`` steps the current student (frozen at that moment) enhances the training
  chunks; their targets become ``refresh_mix`` x its outputs + (1 - ``refresh_mix``) x the teacher's.
- ``ema``: an exponential moving average of the student (``ema_decay`` per step, from the starting student) enhances
  each step's crops after the first ``refresh_every`` steps; blended with the teacher's crops by ``refresh_mix``.
- ``remix``: bootstrapped remixing. From each crop's target s and noise estimate n = x - s, the step trains on the
  new mixtures s_i + n_p(i), target s_i, where p is a seeded derangement of the batch (no crop keeps its own noise).
- ``remix_ema``: ``ema``'s blended targets, then remixed.

Targets never carry gradients. Determinism: the remix permutations come from their own seeded generator, so the
crops drawn are the same as with ``refresh=off``; the EMA and the refreshed targets are functions of the student.
Costs: every forward pass of the student or its EMA copy made for targets is counted in ``audio_seconds`` (the
caller charges ``forward_macs`` of the student on it); remixing is additions only.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn

from fedpse.audio.io import SAMPLE_RATE
from fedpse.config import AdaptConfig
from fedpse.models.accelerator import model_device

REFRESH_MODES = ("off", "sequential", "ema", "remix", "remix_ema")


def derangement(rng: np.random.Generator, size: int) -> np.ndarray:
    """A uniformly drawn permutation of ``range(size)`` with no fixed point (``size`` >= 2; rejection sampling,
    about e draws on average)."""
    while True:
        perm = rng.permutation(size)
        if not (perm == np.arange(size)).any():
            return perm


def remix(x: Tensor, s: Tensor, perm: np.ndarray) -> Tensor:
    """New mixtures ``s_i + n_perm(i)`` from mixtures ``x`` [B, T] and their speech estimates ``s`` (n = x - s)."""
    return s + (x - s)[torch.as_tensor(perm, device=x.device)]


class TargetRefresh:
    """What the student trains toward at each step of one adaptation call (see the module docstring).

    ``train_noisy`` / ``teacher_targets``: the training chunks and the teacher's pseudo-targets for them.
    ``audio_seconds``: audio the student or its EMA copy enhanced to make targets; ``generations``: sequential
    refreshes made."""

    def __init__(
        self,
        cfg: AdaptConfig,
        student: nn.Module,
        train_noisy: list[np.ndarray],
        teacher_targets: list[np.ndarray],
        seed: int,
    ):
        if cfg.refresh not in REFRESH_MODES:
            raise ValueError(f"adapt.refresh: expected one of {list(REFRESH_MODES)}, got {cfg.refresh!r}")
        self.mode, self.every = cfg.refresh, cfg.refresh_every
        self.mix, self.decay = cfg.refresh_mix, cfg.ema_decay
        self.noisy, self.teacher_targets = train_noisy, teacher_targets
        self.targets = teacher_targets
        self.rng = np.random.default_rng([seed, 37])  # its own stream: the crops stay those of refresh=off
        self.ema = None
        if self.mode in ("ema", "remix_ema"):
            self.ema = copy.deepcopy(student).eval()
            self.ema.requires_grad_(False)
        self.audio_seconds = 0.0
        self.generations = 0

    def chunk_targets(self, step: int, student: nn.Module) -> list[np.ndarray]:
        """The chunk targets the crops of ``step`` (1-based) are cut from; ``sequential`` re-makes them every
        ``refresh_every`` steps from the student as it is before that step."""
        if self.mode == "sequential" and step > 1 and (step - 1) % self.every == 0:
            outputs = _enhance(student, self.noisy)
            self.targets = [
                _blend(o, t, self.mix) for o, t in zip(outputs, self.teacher_targets, strict=True)
            ]
            self.audio_seconds += sum(len(x) for x in self.noisy) / SAMPLE_RATE
            self.generations += 1
        return self.targets

    def batch(self, step: int, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The training pair of ``step`` from its crops ``x`` and their targets ``y`` (on the student's device)."""
        if self.ema is not None and step > self.every:
            with torch.no_grad():
                y = _blend(self.ema(x), y, self.mix)
            self.audio_seconds += x.numel() / SAMPLE_RATE
        if self.mode.startswith("remix"):
            x = remix(x, y, derangement(self.rng, x.shape[0]))
        return x, y

    @torch.no_grad()
    def after_step(self, student: nn.Module) -> None:
        """Move the EMA copy toward the student just updated."""
        if self.ema is None:
            return
        for mine, theirs in zip(self.ema.parameters(), student.parameters(), strict=True):
            mine.mul_(self.decay).add_(theirs.detach(), alpha=1.0 - self.decay)
        for mine, theirs in zip(self.ema.buffers(), student.buffers(), strict=True):
            mine.copy_(theirs)


@torch.no_grad()
def _enhance(model: nn.Module, chunks: list[np.ndarray]) -> list[np.ndarray]:
    """``model``'s output for each chunk, one chunk per pass (a chunk's output never depends on its neighbours)."""
    model.eval()
    device = model_device(model)
    return [
        model(torch.from_numpy(np.asarray(c, np.float32))[None].to(device))[0].cpu().numpy() for c in chunks
    ]


def _blend(refreshed, teacher, mix: float):
    """``mix`` x the refreshed target + (1 - ``mix``) x the teacher's (pure replacement at 1)."""
    if mix == 1.0:
        return refreshed
    out = mix * refreshed + (1.0 - mix) * teacher
    return out.astype(np.float32) if isinstance(out, np.ndarray) else out
