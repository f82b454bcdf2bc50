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
    assert card["arch"] == "onnx"
    _, world = tiny_world
    chunks = world.adaptation_chunks("u0000")[:2]
    targets = pseudo_targets(teacher, chunks)
    np.testing.assert_allclose(targets[0], 0.5 * chunks[0], atol=1e-6)
    with pytest.raises(ValueError, match="teacher.onnx.path: required"):
        load_config(overrides=["teacher.arch=onnx"])
