"""STFT framing for spectral ONNX teachers: frames in, frames overlap-added back out, time-aligned.

Streaming-honest: frame ``k`` holds samples ``[k * hop, k * hop + win_length)`` of the (padded) input and nothing
later, so a causal model sees no future beyond its own frame. ``center`` pads ``win_length - hop`` zeros in front
(the zero-filled buffer a streaming denoiser starts with) and drops that latency from the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def window(name: str, length: int) -> np.ndarray:
    """A periodic analysis/synthesis window: hann, sqrt_hann, hamming or rect."""
    n = np.arange(length)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / length)
    windows = {
        "hann": lambda: hann,
        "sqrt_hann": lambda: np.sqrt(hann),
        "hamming": lambda: 0.54 - 0.46 * np.cos(2 * np.pi * n / length),
        "rect": lambda: np.ones(length),
    }
    return windows[name]()


@dataclass(frozen=True)
class StftFraming:
    n_fft: int
    hop: int
    win_length: int
    window: str
    synthesis_window: str
    center: bool
    overlap_add: str  # normalized | sum

    @classmethod
    def from_block(cls, stft: dict) -> StftFraming:
        win_length = stft.get("win_length") or stft["n_fft"]
        analysis = stft.get("window", "hann")
        return cls(
            n_fft=int(stft["n_fft"]),
            hop=int(stft["hop"]),
            win_length=int(win_length),
            window=analysis,
            synthesis_window=stft.get("synthesis_window") or analysis,
            center=bool(stft.get("center", True)),
            overlap_add=stft.get("overlap_add", "normalized"),
        )

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def delay(self) -> int:
        return self.win_length - self.hop if self.center else 0

    def problem(self) -> str | None:
        """What is wrong with these numbers, or None."""
        if self.win_length > self.n_fft:
            return f"teacher.onnx.stft.win_length={self.win_length} exceeds n_fft={self.n_fft}"
        if self.hop > self.win_length:
            return f"teacher.onnx.stft.hop={self.hop} exceeds the window ({self.win_length} samples): samples lost"
        return None

    def frames(self, x: np.ndarray) -> np.ndarray:
        """[n, T] -> windowed frames [n, F, win_length]."""
        padded = self._pad(x)
        count = (padded.shape[1] - self.win_length) // self.hop + 1
        index = np.arange(count)[:, None] * self.hop + np.arange(self.win_length)[None, :]
        return padded[:, index] * window(self.window, self.win_length)

    def synthesize(self, frames: np.ndarray, length: int) -> np.ndarray:
        """Output frames [n, F, >= win_length] -> [n, length], aligned with the input ``frames`` came from."""
        n, count = frames.shape[:2]
        synthesis = window(self.synthesis_window, self.win_length)
        total = (count - 1) * self.hop + self.win_length
        out = np.zeros((n, total))
        weight = np.zeros(total)
        analysis = window(self.window, self.win_length)
        for k in range(count):  # count additions of [n, win]: cheap next to the model calls
            start = k * self.hop
            out[:, start : start + self.win_length] += frames[:, k, : self.win_length] * synthesis
            weight[start : start + self.win_length] += analysis * synthesis
        out = out[:, self.delay : self.delay + length]
        if self.overlap_add == "normalized":
            weight = weight[self.delay : self.delay + length]
            out = np.where(weight > 1e-6, out / np.maximum(weight, 1e-6), 0.0)
        return out

    def _pad(self, x: np.ndarray) -> np.ndarray:
        length = x.shape[1] + 2 * self.delay
        count = max(1, math.ceil((length - self.win_length) / self.hop) + 1)
        total = (count - 1) * self.hop + self.win_length
        padded = np.zeros((x.shape[0], total))
        padded[:, self.delay : self.delay + x.shape[1]] = x
        return padded
