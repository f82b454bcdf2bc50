"""Parameter and multiply-accumulate (MAC) counts, computed analytically from the architecture.

Convention (all figures are *real* MACs per second of 16 kHz audio, forward pass, batch 1):

- Dense work: every weight multiply in a Linear/Conv/GRU matmul is one MAC (biases, additions not counted).
- GRU, per frame, per layer and direction: ``3 * (in * H + H * H)`` for the gate matmuls plus ``3 * H`` elementwise
  products (``r * (W_hn h + b_hn)``, ``(1 - z) * n``, ``z * h``). Sigmoid/tanh are not counted.
- STFT/iSTFT, per frame: one real-input FFT of ``n_fft`` points costs ``n_fft * log2(n_fft)`` real MACs, i.e. the
  textbook ``(n_fft / 2) * log2(n_fft)`` complex MACs at 4 real MACs each, halved for the real-input symmetry;
  plus ``n_fft`` for the window (analysis and synthesis each). The magnitude costs ``2 * F`` (re^2 + im^2) and the
  mask ``2 * F`` (real mask times complex bin); F = n_fft / 2 + 1. Overlap-add is additions only.
- Conv-TasNet, per encoder frame (stride L/2): encoder ``N * L``, bottleneck ``N * B``, each block
  ``B * H + H * P + 2 * H * B`` (1x1 in, depthwise, residual and skip 1x1), mask conv ``B * N``, mask product ``N``,
  decoder ``N * L``. Normalisation (gLN/cLN) and PReLU are not counted (a few ops per element, < 2 %).
- Frames per second are ``sample_rate / hop`` (asymptotic: the one extra centred frame and padding are ignored).
- A training step costs ``TRAIN_STEP_FACTOR`` (3) times the forward pass: forward + backward (~2x forward).
"""

from __future__ import annotations

import math

from torch import nn

from fedpse.models.registry import model_spec

TRAIN_STEP_FACTOR = 3.0


def count_params(model: nn.Module) -> int:
    """Number of parameters (all, trainable or not); an ONNX teacher counts its graphs' initializers."""
    if hasattr(model, "param_count"):
        return int(model.param_count())
    return sum(p.numel() for p in model.parameters())


def fft_macs(n_fft: int) -> float:
    """Real MACs of one real-input FFT (or inverse) of ``n_fft`` points (see module docstring)."""
    return n_fft * math.log2(n_fft)


def gru_macs_per_frame(
    num_layers: int,
    hidden: int,
    n_fft: int = 1024,
    bidirectional: bool = False,
    magnitude: str = "linear",
    **_ignored,
) -> dict[str, float]:
    """Per-frame MAC breakdown of ``GRUMaskNet``: ``gru``, ``gru_elementwise``, ``mask_layer``, ``stft``, ``spectral``."""
    bins = n_fft // 2 + 1
    directions = 2 if bidirectional else 1
    gru = elementwise = 0.0
    for layer in range(num_layers):
        inputs = bins if layer == 0 else hidden * directions
        gru += directions * 3 * (inputs * hidden + hidden * hidden)
        elementwise += directions * 3 * hidden
    return {
        "gru": gru,
        "gru_elementwise": elementwise,
        "mask_layer": hidden * directions * bins,
        "stft": 2 * (fft_macs(n_fft) + n_fft),  # analysis + synthesis FFTs and windows
        # magnitude (+ log1p), mask product
        "spectral": 2 * bins + 2 * bins + (bins if magnitude == "log1p" else 0),
    }


def convtasnet_macs_per_frame(
    N: int, L: int, B: int, H: int, P: int, X: int, R: int, **_ignored
) -> dict[str, float]:  # noqa: N803
    """Per-encoder-frame MAC breakdown of ``ConvTasNet``."""
    return {
        "encoder": N * L,
        "bottleneck": N * B,
        "blocks": R * X * (B * H + H * P + 2 * H * B),
        "mask_layer": B * N,
        "mask_product": N,
        "decoder": N * L,
    }


def macs_breakdown(model: nn.Module | dict, sample_rate: int = 16000) -> dict[str, float]:
    """MACs per second of audio by component, for a model or its ``model_spec`` dict.

    A model that counts itself (an ONNX teacher: ``macs_breakdown()`` from its graph) is asked directly.
    """
    own = getattr(model, "macs_breakdown", None)
    if callable(own):
        return own(sample_rate)
    spec = model if isinstance(model, dict) else model_spec(model)
    if spec["arch"] == "gru":
        per_frame = gru_macs_per_frame(**spec)
        frames_per_second = sample_rate / spec["hop"]
    elif spec["arch"] == "convtasnet":
        per_frame = convtasnet_macs_per_frame(**spec)
        frames_per_second = sample_rate / (spec["L"] // 2)
    else:
        raise ValueError(f"no MAC model for arch {spec['arch']!r}")
    return {name: macs * frames_per_second for name, macs in per_frame.items()}


def macs_per_second(model: nn.Module | dict, sample_rate: int = 16000) -> float:
    """Forward MACs per second of audio (see the module docstring for the convention)."""
    return float(sum(macs_breakdown(model, sample_rate).values()))


def forward_macs(model: nn.Module | dict, audio_seconds: float, sample_rate: int = 16000) -> float:
    """Forward MACs to enhance ``audio_seconds`` of audio."""
    return macs_per_second(model, sample_rate) * audio_seconds


def train_macs(model: nn.Module | dict, audio_seconds: float, sample_rate: int = 16000) -> float:
    """MACs of training (forward + backward) on ``audio_seconds`` of audio: ``TRAIN_STEP_FACTOR`` x forward."""
    return TRAIN_STEP_FACTOR * forward_macs(model, audio_seconds, sample_rate)
