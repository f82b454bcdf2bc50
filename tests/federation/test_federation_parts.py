"""Federation parts that need no Ray: payload encodings, user selection, streaming schedule, run directory,
and the errors a user gets before any simulation starts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from fedpse.audio.metrics import si_sdr
from fedpse.cli import main
from fedpse.config import ConfigError, load_config
from fedpse.federation import payloads
from fedpse.federation.device import NoisyAudio
from fedpse.federation.ledger import Ledger
from fedpse.federation.plan import RunPlan, select_users
from fedpse.federation.prepare import check_federation, prepare
from fedpse.federation.runner import simulate_many, summary_table
from fedpse.federation.server_app import RegistrationError, register_devices
from fedpse.federation.strategies import STRATEGIES, strategy_class
from fedpse.federation.strategies.base import error_summary
from fedpse.models.gru import GRUMaskNet
from fedpse.results.store import RunDirError, RunStore
from fedpse.world.reader import WorldError, world_dir
from tests.conftest import tiny_config

TINY_MODELS = [
    "student.checkpoint=null",
    "teacher.arch=gru",
    "teacher.layers=1",
    "teacher.hidden=16",
    "teacher.checkpoint=null",
]


def tiny_run_config(tiny_world, *extra: str):
    cfg, _ = tiny_world
    return tiny_config(
        cfg.world.cache_dir, "world.noise.families=[babble, hum, clatter]", *TINY_MODELS, *extra
    )


# ---------------------------------------------------------------------------------------------- payloads
@pytest.mark.parametrize(("precision", "atol"), [("fp32", 0.0), ("fp16", 2e-3), ("int8", 2e-2)])
def test_weights_round_trip_at_each_precision(precision, atol):
    model = GRUMaskNet(num_layers=1, hidden=8)
    state = model.state_dict()
    record = payloads.encode_weights(state, precision)
    back = payloads.decode_weights(record)
    assert payloads.record_precision(record) == precision
    assert set(back) == set(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype
        assert torch.allclose(back[name], tensor, atol=atol * float(tensor.abs().max() + 1e-12))


def test_lower_precision_sends_fewer_bytes():
    state = GRUMaskNet(num_layers=2, hidden=32).state_dict()
    sizes = {p: payloads.encode_weights(state, p).count_bytes() for p in payloads.PRECISIONS}
    params = sum(t.numel() for t in state.values())
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"]
    assert 4 * params <= sizes["fp32"] < 4 * params + 300 * len(state)  # data + npy headers + key names


def test_flac_upload_is_lossless_and_carries_its_length(tiny_world):
    _, world = tiny_world
    audio = world.load("u0000", "adapt_000", "noisy")
    record = payloads.encode_audio({"adapt_000": audio}, "flac")
    assert payloads.audio_codec(record) == "flac"
    assert payloads.audio_seconds(record) == pytest.approx(len(audio) / 16000)
    back = payloads.decode_audio_record(record)["adapt_000"]
    np.testing.assert_array_equal(back, audio)
    assert record.count_bytes() < 4 * len(audio)  # smaller than raw float32


def test_lossy_upload_is_smaller_and_close(tiny_world):
    _, world = tiny_world
    audio = world.load("u0000", "adapt_000", "noisy")
    flac = payloads.encode_audio({"c": audio}, "flac")
    lossy = payloads.encode_audio({"c": audio}, "lossy", lossy_compression=0.5)
    back = payloads.decode_audio_record(lossy)["c"]
    assert payloads.audio_codec(lossy) == "lossy"
    assert len(back) == len(audio)
    assert lossy.count_bytes() < flac.count_bytes()
    assert si_sdr(back, audio) > 5.0


def test_targets_round_trip_and_bad_records_are_named():
    rng = np.random.default_rng(0)
    targets = {"adapt_000": rng.standard_normal(1600).astype(np.float32) * 0.1}
    back = payloads.decode_targets(payloads.encode_targets(targets, "int8"))
    assert np.max(np.abs(back["adapt_000"] - targets["adapt_000"])) < 0.01
    with pytest.raises(payloads.PayloadError, match="upload 'adapt_000'"):
        payloads.decode_audio_record(payloads.encode_targets(targets, "fp32"))


# ---------------------------------------------------------------------------------------------- planning
def test_selection_is_reproducible_for_a_seed_and_changes_with_it():
    users = [f"u{i:04d}" for i in range(20)]
    a = [select_users(users, 0.3, seed=7, round_number=r) for r in range(1, 6)]
    b = [select_users(users, 0.3, seed=7, round_number=r) for r in range(1, 6)]
    c = [select_users(users, 0.3, seed=8, round_number=r) for r in range(1, 6)]
    assert a == b != c
    assert all(len(s) == 6 and len(set(s)) == 6 for s in a)
    assert select_users(users, 0.01, 0, 1) and select_users(users, 1.0, 0, 1) == users


def test_streaming_schedule_delivers_the_next_chunks_each_round(tiny_world):
    cfg = tiny_run_config(tiny_world, "federation.chunks_per_round=1", "federation.num_rounds=2")
    plan = RunPlan(cfg, "/nonexistent")
    names = plan.chunk_names("u0000")
    assert plan.chunks_available("u0000", 1) == names[:1]
    assert plan.chunks_available("u0000", 2) == names[:2]
    spread = RunPlan(
        tiny_run_config(tiny_world, "federation.chunks_per_round=0", "federation.num_rounds=3"), "/x"
    )
    assert spread.chunks_available("u0000", 3) == names  # all chunks spread over the rounds


def test_a_device_can_only_read_its_users_noisy_audio(tiny_world, monkeypatch):
    _, world = tiny_world
    kinds = []
    real_load = world.load
    monkeypatch.setattr(
        world, "load", lambda u, n, kind="noisy": kinds.append((u, kind)) or real_load(u, n, kind)
    )
    audio = NoisyAudio(world, "u0001")
    audio.chunk("adapt_000")
    with pytest.raises(ValueError, match="no adaptation chunk named 'test_000'"):
        audio.chunk("test_000")  # a held-out test mixture is not a device's to read
    assert kinds == [("u0001", "noisy")]


# ---------------------------------------------------------------------------------------------- strategies
def test_every_delivery_mode_is_a_registered_strategy_class():
    assert set(STRATEGIES) == {
        "pseudo_targets",
        "teacher_weights",
        "cloud_student",
        "generic",
        "oracle_clean",
        "fedavg_generic",
    }
    with pytest.raises(ConfigError, match="unknown delivery mode"):
        strategy_class("carrier_pigeon")


def test_device_errors_are_summarised_from_flowers_reason():
    reason = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor.run()\n"
        '  File "x.py", line 3, in f\n    raise RuntimeError("disk full")\nRuntimeError: disk full\n\n'
        "flwr.clientapp.client_app.ClientAppException: \nException ClientAppException occurred. Message: disk full'>"
    )
    assert error_summary(reason) == "RuntimeError: disk full"


# ---------------------------------------------------------------------------------------------- run dir
def test_run_store_appends_rows_under_a_fixed_header(tmp_path):
    store = RunStore.create(tmp_path / "run", load_config())
    store.append("rounds", {"round": 1, "selected": 3, "mean_gain_db": float("nan")})
    store.append("rounds", {"round": 2, "selected": 2})
    rows = store.read_table("rounds")
    assert [r["round"] for r in rows] == ["1", "2"] and rows[0]["mean_gain_db"] == ""
    with pytest.raises(KeyError, match="no column"):
        store.append("rounds", {"round": 3, "colour": "red"})
    assert (tmp_path / "run" / "config.yaml").is_file()
    with pytest.raises(RunDirError, match="already holds a run"):
        RunStore.create(tmp_path / "run", load_config())


def test_summary_table_prints_one_line_per_run():
    summary = {
        "mode": "pseudo_targets",
        "users": 2,
        "users_ok": 2,
        "mean": dict.fromkeys(
            ["si_sdr_noisy", "si_sdr_generic", "si_sdr_personalized", "si_sdr_teacher", "gain_db"], 1.0
        )
        | {"gap_closure": None},
        "totals": {
            "bytes_up": 2e6,
            "bytes_down": 1e6,
            "audio_seconds_exposed": 12.0,
            "device_macs": 4e9,
            "server_macs": 0.0,
        },
        "wall_seconds": 3.0,
    }
    lines = summary_table([summary]).splitlines()
    expected = ["pseudo_targets", "2/2", *["1.00"] * 5, "-", "2.00", "1.00", "12.0", "2.00", "0.00", "3.0"]
    assert lines[2].split() == expected


# ---------------------------------------------------------------------------------------------- bad input
def test_unknown_modes_and_impossible_mode_settings_are_config_errors(tiny_world):
    with pytest.raises(ConfigError, match="federation.mode: unknown delivery mode 'carrier_pigeon'"):
        check_federation(tiny_run_config(tiny_world, "federation.mode=carrier_pigeon"))
    with pytest.raises(ConfigError, match="fedavg_generic.*never took part.*federation.num_users below"):
        check_federation(tiny_run_config(tiny_world, "federation.mode=fedavg_generic"))
    onnx = tiny_run_config(
        tiny_world, "federation.mode=teacher_weights", "teacher.arch=onnx", "teacher.onnx.path=x"
    )
    check_federation(onnx)  # an ONNX teacher's graph goes down to the devices (test_onnx_teacher_weights.py)


def test_more_users_than_the_world_has_is_a_clear_error(tiny_world, tmp_path):
    cfg = tiny_run_config(tiny_world, "federation.num_users=5")
    with pytest.raises(ConfigError, match=r"federation.num_users=5, but the world .* has only 3 users"):
        prepare(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing half-created
    with pytest.raises(ConfigError, match="fail_users"):
        prepare(tiny_run_config(tiny_world, "federation.fail_users=[u0042]"), tmp_path / "run")


def test_a_world_cache_that_does_not_match_the_config_is_refused(tiny_world, tmp_path):
    _, world = tiny_world
    other = tiny_config(
        tmp_path / "cache", "world.noise.families=[babble, hum, clatter]", "seed=1", *TINY_MODELS
    )
    shutil.copytree(world.root, world_dir(other))  # a cache built from seed 0 where seed 1's world should be
    with pytest.raises(WorldError, match="does not match this config"):
        prepare(other, tmp_path / "run")


def test_too_few_simulated_devices_for_the_users_is_a_clear_error(tiny_world, tmp_path):
    class TwoDevices:  # a Grid on which only two devices ever register
        def get_node_ids(self):
            return [11, 12]

    plan = prepare(tiny_run_config(tiny_world), tmp_path / "run")
    with pytest.raises(RegistrationError, match="only 2 of 3 devices registered"):
        register_devices(TwoDevices(), plan, Ledger(), timeout_s=0.1)


def test_cli_simulate_reports_bad_input_without_a_traceback(tiny_world, tmp_path, capsys):
    cfg, _ = tiny_world
    code = main(
        [
            "simulate",
            "--out",
            str(tmp_path / "run"),
            "--set",
            f"world.cache_dir={cfg.world.cache_dir}",
            "--set",
            "federation.mode=fedavg_generic",
        ]
    )
    assert code == 2
    assert "users who never took part" in capsys.readouterr().err


def test_several_runs_are_all_checked_before_any_run_directory_is_created(tiny_world, tmp_path):
    runs = [
        (tiny_run_config(tiny_world), tmp_path / "a"),
        (tiny_run_config(tiny_world, "federation.mode=fedavg_generic"), tmp_path / "b"),
    ]
    with pytest.raises(ConfigError, match="never took part"):
        simulate_many(runs, progress=False)
    assert not (tmp_path / "a").exists()
