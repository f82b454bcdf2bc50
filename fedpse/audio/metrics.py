"""Evaluation metrics on numpy waveforms (16 kHz): SI-SDR, SI-SDR improvement, wide-band PESQ, STOI.

``si_sdr`` uses the same formula and ``eps`` as the training loss (``fedpse.distill.loss.si_sdr``), computed in
float64. PESQ and STOI come from the ``pesq`` and ``pystoi`` packages, imported only when used.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
EPS = 1e-8


def _pair(est: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if est.shape != ref.shape:
        raise ValueError(f"metric needs est and ref of the same shape, got {est.shape} and {ref.shape}")
    if est.ndim == 0 or est.shape[-1] == 0:
        raise ValueError(f"metric needs non-empty waveforms, got shape {est.shape}")
    return est, ref


def si_sdr(est: np.ndarray, ref: np.ndarray, eps: float = EPS) -> float | np.ndarray:
    """SI-SDR in dB of ``est`` against ``ref``: [T] -> float, or [..., T] -> array over the leading axes."""
    est, ref = _pair(est, ref)
    est = est - est.mean(axis=-1, keepdims=True)
    ref = ref - ref.mean(axis=-1, keepdims=True)
    scale = (est * ref).sum(axis=-1, keepdims=True) / ((ref**2).sum(axis=-1, keepdims=True) + eps)
    target = scale * ref
    noise = est - target
    value = 10 * np.log10(((target**2).sum(axis=-1) + eps) / ((noise**2).sum(axis=-1) + eps))
    return float(value) if np.ndim(value) == 0 else value


def si_sdri(est: np.ndarray, ref: np.ndarray, mix: np.ndarray) -> float | np.ndarray:
    """SI-SDR improvement in dB: ``si_sdr(est, ref) - si_sdr(mix, ref)``."""
    return si_sdr(est, ref) - si_sdr(mix, ref)


def pesq_wb(est: np.ndarray, ref: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Wide-band PESQ (MOS-LQO, about 1.0..4.6) of a 1-D ``est`` against ``ref``.

    Returns NaN when PESQ is undefined (no speech detected in ``ref``, e.g. silence) so that averages over a test
    set can skip it with ``np.nanmean``; an all-zero ``est`` gets PESQ's floor (about 1.03), not an error.
    """
    try:
        from pesq import NoUtterancesError, pesq
    except ImportError:
        raise ImportError(
            "pesq_wb needs the 'pesq' package: pip install 'fedpse[metrics]' (or pip install pesq)"
        ) from None
    est, ref = _pair(est, ref)
    if est.ndim != 1:
        raise ValueError(f"pesq_wb takes 1-D waveforms, got shape {est.shape}")
    if sample_rate != 16000:
        raise ValueError(f"wide-band PESQ needs 16 kHz audio, got sample_rate={sample_rate}")
    if not np.any(ref):
        return float("nan")  # silent reference: nothing to score
    if not np.any(est):
        # The pesq package divides by zero on an all-zero estimate; score it as near-silent noise (PESQ's floor).
        est = 1e-9 * np.random.default_rng(0).standard_normal(est.size)
    try:
        return float(pesq(sample_rate, ref, est, "wb"))
    except NoUtterancesError:
        return float("nan")


def stoi(est: np.ndarray, ref: np.ndarray, sample_rate: int = SAMPLE_RATE, extended: bool = False) -> float:
    """STOI (0..1; ``extended=True`` for ESTOI) of a 1-D ``est`` against ``ref``."""
    try:
        from pystoi import stoi as _stoi
    except ImportError:
        raise ImportError(
            "stoi needs the 'pystoi' package: pip install 'fedpse[metrics]' (or pip install pystoi)"
        ) from None
    est, ref = _pair(est, ref)
    if est.ndim != 1:
        raise ValueError(f"stoi takes 1-D waveforms, got shape {est.shape}")
    return float(_stoi(ref, est, sample_rate, extended=extended))
