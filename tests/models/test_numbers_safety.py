"""Numbers are finite or the run says why; cached results are keyed by what produced them.

A checkpoint with NaN weights, a model (student, teacher, ONNX) that outputs NaN and a student whose KD loss diverges
are errors naming the model and the user; results files never hold NaN; two different teachers never share a result
cache key; a damaged ``.pt`` or ``ledger.csv`` is a one-line error naming the file.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from fedpse.config import load_config
from fedpse.distill.adapt import adapt, personalize_user, pseudo_targets
from fedpse.distill.cache import ResultCache, model_key
from fedpse.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from fedpse.models.finite import NonFiniteOutputError
from fedpse.models.gru import GRUMaskNet
from fedpse.models.onnx_teacher import OnnxTeacher
from fedpse.results.report import ReportError, load_run
from fedpse.results.store import RunStore
from tests.models.test_onnx_teacher import Halve, dynamic_wave_model, export
from tests.results.test_report import write_run

ADAPT = load_config(overrides=["adapt.steps=3", "adapt.segment_seconds=0.25", "adapt.batch_size=2"]).adapt


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, wave):
        return self.factor * wave


class SqrtOfNegative(nn.Module):
    """A broken denoiser: every output sample is NaN."""

    def forward(self, wave):
        return torch.sqrt(-wave.abs() - 1.0)


class FakeWorld:
    """What ``personalize_user`` reads of a world: a user's adaptation chunks and held-out test set."""

    manifest = {"key": "fake-world"}

    def __init__(self, seconds: float = 0.5):
        rng = np.random.default_rng(0)
        n = int(seconds * 16000)
        self.clean = [np.sin(np.arange(n) * 0.05 * (k + 1)).astype(np.float32) * 0.3 for k in range(3)]
        self.noisy = [c + 0.1 * rng.standard_normal(n).astype(np.float32) for c in self.clean]

    def adaptation_chunks(self, user: str, kind: str = "noisy") -> list[np.ndarray]:
        return list(self.noisy if kind == "noisy" else self.clean)

    def test_set(self, user: str) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(zip(self.noisy[:2], self.clean[:2], strict=True))


def small_gru(**kwargs) -> GRUMaskNet:
    torch.manual_seed(0)
    return GRUMaskNet(**{"num_layers": 1, "hidden": 8, **kwargs}).eval()


def with_nan_weight(model: nn.Module) -> nn.Module:
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.mask.weight[0, 0] = math.nan
    return broken


def onnx_teacher(tmp_path, module: nn.Module, name: str, **options) -> nn.Module:
    return OnnxTeacher(dynamic_wave_model(module, tmp_path / name), **options).as_torch_teacher()


# ---------------------------------------------------------------------------------------------- checkpoints
def test_a_checkpoint_with_nan_weights_is_refused_naming_the_file_and_the_weights(tmp_path):
    path = tmp_path / "diverged.pt"
    save_checkpoint(path, with_nan_weight(small_gru()), dtype="fp32")
    with pytest.raises(CheckpointError, match=r"diverged\.pt: .*NaN or inf.*mask\.weight") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_are_not_a_pytorch_checkpoint(tmp_path, seed):
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(seed).bytes(4096))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a PyTorch checkpoint, or the file is corrupt or truncated")
    assert "Python objects" not in message and "\n" not in message


def test_a_truncated_checkpoint_is_corrupt_and_a_pickle_with_code_is_refused_as_such(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, small_gru())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:-300])
    with pytest.raises(
        CheckpointError, match=r"truncated\.pt: not a PyTorch checkpoint, or the file is corrupt"
    ):
        load_checkpoint(truncated)

    class Payload:
        def __reduce__(self):
            return (print, ("this would run on load",))

    for protocol in (2, pickle.DEFAULT_PROTOCOL):
        evil = tmp_path / f"evil{protocol}.pt"
        evil.write_bytes(pickle.dumps(Payload(), protocol=protocol))
        with pytest.raises(CheckpointError, match="holds Python objects other than tensors") as err:
            load_checkpoint(evil)
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- model outputs
def test_an_onnx_teacher_that_outputs_nan_names_the_teacher_and_the_user(tmp_path):
    teacher = onnx_teacher(tmp_path, SqrtOfNegative(), "broken.onnx")
    with pytest.raises(NonFiniteOutputError, match=r"teacher onnx .*broken\.onnx for user u0007: ") as err:
        pseudo_targets(teacher, FakeWorld().noisy, user="u0007")
    assert err.value.role == "teacher" and err.value.user == "u0007"
    cache = ResultCache(tmp_path / "cache")
    with pytest.raises(NonFiniteOutputError, match="teacher onnx"):
        cache.targets(teacher, model_key(teacher), FakeWorld().noisy, user="u0007")
    assert not list((tmp_path / "cache").rglob("*.npy"))  # nothing cached


def test_personalize_user_refuses_a_nan_teacher_or_a_nan_student_naming_it(tmp_path):
    world = FakeWorld()
    with pytest.raises(NonFiniteOutputError, match=r"^teacher onnx .*broken\.onnx for user u0001: "):
        personalize_user(
            world, "u0001", small_gru(), onnx_teacher(tmp_path, SqrtOfNegative(), "broken.onnx"), ADAPT
        )
    no_steps = load_config(overrides=["adapt.steps=0"]).adapt
    with pytest.raises(NonFiniteOutputError, match=r"^student gru 1x8 for user u0002: ") as err:
        personalize_user(world, "u0002", with_nan_weight(small_gru()), small_gru(hidden=4), no_steps)
    assert err.value.role == "student"


def test_a_diverging_kd_loss_is_an_error_naming_the_user(tmp_path):
    world = FakeWorld()
    student = with_nan_weight(small_gru())
    targets = pseudo_targets(small_gru(hidden=4), world.noisy)
    no_holdout = load_config(
        overrides=["adapt.steps=3", "adapt.segment_seconds=0.25", "adapt.patience=0"]
    ).adapt
    with pytest.raises(
        NonFiniteOutputError, match=r"^student gru 1x8 for user u0003: the KD loss is nan at step 1"
    ):
        adapt(student, world.noisy, targets, no_holdout, user="u0003")
    stopping_rule = load_config(overrides=["adapt.steps=3", "adapt.holdout_fraction=0.4"]).adapt
    with pytest.raises(
        NonFiniteOutputError, match=r"^student gru 1x8 for user u0003: its agreement .* at step 0"
    ):
        adapt(with_nan_weight(small_gru()), world.noisy, targets, stopping_rule, user="u0003")


def test_pretraining_stops_when_its_loss_diverges(tiny_world, tmp_path, monkeypatch):
    from fedpse.distill import pretrain as pretraining
    from tests.distill.test_distill import _cfg

    world_cfg, world = tiny_world
    cfg = _cfg(world_cfg, tmp_path, "pretrain.steps=4", "pretrain.val_every=2")
    monkeypatch.setattr(pretraining, "neg_si_sdr_loss", lambda est, ref: (est * math.nan).mean())
    with pytest.raises(NonFiniteOutputError, match=r"^student gru 2x32: the training loss is nan at step 1"):
        pretraining.pretrain(cfg, "student", world, progress=False, log=lambda _: None)


def test_the_evaluator_refuses_nan_scores_of_the_teacher_and_of_a_student(tmp_path):
    from fedpse.federation.evaluator import Evaluator
    from fedpse.federation.plan import RunPlan

    path = dynamic_wave_model(SqrtOfNegative(), tmp_path / "broken.onnx")
    cfg = load_config(
        overrides=[
            "student.checkpoint=null",
            "teacher.arch=onnx",
            f"teacher.onnx.path={path}",
            f"federation.cache_dir={tmp_path / 'cache'}",
        ]
    )
    plan = RunPlan(cfg, tmp_path / "run")
    plan.freeze_models()
    plan.__dict__["world"] = FakeWorld()
    evaluator = Evaluator(plan)
    with pytest.raises(NonFiniteOutputError, match=r"^teacher onnx .*broken\.onnx for user u0004: "):
        evaluator.baseline("u0004")
    with pytest.raises(NonFiniteOutputError, match=r"^student gru 2x32 for user u0004: ") as err:
        evaluator.personalized("u0004", model=with_nan_weight(evaluator.generic))
    assert err.value.role == "student"
    assert not list((tmp_path / "cache").rglob("*.json"))  # no NaN score was cached


# ---------------------------------------------------------------------------------------------- result cache keys
def test_two_onnx_teachers_never_share_a_cache_key_and_the_key_follows_the_bytes(tmp_path):
    halve = onnx_teacher(tmp_path, Halve(), "halve.onnx")
    quarter = onnx_teacher(tmp_path, Scale(0.25), "quarter.onnx")
    assert model_key(halve) != model_key(quarter)
    chunks = FakeWorld().noisy
    cache = ResultCache(tmp_path / "cache")
    first = cache.targets(halve, model_key(halve), chunks)
    second = cache.targets(quarter, model_key(quarter), chunks)
    np.testing.assert_allclose(second[0], 0.25 * chunks[0], atol=1e-6)  # not the first teacher's outputs
    assert not np.allclose(first[0], second[0])
    shutil.copy(tmp_path / "halve.onnx", tmp_path / "same.onnx")
    same = OnnxTeacher(tmp_path / "same.onnx").as_torch_teacher()
    assert model_key(same) == model_key(halve)  # same bytes and framing: same outputs


def test_every_onnx_framing_value_changes_the_cache_key(tmp_path):
    path = export(Halve(), tmp_path / "fixed.onnx", (torch.randn(1, 512),), ["wave"], ["enhanced"])
    keys = {
        model_key(OnnxTeacher(path, framing="chunk", **options).as_torch_teacher())
        for options in (
            {},
            {"hop_seconds": 128 / 16000},
            {"sample_rate": 8000},
            {"sample_rate": 8000, "hop_seconds": 128 / 8000},
        )
    }
    assert len(keys) == 4
    stateful = OnnxTeacher(path, framing="stateful", shift_samples=128).as_torch_teacher()
    assert model_key(stateful) not in keys
    assert model_key(stateful) != model_key(
        OnnxTeacher(path, framing="stateful", shift_samples=256).as_torch_teacher()
    )


def test_an_onnx_teacher_from_config_is_keyed_by_its_whole_config_block(tmp_path):
    from fedpse.models.zoo import load_teacher

    path = dynamic_wave_model(Halve(), tmp_path / "t.onnx")
    base = ["teacher.arch=onnx", f"teacher.onnx.path={path}"]
    one = load_teacher(load_config(overrides=[*base, "teacher.onnx.framing=chunk"]))[0]
    again = load_teacher(load_config(overrides=[*base, "teacher.onnx.framing=chunk"]))[0]
    other = load_teacher(
        load_config(overrides=[*base, "teacher.onnx.framing=chunk", "teacher.onnx.hop_seconds=1"])
    )[0]
    assert model_key(one) == model_key(again) != model_key(other)


def test_torch_models_with_the_same_weights_but_another_architecture_get_another_key():
    model = small_gru()
    other_hop = GRUMaskNet(num_layers=1, hidden=8, hop=128).eval()
    other_hop.load_state_dict(model.state_dict())  # same parameter shapes: only the framing differs
    assert model_key(other_hop) != model_key(model)
    assert model_key(copy.deepcopy(model)) == model_key(model)


# ---------------------------------------------------------------------------------------------- results files
def test_summary_json_never_holds_nan(tmp_path):
    store = RunStore(tmp_path)
    store.write_summary({"mean": {"gain_db": math.nan, "si_sdr_teacher": 5.0}, "totals": [1.0, math.nan]})
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text
    assert json.loads(text) == {"mean": {"gain_db": None, "si_sdr_teacher": 5.0}, "totals": [1.0, None]}
    with pytest.raises(ValueError, match=r"summary\.json: mean\.gain_db = inf is not a finite number"):
        store.write_summary({"mean": {"gain_db": math.inf}})
    assert json.loads((tmp_path / "summary.json").read_text())["mean"]["gain_db"] is None  # left as it was


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda t: t + "garbage\n", r"ledger\.csv, line 3: 1 fields where the header has 16"),
        (
            lambda t: t + "1,u0000,,up,metrics,,lots,,,,,,,,ok,\n",
            r"ledger\.csv, line 3: column bytes = 'lots'",
        ),
        (
            lambda t: t + "1,u0000,,sideways,metrics,,10,,,,,,,,ok,\n",
            r"line 3: column direction = 'sideways'.*up.*down",
        ),
        (lambda t: t + "-1,u0000,,up,metrics,,10,,,,,,,,ok,\n", r"line 3: column round = '-1'.*whole number"),
    ],
)
def test_report_refuses_a_ledger_with_garbage_rows(tmp_path, damage, expected):
    run_dir = write_run(tmp_path / "pseudo_targets", "pseudo_targets")
    path = run_dir / "ledger.csv"
    path.write_text(damage(path.read_text()))
    with pytest.raises(ReportError, match=expected) as err:
        load_run(run_dir)
    assert "\n" not in str(err.value)


def test_report_refuses_non_finite_scores_in_users_csv(tmp_path):
    run_dir = write_run(tmp_path / "pseudo_targets", "pseudo_targets")
    path = run_dir / "users.csv"
    lines = path.read_text().splitlines(keepends=True)
    header = lines[0].strip().split(",")
    row = lines[1].strip().split(",")
    row[header.index("si_sdr_teacher")] = "nan"
    path.write_text("".join([lines[0], ",".join(row) + "\n", *lines[2:]]))
    with pytest.raises(
        ReportError, match=r"users\.csv, line 2: column si_sdr_teacher = 'nan' is not a finite number"
    ):
        load_run(run_dir)
