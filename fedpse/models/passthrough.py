"""The identity teacher (``teacher.arch: identity``): returns its input. A deliberately bad teacher with no
parameters and no compute, for the personalization guard's tests and the bad-teacher rows of the studies: its
pseudo-targets are the noisy chunks themselves, so a student fine-tuned on them unlearns its denoising."""

from __future__ import annotations

import torch
from torch import nn


class IdentityTeacher(nn.Module):
    """``[B, T]`` waveforms in, the same waveforms out (a copy)."""

    def __init__(self):
        super().__init__()
        self.config: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def macs_breakdown(self, sample_rate: int = 16000) -> dict[str, float]:
        """No multiply-accumulates at all."""
        return {"copy": 0.0}
