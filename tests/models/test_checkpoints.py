"""Checkpoints: round trip (fp16/fp32), model cards, and errors a user can act on."""

import json

import pytest
import torch

from fedpse.models.checkpoints import CheckpointError, card_path, load_checkpoint, save_checkpoint
from fedpse.models.convtasnet import ConvTasNet
from fedpse.models.gru import GRUMaskNet


@pytest.fixture
def student():
    torch.manual_seed(0)
    return GRUMaskNet(num_layers=2, hidden=32).eval()


@pytest.mark.parametrize("dtype,atol", [("fp32", 1e-6), ("fp16", 2e-3)])
def test_round_trip_gives_the_same_outputs(tmp_path, student, dtype, atol):
    path = tmp_path / "student.pt"
    save_checkpoint(path, student, {"world_seed": 7, "steps": 100, "val_si_sdr_db": 12.5}, dtype=dtype)
    loaded, card = load_checkpoint(path, expected_arch={"arch": "gru", "num_layers": 2, "hidden": 32})
    assert not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    wave = torch.randn(1, 16000) * 0.1
    with torch.no_grad():
        assert torch.allclose(loaded(wave), student(wave), atol=atol)
    assert card["world_seed"] == 7 and card["dtype"] == dtype and card["arch"] == "gru 2x32"
    assert card["params"] > 0 and card["macs_per_second"] > 0


def test_checkpoint_loads_with_weights_only_and_writes_a_readable_card(tmp_path, student):
    path = tmp_path / "student.pt"
    save_checkpoint(path, student, {"config": {"lr": 1e-3, "batch": [4, 4]}})
    payload = torch.load(path, weights_only=True)
    assert payload["spec"]["hidden"] == 32
    card = json.loads(card_path(path).read_text())
    assert card["config"] == {"lr": 1e-3, "batch": [4, 4]} and card["model_spec"]["arch"] == "gru"
    assert path.stat().st_size < 2 * 75_777 + 16_000  # fp16: 2 bytes for each of the 75,777 parameters


def test_convtasnet_round_trip(tmp_path):
    model = ConvTasNet(N=32, L=16, B=16, H=32, X=2, R=2, causal=True).eval()
    save_checkpoint(tmp_path / "teacher.pt", model, dtype="fp32")
    loaded, _ = load_checkpoint(tmp_path / "teacher.pt")
    wave = torch.randn(1, 3000)
    with torch.no_grad():
        assert torch.allclose(loaded(wave), model(wave), atol=1e-6)


def test_wrong_architecture_names_both(tmp_path):
    path = tmp_path / "big.pt"
    save_checkpoint(path, GRUMaskNet(num_layers=2, hidden=256))
    with pytest.raises(CheckpointError, match=r"big\.pt.*gru 2x256.*hidden=256.*expected hidden=32"):
        load_checkpoint(path, expected_arch={"arch": "gru", "num_layers": 2, "hidden": 32})


def test_missing_corrupt_truncated_and_foreign_files_are_clear_errors(tmp_path, student):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt.*corrupt or truncated"):
        load_checkpoint(garbage)
    good = tmp_path / "good.pt"
    save_checkpoint(good, student)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    foreign = tmp_path / "plain_state_dict.pt"
    torch.save(student.state_dict(), foreign)
    with pytest.raises(CheckpointError, match="not a fedpse checkpoint"):
        load_checkpoint(foreign)
    pickled_module = tmp_path / "pickled_module.pt"
    torch.save(student, pickled_module)
    with pytest.raises(CheckpointError, match="not a fedpse checkpoint"):
        load_checkpoint(pickled_module)


def test_state_dict_that_does_not_fit_its_spec_is_an_error(tmp_path, student):
    path = tmp_path / "tampered.pt"
    save_checkpoint(path, student)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["mask.weight"] = torch.zeros(513, 64)
    del payload["state_dict"]["mask.bias"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"do not match the gru 2x32.*mask\.bias.*mask\.weight"):
        load_checkpoint(path)


def test_card_must_be_json_serialisable(tmp_path, student):
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "x.pt", student, {"tensor": torch.zeros(1)})


def test_update_card_adds_measured_figures_without_touching_weights(tmp_path):
    from fedpse.models.checkpoints import update_card

    model = GRUMaskNet(num_layers=1, hidden=4)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"steps": 3})
    card = update_card(path, {"held_out_users": {"5": {"si_sdr": 9.5}}})
    reloaded, card2 = load_checkpoint(path)
    assert card2 == card and card2["steps"] == 3 and card2["held_out_users"]["5"]["si_sdr"] == 9.5
    assert json.loads(card_path(path).read_text())["held_out_users"]["5"]["si_sdr"] == 9.5
    for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a.half().float(), b)


def test_an_architecture_key_absent_from_an_older_checkpoint_reads_as_its_default(tmp_path, student):
    path = tmp_path / "old.pt"
    save_checkpoint(path, student)
    payload = torch.load(path, weights_only=True)
    del payload["spec"]["magnitude"]  # written before GRUMaskNet had a magnitude option
    torch.save(payload, path)
    loaded, _ = load_checkpoint(path, expected_arch={"arch": "gru", "hidden": 32, "magnitude": "linear"})
    assert loaded.magnitude == "linear"
    with pytest.raises(CheckpointError, match=r"magnitude='<absent>'.*expected magnitude='log1p'"):
        load_checkpoint(path, expected_arch={"arch": "gru", "magnitude": "log1p"})


def test_log1p_gru_round_trip_keeps_its_input_feature(tmp_path):
    torch.manual_seed(0)
    model = GRUMaskNet(num_layers=1, hidden=16, bidirectional=True, magnitude="log1p").eval()
    path = tmp_path / "teacher.pt"
    save_checkpoint(path, model, dtype="fp32")
    loaded, card = load_checkpoint(path, expected_arch={"arch": "gru", "magnitude": "log1p"})
    assert loaded.magnitude == "log1p" and card["arch"] == "gru 1x16 bidirectional log1p"
    wave = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        assert torch.allclose(loaded(wave), model(wave), atol=1e-6)
