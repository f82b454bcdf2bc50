"""The one audio loader used everywhere: any supported file -> mono float32 at 16 kHz.

Documented handling (not errors): multi-channel files are downmixed by averaging channels, other sample rates are
resampled with a polyphase filter, integer PCM is scaled to [-1, 1]. Errors (``AudioError``, naming the file):
missing, empty, corrupt or unsupported files, and NaN/inf samples.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


class AudioError(ValueError):
    """A user-facing problem with an audio file: says which file and what was expected."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):
        # Rebuilt from (path, reason), not from the message: errors must survive the trip back from a worker process.
        return type(self), (self.path, self.reason)


def resample(audio: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling along the last axis; a no-op when the rates match."""
    if from_rate == to_rate:
        return audio.astype(np.float32, copy=False)
    ratio = Fraction(to_rate, from_rate).limit_denominator(1000)
    out = resample_poly(audio, ratio.numerator, ratio.denominator, axis=-1)
    return out.astype(np.float32, copy=False)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Downmix (frames, channels) to (frames,) by averaging channels."""
    if audio.ndim == 1:
        return audio
    return audio.mean(axis=1)


def check_audio_file(path: str | Path) -> Path:
    """The checks every audio file passes before decoding: supported extension, exists, not empty."""
    path = Path(path)
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise AudioError(
            path, f"unsupported audio format {path.suffix!r}; expected one of {AUDIO_EXTENSIONS}"
        )
    if not path.is_file():
        raise AudioError(path, "file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "file is empty (0 bytes)")
    return path


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Load ``path`` as mono float32 at ``sample_rate``. Raises ``AudioError`` naming the file on bad input."""
    path = check_audio_file(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(
            path, f"cannot decode audio ({err}); the file is corrupt or not {path.suffix}"
        ) from None
    return _finish(data, rate, path, sample_rate)


def decode_audio(blob: bytes, name: str = "<bytes>", sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an in-memory encoded file (e.g. a FLAC upload) with the same rules as ``load_audio``."""
    try:
        data, rate = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(name, f"cannot decode audio ({err})") from None
    return _finish(data, rate, name, sample_rate)


def _finish(data: np.ndarray, rate: int, path: str | Path, sample_rate: int) -> np.ndarray:
    if data.shape[0] == 0:
        raise AudioError(path, "contains no samples")
    if not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise AudioError(path, f"contains {bad} NaN/inf samples; expected finite audio")
    return np.ascontiguousarray(resample(to_mono(data), rate, sample_rate), dtype=np.float32)


def save_audio(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono audio; FLAC (16-bit) for .flac, float32 WAV for .wav. Clips to [-1, 1] for integer formats."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.asarray(audio, dtype=np.float32)
    if path.suffix.lower() == ".flac":
        sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="FLAC")
    elif path.suffix.lower() == ".wav":
        sf.write(str(path), audio, sample_rate, subtype="FLOAT")
    else:
        raise AudioError(path, f"cannot write {path.suffix!r}; expected .flac or .wav")


def encode_flac(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Lossless 16-bit FLAC bytes of a mono signal (used for cache files and for uploads)."""
    buf = io.BytesIO()
    sf.write(
        buf,
        np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0),
        sample_rate,
        format="FLAC",
        subtype="PCM_16",
    )
    return buf.getvalue()


def find_audio_files(folder: str | Path) -> list[Path]:
    """All supported audio files under ``folder``, recursively, in a stable (sorted) order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AudioError(folder, "folder not found")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
