"""SI-SDR loss (torch) and evaluation metrics (numpy): known values, silence, agreement, a short KD run."""

import numpy as np
import pytest
import torch

from fedpse.audio import metrics
from fedpse.distill.loss import neg_si_sdr_loss, si_sdr
from fedpse.models.gru import GRUMaskNet


def _ref_and_orthogonal_noise(power_ratio_db: float, length: int = 16000, seed: int = 0):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(length)
    ref -= ref.mean()
    noise = rng.standard_normal(length)
    noise -= noise.mean()
    noise -= (noise @ ref) / (ref @ ref) * ref  # orthogonal to ref
    noise *= np.sqrt((ref @ ref) / (noise @ noise) / 10 ** (power_ratio_db / 10))
    return ref, noise


def test_si_sdr_of_a_scaled_copy_is_large_and_finite():
    ref = torch.randn(2, 16000)
    value = si_sdr(0.5 * ref, ref)
    assert value.shape == (2,) and torch.isfinite(value).all() and (value > 80).all()
    assert metrics.si_sdr(0.5 * ref[0].numpy(), ref[0].numpy()) > 80


@pytest.mark.parametrize("ratio_db", [-5.0, 0.0, 10.0, 20.0])
def test_si_sdr_with_orthogonal_noise_equals_the_power_ratio(ratio_db):
    ref, noise = _ref_and_orthogonal_noise(ratio_db)
    assert metrics.si_sdr(ref + noise, ref) == pytest.approx(ratio_db, abs=0.01)
    torch_value = si_sdr(
        torch.tensor(ref + noise, dtype=torch.float32), torch.tensor(ref, dtype=torch.float32)
    )
    assert torch_value.item() == pytest.approx(ratio_db, abs=0.01)


def test_si_sdr_is_scale_invariant_and_ignores_dc_offset():
    ref, noise = _ref_and_orthogonal_noise(5.0)
    assert metrics.si_sdr(3.0 * (ref + noise) + 0.2, ref) == pytest.approx(5.0, abs=0.01)


def test_silence_gives_finite_values_and_finite_gradients():
    zeros, wave = torch.zeros(1, 4000), torch.randn(1, 4000)
    for est, ref in [(zeros, wave), (wave, zeros), (zeros, zeros)]:
        est = est.clone().requires_grad_(True)
        loss = neg_si_sdr_loss(est, ref)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(est.grad).all()
        assert np.isfinite(metrics.si_sdr(est.detach().numpy()[0], ref.numpy()[0]))


def test_torch_loss_and_numpy_metric_agree():
    ref, est = torch.randn(3, 8000), torch.randn(3, 8000)
    est = ref + 0.3 * est
    expected = np.array([metrics.si_sdr(e, r) for e, r in zip(est.numpy(), ref.numpy(), strict=True)])
    assert np.allclose(si_sdr(est, ref).numpy(), expected, atol=1e-3)
    assert neg_si_sdr_loss(est, ref).item() == pytest.approx(-expected.mean(), abs=1e-3)
    assert np.allclose(metrics.si_sdr(est.numpy(), ref.numpy()), expected)


def test_si_sdr_improvement_is_relative_to_the_mixture():
    ref, noise = _ref_and_orthogonal_noise(0.0)
    assert metrics.si_sdri(ref + 0.1 * noise, ref, ref + noise) == pytest.approx(20.0, abs=0.01)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        si_sdr(torch.zeros(1, 10), torch.zeros(1, 11))
    with pytest.raises(ValueError, match="same shape"):
        metrics.si_sdr(np.zeros(10), np.zeros(11))


def _voiced_speech_like(seconds: float = 3.0) -> np.ndarray:
    """Harmonic 'vowels' with a gliding pitch and a syllable-rate envelope: enough for PESQ's speech detector."""
    t = np.arange(int(seconds * 16000)) / 16000
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.7 * t)) / 16000
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 30))
    return 0.1 * harmonics * np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 2


def test_pesq_and_stoi_rank_a_cleaner_estimate_higher():
    rng = np.random.default_rng(1)
    clean = _voiced_speech_like()
    noisy = clean + 0.03 * rng.standard_normal(clean.size)
    better = clean + 0.0003 * rng.standard_normal(clean.size)
    assert (
        metrics.pesq_wb(clean, clean) > metrics.pesq_wb(better, clean) > metrics.pesq_wb(noisy, clean) + 0.5
    )
    assert metrics.stoi(better, clean) > metrics.stoi(noisy, clean)
    assert np.isnan(metrics.pesq_wb(np.zeros(32000), np.zeros(32000)))  # undefined without speech
    assert metrics.pesq_wb(np.zeros_like(clean), clean) < 1.1  # a silent output scores the floor


def test_a_few_kd_steps_reduce_the_loss():
    torch.manual_seed(0)
    teacher = GRUMaskNet(num_layers=1, hidden=16).eval()
    student = GRUMaskNet(num_layers=2, hidden=32)
    noisy = torch.randn(4, 8000) * torch.linspace(0.02, 0.2, 4)[:, None]
    with torch.no_grad():
        pseudo_targets = teacher(noisy)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = neg_si_sdr_loss(student(noisy), pseudo_targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0
