"""ONNX teachers: tiny torch denoisers exported inside the test, run whole / chunked / stateful, and clear errors."""

import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from fedpse.models.onnx_teacher import OnnxTeacher, OnnxTeacherError


class TinyConvDenoiser(nn.Module):
    """[B, T] -> [B, T]: a short FIR filter and a soft nonlinearity."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(1, 1, 9, padding=4)

    def forward(self, wave):
        return torch.tanh(self.conv(wave.unsqueeze(1))).squeeze(1)


class Halve(nn.Module):
    """Pointwise, so chunking and resampling must not change it."""

    def forward(self, wave):
        return 0.5 * wave


class RunningOffset(nn.Module):
    """Stateful streaming toy: y = x + h; h' = h + 0.01 * sum(x)."""

    def forward(self, block, h_in):
        return block + h_in, h_in + 0.01 * block.sum(dim=-1, keepdim=True)


def export(model, path, example, input_names, output_names, dynamic_axes=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            dynamo=False,  # the dynamo exporter needs onnxscript
        )
    return path


def dynamic_wave_model(model, path):
    axes = {"wave": {0: "batch", 1: "time"}, "enhanced": {0: "batch", 1: "time"}}
    return export(model, path, (torch.randn(1, 1000),), ["wave"], ["enhanced"], axes)


def test_whole_utterance_output_equals_the_torch_model(tmp_path):
    model = TinyConvDenoiser().eval()
    teacher = OnnxTeacher(dynamic_wave_model(model, tmp_path / "conv.onnx"))
    wave = np.random.default_rng(0).standard_normal((3, 4001)).astype(np.float32) * 0.1
    out = teacher.enhance(wave)
    with torch.no_grad():
        expected = model(torch.from_numpy(wave)).numpy()
    assert out.shape == wave.shape and out.dtype == np.float32
    assert np.allclose(out, expected, atol=1e-5)
    assert teacher.enhance(wave[0]).shape == (4001,)


def test_torch_wrapper_returns_tensors_without_gradients(tmp_path):
    model = TinyConvDenoiser().eval()
    teacher = OnnxTeacher(dynamic_wave_model(model, tmp_path / "conv.onnx")).as_torch_teacher()
    wave = torch.randn(2, 3000, requires_grad=True)
    out = teacher(wave)
    assert isinstance(out, torch.Tensor) and not out.requires_grad
    with torch.no_grad():
        assert torch.allclose(out, model(wave), atol=1e-5)


def test_fixed_shape_model_is_rejected_for_whole_framing_with_its_shape(tmp_path):
    path = export(Halve(), tmp_path / "fixed.onnx", (torch.randn(1, 512),), ["wave"], ["enhanced"])
    with pytest.raises(OnnxTeacherError, match=r"fixed\.onnx.*\[1, 512\].*dynamic time axis"):
        OnnxTeacher(path, framing="whole")


def test_chunked_overlap_add_is_transparent_for_a_fixed_chunk_model(tmp_path):
    path = export(Halve(), tmp_path / "fixed.onnx", (torch.randn(1, 512),), ["wave"], ["enhanced"])
    teacher = OnnxTeacher(path, framing="chunk", hop_seconds=128 / 16000)
    wave = np.random.default_rng(1).standard_normal((2, 3001)).astype(np.float32)
    assert np.allclose(teacher.enhance(wave), 0.5 * wave, atol=1e-5)
    with pytest.raises(OnnxTeacherError, match=r"\[1, 512\].*chunk_seconds=1"):
        OnnxTeacher(path, framing="chunk", chunk_seconds=1.0)


def test_chunked_dynamic_model_approximates_the_whole_utterance(tmp_path):
    model = TinyConvDenoiser().eval()
    path = dynamic_wave_model(model, tmp_path / "conv.onnx")
    wave = np.random.default_rng(2).standard_normal((1, 16000)).astype(np.float32) * 0.1
    whole = OnnxTeacher(path).enhance(wave)
    chunked = OnnxTeacher(path, framing="chunk", chunk_seconds=0.25).enhance(wave)
    assert np.abs(chunked - whole).max() < 0.05 * np.abs(whole).max()


def test_model_sample_rate_from_metadata_is_resampled_both_ways(tmp_path):
    path = dynamic_wave_model(Halve(), tmp_path / "halve8k.onnx")
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {"sample_rate": "8000"})
    onnx.save(proto, str(path))
    teacher = OnnxTeacher(path)
    assert teacher.sample_rate == 8000
    t = np.arange(16000) / 16000
    wave = (np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = teacher.enhance(wave)
    assert out.shape == wave.shape
    assert np.abs(out - 0.5 * wave)[200:-200].max() < 0.01


def test_stateful_model_feeds_its_state_back_block_by_block(tmp_path):
    path = export(
        RunningOffset(), tmp_path / "stream.onnx", (torch.randn(1, 128), torch.zeros(1, 1)),
        ["block", "h_in"], ["out_block", "h_out"],
    )  # fmt: skip
    teacher = OnnxTeacher(path, framing="stateful", shift_samples=128)
    wave = np.random.default_rng(3).standard_normal(1000).astype(np.float32)
    expected, h = [], 0.0
    for start in range(0, 1024, 128):
        block = np.pad(wave, (0, 24))[start : start + 128]
        expected.append(block + h)
        h += 0.01 * block.sum()
    assert np.allclose(teacher.enhance(wave), np.concatenate(expected)[:1000], atol=1e-4)


def test_stateful_overlap_add_is_time_aligned(tmp_path):
    path = export(Halve(), tmp_path / "block.onnx", (torch.randn(1, 1, 256),), ["frame"], ["out"])
    teacher = OnnxTeacher(path, framing="stateful", shift_samples=128)  # two blocks overlap: 0.5 + 0.5
    wave = np.random.default_rng(4).standard_normal(1000).astype(np.float32)
    assert np.allclose(teacher.enhance(wave), wave, atol=1e-5)


def test_missing_and_non_onnx_files_are_clear_errors(tmp_path):
    with pytest.raises(OnnxTeacherError, match=r"nope\.onnx.*not found"):
        OnnxTeacher(tmp_path / "nope.onnx")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("not a model")
    with pytest.raises(OnnxTeacherError, match=r"bogus\.onnx.*not a loadable ONNX model"):
        OnnxTeacher(bogus)


def test_state_inputs_need_stateful_framing_and_a_shift(tmp_path):
    path = export(
        RunningOffset(),
        tmp_path / "s.onnx",
        (torch.randn(1, 128), torch.zeros(1, 1)),
        ["x", "h"],
        ["y", "h2"],
    )
    with pytest.raises(OnnxTeacherError, match=r"2 inputs.*framing='stateful'"):
        OnnxTeacher(path)
    with pytest.raises(OnnxTeacherError, match="shift_samples"):
        OnnxTeacher(path, framing="stateful")


class TwoStates(nn.Module):
    """States returned in the opposite order to their inputs: pairing must go by name."""

    def forward(self, x, a_in, b_in):
        return x + a_in - b_in, b_in + 1.0, a_in + 0.1


def test_state_outputs_are_paired_with_state_inputs_by_name(tmp_path):
    example = (torch.randn(1, 64), torch.zeros(1, 1), torch.zeros(1, 1))
    path = export(TwoStates(), tmp_path / "two.onnx", example, ["x", "a_in", "b_in"], ["y", "b_out", "a_out"])
    out = OnnxTeacher(path, framing="stateful", shift_samples=64).enhance(np.zeros(192, dtype=np.float32))
    assert np.allclose(out, np.repeat([0.0, 0.1 - 1.0, 0.2 - 2.0], 64), atol=1e-6)


def test_an_onnx_teacher_is_selected_by_config_and_used_for_pseudo_targets(tmp_path, tiny_world):
    from fedpse.config import load_config
    from fedpse.distill.adapt import pseudo_targets
    from fedpse.models.zoo import load_teacher

    model = Halve()
    path = dynamic_wave_model(model, tmp_path / "t.onnx")
    cfg = load_config(
        overrides=["teacher.arch=onnx", f"teacher.onnx.path={path}", "teacher.onnx.framing=whole"]
    )
    teacher, card = load_teacher(cfg)
    assert card["arch"] == "onnx" and card["macs_per_second"] == 0.0  # a pointwise model has no dense ops
    _, world = tiny_world
    chunks = world.adaptation_chunks("u0000")[:2]
    targets = pseudo_targets(teacher, chunks)
    np.testing.assert_allclose(targets[0], 0.5 * chunks[0], atol=1e-6)
    with pytest.raises(ValueError, match="teacher.onnx.path: required"):
        load_config(overrides=["teacher.arch=onnx"])


class ConvLinearConv(nn.Module):
    """[B, T] -> [B, T]: strided conv encoder (4 x 16 taps, stride 8), a 4x4 linear map, transposed-conv decoder."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Conv1d(1, 4, 16, stride=8, bias=False)
        self.mix = nn.Linear(4, 4)
        self.dec = nn.ConvTranspose1d(4, 1, 16, stride=8, bias=False)

    def forward(self, wave):
        h = self.enc(wave.unsqueeze(1))  # [B, 4, F]
        h = self.mix(h.transpose(1, 2)).transpose(1, 2)
        return self.dec(h).squeeze(1)


class StreamingGRU(nn.Module):
    """Stateful: a block of 64 samples as 8 frames of 8, a GRU(8 -> 16) carrying h, a 16 -> 8 linear read-out."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.out = nn.Linear(16, 8)

    def forward(self, block, h_in):
        y, h_out = self.gru(block.reshape(1, 8, 8), h_in)
        return self.out(y).reshape(1, 64), h_out


def _hand_count(samples: int) -> dict[str, int]:
    frames = (samples - 16) // 8 + 1
    return {"Conv": frames * 4 * 16, "MatMul": frames * 4 * 4, "ConvTranspose": frames * 4 * 16}


def test_onnx_teacher_macs_are_counted_from_the_graph_and_match_a_hand_count(tmp_path):
    from fedpse.models.macs import forward_macs

    path = dynamic_wave_model(ConvLinearConv(), tmp_path / "enc_dec.onnx")
    whole = OnnxTeacher(path, framing="whole")
    assert whole.macs_breakdown() == pytest.approx(
        _hand_count(16000)
    )  # one second = one call of 16000 samples
    per_second = sum(_hand_count(16000).values())
    assert forward_macs(whole.as_torch_teacher(), 2.5) == pytest.approx(2.5 * per_second)
    chunked = OnnxTeacher(
        path, framing="chunk", chunk_seconds=0.5, hop_seconds=0.25
    )  # 4 calls of 8000 per second
    assert chunked.macs_breakdown() == pytest.approx({k: 4 * v for k, v in _hand_count(8000).items()})


def test_stateful_recurrent_onnx_teacher_macs_count_the_gru_gates_per_block(tmp_path):
    example = (torch.randn(1, 64), torch.zeros(1, 1, 16))
    path = export(StreamingGRU(), tmp_path / "gru.onnx", example, ["block", "h_in"], ["out", "h_out"])
    teacher = OnnxTeacher(path, framing="stateful", shift_samples=32)
    per_block = {"GRU": 8 * 3 * (8 * 16 + 16 * 16), "MatMul": 8 * 16 * 8}
    assert teacher.macs_breakdown() == pytest.approx({k: v * 16000 / 32 for k, v in per_block.items()})


def test_an_onnx_graph_that_cannot_be_counted_is_a_clear_error_and_an_unknown_ledger_cost(tmp_path):
    class EinsumScale(nn.Module):
        def forward(self, wave):
            return torch.einsum("bt,b->bt", wave, wave[:, 0])

    path = dynamic_wave_model(EinsumScale(), tmp_path / "einsum.onnx")
    teacher = OnnxTeacher(path, framing="whole")
    with pytest.raises(ValueError, match=r"einsum\.onnx: cannot count the MACs of Einsum"):
        teacher.macs_breakdown()
    np.testing.assert_allclose(teacher.enhance(np.ones(100)), np.ones(100), atol=1e-6)  # it still runs
