"""The on-disk result cache: teacher outputs and baseline scores reused across runs, keyed by content."""

from __future__ import annotations

import numpy as np
import torch

from fedpse.distill.adapt import pseudo_targets
from fedpse.distill.cache import ResultCache, model_key
from fedpse.models.gru import GRUMaskNet


def _chunks(seed: int, n: int = 3, length: int = 8000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(length).astype(np.float32) * 0.1 for _ in range(n)]


def test_teacher_outputs_are_computed_once_and_then_read_back_identically(tmp_path):
    torch.manual_seed(0)
    teacher = GRUMaskNet(num_layers=1, hidden=8).eval()
    chunks = _chunks(0)
    first = ResultCache(tmp_path)
    out1 = first.targets(teacher, model_key(teacher), chunks)
    assert (first.hits, first.misses) == (0, 3)
    second = ResultCache(tmp_path)
    out2 = second.targets(teacher, model_key(teacher), chunks)
    assert (second.hits, second.misses) == (3, 0)
    direct = pseudo_targets(teacher, chunks)
    for a, b, c in zip(out1, out2, direct, strict=True):
        assert np.array_equal(a, b)
        np.testing.assert_allclose(a, c, atol=1e-6)


def test_other_audio_or_other_weights_or_a_damaged_file_is_computed_again(tmp_path):
    torch.manual_seed(0)
    teacher = GRUMaskNet(num_layers=1, hidden=8).eval()
    cache = ResultCache(tmp_path)
    chunks = _chunks(0, n=1)
    cache.targets(teacher, model_key(teacher), chunks)
    changed = [chunks[0].copy()]
    changed[0][100] += 1e-3  # e.g. a lossy upload of the same chunk
    cache.targets(teacher, model_key(teacher), changed)
    assert cache.misses == 2
    other = GRUMaskNet(num_layers=1, hidden=8).eval()  # different random weights
    assert model_key(other) != model_key(teacher)
    logged = GRUMaskNet(num_layers=1, hidden=8, magnitude="log1p").eval()
    logged.load_state_dict(teacher.state_dict())  # same weights, other input feature: other outputs
    assert model_key(logged) != model_key(teacher)
    for path in tmp_path.rglob("*.npy"):
        path.write_bytes(b"not an array")
    again = ResultCache(tmp_path)
    out = again.targets(teacher, model_key(teacher), chunks)
    assert again.misses == 1 and np.allclose(out[0], pseudo_targets(teacher, chunks)[0], atol=1e-6)


def test_scores_are_reused_only_for_the_same_key_and_no_cache_dir_means_no_reuse(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"si_sdr_generic": 7.5}

    assert ResultCache(tmp_path).scores("world:u0:a:b", compute) == {"si_sdr_generic": 7.5}
    assert ResultCache(tmp_path).scores("world:u0:a:b", compute) == {"si_sdr_generic": 7.5}
    assert len(calls) == 1
    ResultCache(tmp_path).scores("world:u1:a:b", compute)
    off = ResultCache(None)
    off.scores("world:u0:a:b", compute)
    off.scores("world:u0:a:b", compute)
    assert len(calls) == 4
