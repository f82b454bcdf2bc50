"""GRU mask network: the student (and a possible teacher) of Kim & Kim (WASPAA 2021) / Kim et al. (JASA 2024).

noisy wave -> STFT (1024/256, Hann) -> linear magnitude [frames, 513] -> L x H GRU -> Linear -> sigmoid mask [513]
-> mask * complex STFT (noisy phase kept) -> iSTFT -> enhanced wave of the input length.

Paper-faithful on purpose: the GRU sees the *linear* magnitude with no log compression and no learned or running
normalisation. No fixed input scale is applied either: typical speech levels (-35..-15 dBFS) give per-bin magnitudes
of roughly 0.01..50, which a GRU handles; the mask is bounded (sigmoid) and the KD loss is scale-invariant, so only
the GRU's input depends on level. Unidirectional (the default) is causal in the recurrence; the centered STFT frame
still looks ``n_fft // 2`` samples (32 ms) ahead.

``magnitude="log1p"`` is the one departure, for teachers only (``teacher.magnitude``): the GRU sees ``log(1 + |X|)``,
which compresses the 0.01..50 range of linear magnitudes into 0.01..4. Measured on this CPU (README, "Shipped
checkpoints"): a bidirectional 2x512 on the same batches trailed on linear input for 400 steps and led from step 600;
a bidirectional 2x256 on it passed the linear 2x256 teacher's final validation SI-SDR (12.49 dB at 8200 steps) by
step 4600. Students stay linear, as in the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedpse.models.stft import HOP, N_FFT, Stft, check_min_length


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


MAGNITUDE_FEATURES = ("linear", "log1p")


class GRUMaskNet(nn.Module):
    """Magnitude-mask GRU. ``forward(wave[B, T] or [T]) -> enhanced wave of the same shape``."""

    def __init__(
        self,
        num_layers: int = 2,
        hidden: int = 32,
        n_fft: int = N_FFT,
        hop: int = HOP,
        bidirectional: bool = False,
        magnitude: str = "linear",
    ):
        super().__init__()
        _positive_int("num_layers", num_layers)
        _positive_int("hidden", hidden)
        if not isinstance(bidirectional, bool):
            raise ValueError(f"bidirectional must be a bool, got {bidirectional!r}")
        if magnitude not in MAGNITUDE_FEATURES:
            raise ValueError(f"magnitude must be one of {list(MAGNITUDE_FEATURES)}, got {magnitude!r}")
        self.magnitude = magnitude
        self.stft = Stft(n_fft, hop)
        self.num_layers = num_layers
        self.hidden = hidden
        self.bidirectional = bidirectional
        num_bins = self.stft.num_bins
        self.gru = nn.GRU(
            num_bins, hidden, num_layers=num_layers, batch_first=True, bidirectional=bidirectional
        )
        self.mask = nn.Linear(hidden * (2 if bidirectional else 1), num_bins)

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON primitives): what ``registry.model_spec`` stores to rebuild the model."""
        return {
            "num_layers": self.num_layers,
            "hidden": self.hidden,
            "n_fft": self.stft.n_fft,
            "hop": self.stft.hop,
            "bidirectional": self.bidirectional,
            "magnitude": self.magnitude,
        }

    @property
    def min_samples(self) -> int:
        """Shortest input accepted: one STFT frame."""
        return self.stft.n_fft

    def forward(self, wave: Tensor) -> Tensor:
        """wave: [B, T] or [T] (T >= n_fft) -> enhanced wave, same shape."""
        squeeze = wave.dim() == 1
        if squeeze:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(f"GRUMaskNet expects a wave of shape [B, T] or [T], got {tuple(wave.shape)}")
        check_min_length(wave.shape[-1], self.stft.n_fft, who="GRUMaskNet")
        spec = self.stft(wave)  # [B, F, frames] complex
        magnitude = spec.abs().transpose(1, 2)  # [B, frames, F], linear magnitude as in the paper
        if self.magnitude == "log1p":
            magnitude = torch.log1p(magnitude)
        features, _ = self.gru(magnitude)
        mask = torch.sigmoid(self.mask(features)).transpose(1, 2)  # [B, F, frames]
        out = self.stft.inverse(spec * mask, length=wave.shape[-1])
        return out.squeeze(0) if squeeze else out
