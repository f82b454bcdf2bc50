"""Models: STFT reconstruction, GRU / Conv-TasNet shapes and causality, registry, MAC and parameter counts."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fedpse.models.convtasnet import ConvTasNet, CumulativeLayerNorm, GlobalLayerNorm
from fedpse.models.gru import GRUMaskNet
from fedpse.models.macs import (
    TRAIN_STEP_FACTOR,
    count_params,
    macs_breakdown,
    macs_per_second,
    train_macs,
)
from fedpse.models.registry import build_from_spec, build_model, describe_spec, model_spec
from fedpse.models.stft import Stft, istft, num_frames, stft

SMALL_TASNET = dict(N=32, L=16, B=16, H=32, P=3, X=3, R=2)


@pytest.mark.parametrize("length", [1024, 1025, 16000, 16001])
def test_stft_shapes_and_perfect_reconstruction_with_unity_mask(length):
    wave = torch.randn(2, length)
    spec = stft(wave)
    assert spec.shape == (2, 513, num_frames(length)) and spec.is_complex()
    restored = istft(spec * torch.ones(spec.shape), length=length)
    assert restored.shape == wave.shape
    assert (restored - wave).abs().max() < 1e-5


def test_stft_module_keeps_its_window_out_of_the_state_dict():
    assert dict(Stft().state_dict()) == {}


@pytest.mark.parametrize("layers,hidden", [(2, 32), (1, 8), (3, 16)])
@pytest.mark.parametrize("length", [1024, 4001, 8000])
def test_gru_mask_net_returns_a_wave_of_the_input_shape(layers, hidden, length):
    model = GRUMaskNet(num_layers=layers, hidden=hidden)
    assert model(torch.randn(3, length)).shape == (3, length)
    assert model(torch.randn(length)).shape == (length,)


def test_gru_mask_net_bidirectional_and_other_stft_sizes():
    model = GRUMaskNet(num_layers=2, hidden=8, n_fft=512, hop=128, bidirectional=True)
    assert model(torch.randn(2, 3333)).shape == (2, 3333)


def test_log1p_magnitude_feature_changes_only_what_the_gru_sees():
    torch.manual_seed(0)
    linear = GRUMaskNet(num_layers=1, hidden=8, bidirectional=True)
    logged = GRUMaskNet(num_layers=1, hidden=8, bidirectional=True, magnitude="log1p")
    logged.load_state_dict(linear.state_dict())
    wave = torch.randn(2, 4000)
    with torch.no_grad():
        out_linear, out_logged = linear(wave), logged(wave)
    assert out_logged.shape == wave.shape
    assert not torch.allclose(out_linear, out_logged)
    # The same weights fed log(1 + |X|) by hand give the log1p model's mask.
    spec = logged.stft(wave)
    features, _ = linear.gru(torch.log1p(spec.abs().transpose(1, 2)))
    mask = torch.sigmoid(linear.mask(features)).transpose(1, 2)
    with torch.no_grad():
        assert torch.allclose(linear.stft.inverse(spec * mask, length=4000), out_logged, atol=1e-6)
    assert model_spec(logged)["magnitude"] == "log1p"
    assert describe_spec(model_spec(logged)) == "gru 1x8 bidirectional log1p"
    with pytest.raises(ValueError, match=r"magnitude must be one of .*'log'"):
        GRUMaskNet(magnitude="log")


def test_audio_shorter_than_one_stft_frame_is_rejected_with_length_and_minimum():
    with pytest.raises(ValueError, match=r"1000 samples.*at least 1024"):
        GRUMaskNet()(torch.randn(1, 1000))


def test_gru_mask_net_is_causal_apart_from_the_stft_lookahead():
    model = GRUMaskNet(num_layers=2, hidden=16)
    wave = torch.randn(1, 8000)
    changed = wave.clone()
    changed[:, 5000:] = torch.randn(1, 3000)
    with torch.no_grad():
        a, b = model(wave), model(changed)
    assert torch.allclose(a[:, : 5000 - 1024], b[:, : 5000 - 1024], atol=1e-6)
    assert not torch.allclose(a[:, 5000:], b[:, 5000:])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [1, 7, 100, 4001])
def test_convtasnet_returns_a_wave_of_the_input_length(causal, length):
    model = ConvTasNet(**SMALL_TASNET, causal=causal)
    assert model(torch.randn(2, length)).shape == (2, length)
    assert model(torch.randn(length)).shape == (length,)


def test_layer_norms_normalise_over_channels_and_time():
    x = torch.randn(2, 8, 50) * 3 + 1
    global_norm = GlobalLayerNorm(8)(x)
    assert torch.allclose(global_norm.mean(dim=(1, 2)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(global_norm.var(dim=(1, 2), unbiased=False), torch.ones(2), atol=1e-4)
    cumulative = CumulativeLayerNorm(8)(x)  # at the last frame the running statistics are the global ones
    assert torch.allclose(cumulative[..., -1], global_norm[..., -1], atol=1e-4)


def test_causal_convtasnet_output_does_not_depend_on_the_future():
    model = ConvTasNet(**SMALL_TASNET, causal=True, mask="relu")
    wave = torch.randn(1, 4000)
    changed = wave.clone()
    changed[:, 3000:] = torch.randn(1, 1000)
    with torch.no_grad():
        a, b = model(wave), model(changed)
    assert torch.allclose(a[:, : 3000 - 16], b[:, : 3000 - 16], atol=1e-6)


def test_registry_builds_and_describes_models_so_checkpoints_can_rebuild_them():
    model = build_model("gru", num_layers=2, hidden=64)
    spec = model_spec(model)
    assert spec == {
        "arch": "gru",
        "num_layers": 2,
        "hidden": 64,
        "n_fft": 1024,
        "hop": 256,
        "bidirectional": False,
        "magnitude": "linear",
    }
    assert describe_spec(spec) == "gru 2x64"
    rebuilt = build_from_spec(spec)
    assert model_spec(rebuilt) == spec and count_params(rebuilt) == count_params(model)
    tasnet = build_model("convtasnet", **SMALL_TASNET)
    assert model_spec(build_from_spec(model_spec(tasnet))) == model_spec(tasnet)


def test_registry_rejects_unknown_architectures_and_arguments_by_name():
    with pytest.raises(ValueError, match="'lstm'"):
        build_model("lstm")
    with pytest.raises(ValueError, match="'hiden'"):
        build_model("gru", hiden=32)
    with pytest.raises(ValueError, match="hidden"):
        build_model("gru", hidden=0)
    with pytest.raises(ValueError, match="even"):
        build_model("convtasnet", L=15)


def test_gru_macs_match_a_hand_count():
    # GRU 1x4 on n_fft=16 (F=9 bins), hop 8: per frame
    #   gates 3*(9*4 + 4*4) = 156, gate products 3*4 = 12, mask layer 4*9 = 36,
    #   FFTs 2 * 16*log2(16) = 128, windows 2*16 = 32, magnitude 2*9 = 18, mask product 2*9 = 18  -> 400
    model = GRUMaskNet(num_layers=1, hidden=4, n_fft=16, hop=8)
    assert macs_per_second(model) == pytest.approx(400 * 16000 / 8)
    assert train_macs(model, audio_seconds=2.0) == pytest.approx(TRAIN_STEP_FACTOR * 2 * 400 * 16000 / 8)
    assert count_params(model) == 3 * (9 * 4 + 4 * 4 + 2 * 4) + (4 * 9 + 9)


def _measured_dense_macs_per_frame(model, length, frames):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, length))
    return counter.get_total_flops() / 2 / frames


def test_gru_dense_macs_match_torch_flop_counter():
    model = GRUMaskNet(num_layers=2, hidden=32)
    length = 256 * 40
    analytic = macs_breakdown(model)
    dense_per_frame = (analytic["gru"] + analytic["mask_layer"]) / (16000 / 256)
    measured = _measured_dense_macs_per_frame(model, length, num_frames(length))
    assert measured == pytest.approx(dense_per_frame, rel=1e-6)


def test_convtasnet_macs_match_torch_flop_counter():
    model = ConvTasNet(**SMALL_TASNET)
    length = 8 * 200
    analytic = macs_breakdown(model)
    dense = sum(v for k, v in analytic.items() if k != "mask_product") / (16000 / 8)
    frames = (length + 2 * 8 + (-length) % 8 - 16) // 8 + 1
    measured = _measured_dense_macs_per_frame(model, length, frames)
    assert measured == pytest.approx(dense, rel=0.01)


def test_macs_grow_with_model_size_and_accept_specs():
    small, big = GRUMaskNet(2, 32), GRUMaskNet(2, 256)
    assert macs_per_second(big) > 5 * macs_per_second(small)
    assert macs_per_second(model_spec(small)) == macs_per_second(small)
    assert math.isfinite(macs_per_second(ConvTasNet()))
    logged = GRUMaskNet(2, 32, magnitude="log1p")
    assert macs_breakdown(logged)["spectral"] > macs_breakdown(small)["spectral"]
    assert macs_breakdown(logged)["gru"] == macs_breakdown(small)["gru"]
