"""teacher_weights with an ONNX teacher: its graph goes down once, byte for byte, and the device runs it."""

from __future__ import annotations

from collections import defaultdict

import pytest

from fedpse.federation.plan import RunPlan
from fedpse.federation.runner import simulate_many
from tests.federation.test_federation_parts import tiny_run_config
from tests.models.test_onnx_spectral import NsNetLike, nsnet_like

pytestmark = pytest.mark.ray  # a real Flower + Ray simulation


def test_an_onnx_teacher_is_sent_once_as_its_file_and_counted_in_the_summary(tiny_world, tmp_path):
    model = nsnet_like(tmp_path / "nsnet.onnx")
    cfg = tiny_run_config(
        tiny_world,
        "federation.mode=teacher_weights",
        "federation.num_rounds=2",
        "federation.chunks_per_round=1",
        "federation.steps_per_round=2",
        "teacher.arch=onnx",
        "teacher.onnx.framing=spectral",
        "teacher.onnx.stft={n_fft: 320, hop: 160, window: sqrt_hann}",
        f"teacher.onnx.stages=[{{path: {model}, feature: log_power, output: mask}}]",
    )
    seen = defaultdict(list)
    (summary,) = simulate_many(
        [(cfg, tmp_path / "run")], progress=False, observers=(lambda d, row, msg: seen[d].append((row, msg)),)
    )
    plan = RunPlan.load(tmp_path / "run")
    messages = seen[(tmp_path / "run").resolve()]
    downloads = [(row, msg) for row, msg in messages if row.kind == "teacher_weights"]
    assert sorted(row.user for row, _ in downloads) == plan.users  # once per device
    size = model.stat().st_size
    assert all(size <= msg.content["teacher"].count_bytes() < size + 1000 for _, msg in downloads)
    params = sum(p.numel() for p in NsNetLike().parameters())
    assert summary["teacher_params"] == params and summary["teacher_fp32_bytes"] == 4 * params
    for user in plan.users:
        cached = plan.device_dir(user) / "teacher_onnx"
        assert (cached / "stage0.onnx").read_bytes() == model.read_bytes() and (
            cached / "teacher.json"
        ).is_file()
    assert summary["totals"]["audio_seconds_exposed"] == 0
