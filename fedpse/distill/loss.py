"""The distillation loss: negative scale-invariant SDR between the student's output and the teacher's.

SI-SDR (Le Roux et al., 2019), both signals made zero-mean first:
``target = (<est, ref> / (|ref|^2 + eps)) * ref``, ``SI-SDR = 10 log10((|target|^2 + eps) / (|est - target|^2 + eps))``.
The ``eps`` terms keep silence finite (all-zero ``ref`` or ``est``) and the gradient free of NaNs; the same formula
is used by ``fedpse.audio.metrics.si_sdr``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def si_sdr(est: Tensor, ref: Tensor, eps: float = 1e-8) -> Tensor:
    """SI-SDR in dB. est, ref: [B, T] (or [T]) of the same shape -> [B] (or a 0-d tensor)."""
    if est.shape != ref.shape:
        raise ValueError(
            f"si_sdr needs est and ref of the same shape, got {tuple(est.shape)} and {tuple(ref.shape)}"
        )
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    scale = (est * ref).sum(dim=-1, keepdim=True) / (ref.pow(2).sum(dim=-1, keepdim=True) + eps)
    target = scale * ref
    noise = est - target
    ratio = (target.pow(2).sum(dim=-1) + eps) / (noise.pow(2).sum(dim=-1) + eps)
    return 10 * torch.log10(ratio)


def neg_si_sdr_loss(est: Tensor, ref: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean over the batch of -SI-SDR. est (student output), ref (teacher output): [B, T] -> scalar."""
    return -si_sdr(est, ref, eps).mean()
