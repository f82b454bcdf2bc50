"""Who the users are and how their audio is split: speaker × place × optional room × SNR, then rendering.

A user's noise place has one timeline. The adaptation chunks take ``[0, A)`` of it, the test mixtures take
``[A + gap, A + gap + n·T)``: disjoint by construction, and ``check_disjoint`` asserts it for every user.
Each mixture is ``speech_at_snr + noise``; the clean reference (dry or early-reverb speech, same gain) is kept
next to it for the evaluator and the ``oracle_clean`` baseline only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from fedpse.config import Config

MIX_RMS_DBFS = -26.0  # every mixture is normalised to this level (clean reference gets the same gain)
PEAK_LIMIT = 0.95
SILENT_NOISE_DBFS = -100.0  # noise this quiet is digital silence: no gain can bring it to an SNR


class SilentNoiseError(ValueError):
    """The noise for a mixture has no energy: mixing it would record an SNR the audio does not have."""


@dataclass
class SegmentSpec:
    """One stored mixture: where its noise came from on the place timeline and its content hashes."""

    name: str  # adapt_000 | test_000
    part: str  # adapt | test
    noise_start_s: float
    seconds: float
    snr_db: float
    noisy_sha256: str = ""
    clean_sha256: str = ""


@dataclass
class UserPlan:
    user_id: str
    index: int
    speaker: str
    place: dict  # {"kind": "procedural", **Environment.to_dict()} or {"kind": "corpus", "place_id": ...}
    snr_db: float
    room: dict | None
    segments: list[SegmentSpec] = field(default_factory=list)
    texts: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def pcm_sha256(audio: np.ndarray) -> str:
    """Content hash of audio as stored (16-bit PCM), independent of the file container."""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    return hashlib.sha256(pcm.tobytes()).hexdigest()


def quantize(audio: np.ndarray) -> np.ndarray:
    """What a 16-bit FLAC round trip gives back, so in-memory and on-disk audio agree exactly."""
    return (np.round(np.clip(audio, -1.0, 1.0) * 32767.0) / 32767.0).astype(np.float32)


def segment_layout(cfg: Config) -> list[SegmentSpec]:
    """The adaptation chunks and test mixtures on a place timeline (SNRs filled in per user)."""
    wc = cfg.world
    total = wc.adaptation_minutes * 60.0
    n_chunks = math.ceil(total / wc.chunk_seconds - 1e-9)
    specs = []
    for k in range(n_chunks):
        start = k * wc.chunk_seconds
        specs.append(SegmentSpec(f"adapt_{k:03d}", "adapt", start, min(wc.chunk_seconds, total - start), 0.0))
    test0 = total + wc.noise.test_gap_seconds
    for j in range(wc.test_mixtures):
        specs.append(SegmentSpec(f"test_{j:03d}", "test", test0 + j * wc.test_seconds, wc.test_seconds, 0.0))
    return specs


def timeline_seconds(cfg: Config) -> float:
    last = segment_layout(cfg)[-1]
    return last.noise_start_s + last.seconds


def check_disjoint(segments: list[SegmentSpec], user_id: str = "") -> None:
    """Assert no test noise segment overlaps any adaptation noise segment on the place timeline."""
    adapt = [(s.noise_start_s, s.noise_start_s + s.seconds) for s in segments if s.part == "adapt"]
    for s in segments:
        if s.part != "test":
            continue
        a, b = s.noise_start_s, s.noise_start_s + s.seconds
        for lo, hi in adapt:
            if a < hi and lo < b:
                raise AssertionError(
                    f"user {user_id}: test segment {s.name} [{a}, {b}) overlaps adaptation [{lo}, {hi})"
                )


def mix_at_snr(speech: np.ndarray, reference: np.ndarray, noise: np.ndarray, snr_db: float):
    """Scale noise to ``snr_db`` against the (reverberant) speech, normalise the mixture level, limit peaks.

    Returns (noisy, clean_reference) with the same gain applied to both. Silent speech gets noise at its nominal
    level (SNR undefined; such a chunk is pure noise, which a device also hears in real life). Silent noise is a
    ``SilentNoiseError``: the "noisy" chunk would be clean speech recorded at a nominal SNR.
    """
    p_speech = float(np.mean(speech.astype(np.float64) ** 2))
    p_noise = float(np.mean(noise.astype(np.float64) ** 2)) if len(noise) else 0.0
    if p_noise < 10 ** (SILENT_NOISE_DBFS / 10):
        level = f"{10 * math.log10(p_noise):.1f} dBFS" if p_noise > 0 else "-inf dBFS"
        raise SilentNoiseError(
            f"the noise is silent (RMS {level}); mixing it at {snr_db:.1f} dB SNR would give clean speech "
            "labelled as noisy"
        )
    if p_speech > 1e-10:
        noise = noise * math.sqrt(p_speech / ((p_noise + 1e-12) * 10 ** (snr_db / 10)))  # as before the guard
    noisy = speech + noise
    gain = 10 ** (MIX_RMS_DBFS / 20) / (math.sqrt(float(np.mean(noisy.astype(np.float64) ** 2))) + 1e-9)
    peak = float(np.max(np.abs(noisy))) * gain
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
    return quantize(noisy * gain), quantize(reference * gain)
