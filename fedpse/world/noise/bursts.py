"""Short random bursts on a place's timeline (raindrops, wind buffets), rendered many at a time.

A burst is a kernel (a row of samples) placed at an absolute onset. Bursts are drawn per block from that block's own
generator, so a render needs only the bursts of its blocks and of the block before (a kernel is shorter than
``MAX_KERNEL``, so nothing older reaches the overlap-save history). A burst train through a fixed FIR is filtered
overlap-save on blocks ``[k0 - 1, k1)``, exactly as ``NoiseSource`` filters white noise, so the timeline stays
seamless. Kernels are noise under an envelope, or sinusoids with a random sign, each scaled to unit energy: a train
of them is white in expectation (no correlation between samples), so its long-term power is rate x E[amplitude^2]
per sample before and after a unit-power FIR, which is how the families set their fixed gains. Thousands of short
noise bursts a second are cheaper as one white noise under their summed power envelope (``decaying_power``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.signal import lfilter

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world.noise.common import BLOCK_SAMPLES, HISTORY, filter_blocks

# samples: a longer burst from two blocks back would reach the FIR history
MAX_KERNEL = BLOCK_SAMPLES - HISTORY
_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite_e.hermegauss(80)


def poisson_onsets(rng: np.random.Generator, rate_hz: float, block: int) -> np.ndarray:
    """Absolute sample onsets of a Poisson process of ``rate_hz`` within ``block`` (sorted, int64)."""
    count = rng.poisson(rate_hz * BLOCK_SAMPLES / SAMPLE_RATE)
    return block * BLOCK_SAMPLES + np.sort(rng.integers(0, BLOCK_SAMPLES, count))


def unit_energy(kernels: np.ndarray) -> np.ndarray:
    """Each row scaled to unit energy (float32)."""
    energy = np.sqrt(np.sum(np.square(kernels, dtype=np.float64), axis=1, keepdims=True))
    return (kernels / np.maximum(energy, 1e-12)).astype(np.float32)


def noise_kernels(rng: np.random.Generator, envelopes: np.ndarray) -> np.ndarray:
    """White noise under each row of ``envelopes``, every row at unit energy: sharp-onset noise bursts."""
    if envelopes.shape[1] > MAX_KERNEL:
        raise ValueError(f"a burst of {envelopes.shape[1]} samples exceeds the {MAX_KERNEL}-sample limit")
    return unit_energy(envelopes * rng.standard_normal(envelopes.shape, dtype=np.float32))


def decay_envelopes(decay_samples: np.ndarray, length: int, attack_samples: float = 0.0) -> np.ndarray:
    """Exponential decays (one per row, time constant in samples), after an optional linear attack."""
    n = np.arange(length, dtype=np.float32)
    env = np.exp(-np.maximum(n - attack_samples, 0.0)[None, :] / decay_samples.astype(np.float32)[:, None])
    if attack_samples > 0:
        env *= np.minimum(n / attack_samples, 1.0)[None, :]
    return env


def place_bursts(onsets: np.ndarray, kernels: np.ndarray, start: int, length: int) -> np.ndarray:
    """The sum of every kernel at its onset, over absolute samples ``[start, start + length)`` (float32).

    Each sample sums the bursts that cover it in onset order, whatever else is rendered with it.
    """
    width = kernels.shape[1]
    near = (onsets > start - width) & (onsets < start + length)
    index = (onsets[near] - (start - width))[:, None] + np.arange(width)
    total = np.bincount(index.ravel(), weights=kernels[near].ravel(), minlength=length + 2 * width)
    return total[width : width + length].astype(np.float32)


def filtered_train(
    bursts: Callable[[int], tuple[np.ndarray, np.ndarray]], spectrum: np.ndarray, k0: int, k1: int
) -> np.ndarray:
    """Blocks ``[k0, k1)`` of the burst train through a FIR (``fir_spectrum``); ``bursts(block)`` gives the
    (onsets, kernels) of the bursts that start in ``block``."""
    events = [bursts(block) for block in range(k0 - 1, k1)]
    onsets = np.concatenate([e[0] for e in events])
    kernels = np.concatenate([e[1] for e in events]) if onsets.size else np.zeros((0, 1), np.float32)
    train = place_bursts(onsets, kernels, (k0 - 1) * BLOCK_SAMPLES, (k1 - k0 + 1) * BLOCK_SAMPLES)
    (out,) = filter_blocks(train[BLOCK_SAMPLES - HISTORY :], [spectrum], k1 - k0)
    return out


def decaying_power(
    onsets: np.ndarray, powers: np.ndarray, classes: np.ndarray, decays: np.ndarray, start: int, length: int
) -> np.ndarray:
    """Summed power envelope of exponentially decaying bursts over absolute samples ``[start, start + length)``.

    Burst i adds ``powers[i] * (1 - q) * q**n`` at ``n`` samples after its onset, ``q = exp(-2 / decays[classes[i]])``
    (an amplitude decay of ``decays[...]`` samples, unit energy). White noise times the square root of this sum is,
    sample for sample, distributed as the sum of independent noise bursts, at the cost of one IIR per decay class.
    Bursts before ``start`` are left out: start a block early and they have died away (to below float64 resolution,
    for decays of tens of samples) by the stretch that is used.
    """
    total = np.zeros(length)
    inside = (onsets >= start) & (onsets < start + length)
    for c, decay in enumerate(decays):
        mine = inside & (classes == c)
        impulses = np.bincount(onsets[mine] - start, weights=powers[mine], minlength=length)
        q = math.exp(-2.0 / decay)
        total += lfilter([1.0 - q], [1.0, -q], impulses)
    return total


def normal_mean(fn: Callable[[np.ndarray], np.ndarray]) -> float:
    """E[fn(s)] for s ~ N(0, 1), by Gauss-Hermite quadrature (smooth ``fn``)."""
    return float(np.sum(_HERMITE_WEIGHTS * fn(_HERMITE_NODES)) / math.sqrt(2.0 * math.pi))
