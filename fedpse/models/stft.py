"""STFT / iSTFT as in the papers: n_fft 1024, hop 256, Hann window, 16 kHz audio.

``torch.stft(center=True)`` reflect-pads ``n_fft // 2`` samples on each side, so a signal of ``T`` samples gives
``1 + T // hop`` frames and the iSTFT with ``length=T`` returns exactly ``T`` samples. With a periodic Hann window and
``hop <= n_fft // 2`` the analysis/synthesis pair reconstructs perfectly (a unity mask returns the input).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 256


def check_stft_params(n_fft: int, hop: int) -> None:
    """Raise ``ValueError`` unless ``n_fft``/``hop`` give a perfectly reconstructing Hann STFT."""
    if not isinstance(n_fft, int) or isinstance(n_fft, bool) or n_fft < 4 or n_fft % 2:
        raise ValueError(f"n_fft must be an even integer >= 4, got {n_fft!r}")
    if not isinstance(hop, int) or isinstance(hop, bool) or not 1 <= hop <= n_fft // 2:
        raise ValueError(f"hop must be an integer in [1, n_fft // 2 = {n_fft // 2}], got {hop!r}")


def check_min_length(num_samples: int, n_fft: int, who: str = "the STFT") -> None:
    """Raise a ``ValueError`` naming the length and the minimum when audio is shorter than one STFT frame."""
    if num_samples < n_fft:
        raise ValueError(
            f"audio is {num_samples} samples long ({num_samples / SAMPLE_RATE:.3f} s at 16 kHz); "
            f"{who} needs at least {n_fft} samples (one STFT frame, n_fft={n_fft})"
        )


def num_frames(num_samples: int, hop: int = HOP) -> int:
    """Frames produced by ``stft`` for ``num_samples`` samples (``center=True``)."""
    return 1 + num_samples // hop


def stft(wave: Tensor, n_fft: int = N_FFT, hop: int = HOP, window: Tensor | None = None) -> Tensor:
    """Complex STFT. ``wave``: [B, T] or [T] -> [B, n_fft // 2 + 1, frames] (or [F, frames])."""
    check_min_length(wave.shape[-1], n_fft)
    if window is None:
        window = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    return torch.stft(
        wave, n_fft=n_fft, hop_length=hop, win_length=n_fft, window=window, center=True, return_complex=True
    )


def istft(
    spec: Tensor, length: int, n_fft: int = N_FFT, hop: int = HOP, window: Tensor | None = None
) -> Tensor:
    """Inverse of ``stft``. ``spec``: [B, F, frames] complex -> [B, length] real (exactly ``length`` samples)."""
    if window is None:
        window = torch.hann_window(n_fft, device=spec.device, dtype=spec.real.dtype)
    return torch.istft(
        spec, n_fft=n_fft, hop_length=hop, win_length=n_fft, window=window, center=True, length=length
    )


class Stft(nn.Module):
    """STFT/iSTFT pair holding its Hann window as a (non-persistent) buffer so it follows ``.to(device)``."""

    def __init__(self, n_fft: int = N_FFT, hop: int = HOP):
        super().__init__()
        check_stft_params(n_fft, hop)
        self.n_fft = n_fft
        self.hop = hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @property
    def num_bins(self) -> int:
        return self.n_fft // 2 + 1

    def forward(self, wave: Tensor) -> Tensor:
        """[B, T] -> complex [B, F, frames]."""
        return stft(wave, self.n_fft, self.hop, self.window.to(wave.dtype))

    def inverse(self, spec: Tensor, length: int) -> Tensor:
        """complex [B, F, frames] -> [B, length]."""
        return istft(spec, length, self.n_fft, self.hop, self.window.to(spec.real.dtype))
