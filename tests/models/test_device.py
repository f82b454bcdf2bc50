"""Where tensors run: the ``device`` setting, device-agnostic checkpoints, batched teacher inference, and the same
numbers on the CPU whichever way the work is placed. Tests that need a CUDA GPU are skipped without one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedpse.cli import main
from fedpse.config import ConfigError, load_config
from fedpse.distill.adapt import personalize_user, pseudo_targets, pseudo_targets_batched
from fedpse.distill.cache import ResultCache, model_key, targets_folder
from fedpse.distill.pretrain import pretrain
from fedpse.models.accelerator import (
    check_client_setting,
    client_device,
    model_device,
    resolve_device,
    role_device,
)
from fedpse.models.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from fedpse.models.registry import build_model
from tests.conftest import TINY_WORLD

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
without_cuda = pytest.mark.skipif(CUDA, reason="checks the errors of a machine without a CUDA GPU")


def _world_overrides(world_cfg) -> list[str]:
    return [
        *TINY_WORLD,
        f"world.cache_dir={world_cfg.world.cache_dir}",
        "world.noise.families=[babble, hum, clatter]",
        "federation.cache_dir=null",
    ]


# ------------------------------------------------------------------------------------------------ the setting
def test_device_names_resolve_and_auto_is_cuda_only_when_there_is_one():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    cfg = load_config(overrides=["device.default=cpu", "device.scoring=auto"])
    assert role_device(cfg, "server") == torch.device("cpu")  # null role: device.default
    assert role_device(cfg, "scoring").type == ("cuda" if CUDA else "cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CUDA", "cuda:-1", "mps"])
def test_a_malformed_device_is_refused_when_the_config_loads(name):
    with pytest.raises(ConfigError, match=r"^device\.server: expected auto, cpu, cuda or cuda:N"):
        load_config(overrides=[f"device.server={name}"])


@without_cuda
def test_cuda_without_a_gpu_is_a_one_line_error_naming_the_key():
    cfg = load_config(overrides=["device.pretrain=cuda"])
    with pytest.raises(ConfigError, match=r"^device\.pretrain=cuda: this torch .* sees no CUDA GPU") as err:
        role_device(cfg, "pretrain")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^device\.default=cuda:1: "):
        role_device(load_config(overrides=["device.default=cuda:1"]), "scoring")


def test_client_actors_use_a_gpu_only_when_ray_reserves_one():
    assert client_device(load_config(overrides=["device.default=auto"])) == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^device\.client=cuda: client actors get no GPU"):
        check_client_setting(load_config(overrides=["device.client=cuda"]))
    with pytest.raises(ConfigError, match=r"^device\.default=cuda:1: inside a client actor"):
        check_client_setting(load_config(overrides=["device.default=cuda:1", "federation.num_gpus=0.5"]))
    check_client_setting(load_config(overrides=["device.client=cpu", "federation.num_gpus=0"]))


@without_cuda
def test_reserving_gpus_on_a_machine_without_one_is_refused_before_ray_starts():
    with pytest.raises(ConfigError, match=r"^federation\.num_gpus=0\.25: this machine has no CUDA GPU"):
        check_client_setting(load_config(overrides=["federation.num_gpus=0.25"]))


def test_a_simulation_refuses_a_device_it_cannot_use_before_any_work():
    from fedpse.federation.prepare import check_federation

    with pytest.raises(ConfigError, match=r"^device\.client=cuda: client actors get no GPU"):
        check_federation(load_config(overrides=["device.client=cuda"]))
    if not CUDA:
        with pytest.raises(ConfigError, match=r"^device\.scoring=cuda: "):
            check_federation(load_config(overrides=["device.scoring=cuda"]))


# ------------------------------------------------------------------------------------------------ the CPU path
def test_adapt_and_score_with_device_cpu_give_the_same_numbers(tiny_world, tmp_path):
    world_cfg, world = tiny_world
    overrides = [
        *_world_overrides(world_cfg),
        "student.checkpoint=null",
        "teacher.layers=1",
        "teacher.hidden=8",
        "teacher.checkpoint=null",
        "adapt.steps=4",
        "adapt.segment_seconds=1.0",
        "adapt.holdout_fraction=0.5",
        "adapt.eval_every=2",
    ]
    args = ["adapt", "--user", "u0001", "--out", str(tmp_path / "cpu"), "--set", "device.default=cpu"]
    assert main(args + [x for o in overrides for x in ("--set", o)]) == 0
    row = json.loads((tmp_path / "cpu" / "result.json").read_text())
    torch.manual_seed(0)
    student = build_model("gru", num_layers=2, hidden=32).eval()
    teacher = build_model("gru", num_layers=1, hidden=8, bidirectional=True).eval()
    acfg = load_config(overrides=overrides).adapt
    placed = personalize_user(world, "u0001", student, teacher, acfg, seed=3, device=torch.device("cpu"))
    where_they_are = personalize_user(world, "u0001", student, teacher, acfg, seed=3)
    drop = {"adapt_wall_seconds"}
    assert {k: v for k, v in placed.items() if k not in drop} == pytest.approx(
        {k: v for k, v in where_they_are.items() if k not in drop}, rel=0, abs=0, nan_ok=True
    )
    assert row["steps"] == 4 and np.isfinite(row["si_sdr_personalized"])


def _pretrain_cfg(world_cfg, out, *extra):
    return load_config(
        overrides=[
            *_world_overrides(world_cfg),
            f"pretrain.out_dir={out}",
            "pretrain.steps=6",
            "pretrain.val_every=3",
            "pretrain.checkpoint_every=3",
            "pretrain.batch_size=2",
            "pretrain.segment_seconds=1.0",
            "pretrain.val_mixtures=4",
            "pretrain.noise_augment=0.5",
            *extra,
        ]
    )


def test_pretraining_on_cpu_with_mixing_workers_trains_on_the_very_same_batches(tiny_world, tmp_path):
    world_cfg, world = tiny_world
    quiet = lambda _: None  # noqa: E731
    base = pretrain(_pretrain_cfg(world_cfg, tmp_path / "a"), "student", world, progress=False, log=quiet)
    lines: list[str] = []
    cfg = _pretrain_cfg(
        world_cfg, tmp_path / "b", "device.pretrain=cpu", "pretrain.workers=2", "pretrain.amp=bf16"
    )
    other = pretrain(cfg, "student", world, progress=False, log=lines.append)
    assert any("pretrain.amp=bf16 ignored" in line for line in lines)
    assert any(line.startswith("pretraining student on cpu") for line in lines)
    for a, b in [(base.last_path, other.last_path), (base.best_path, other.best_path)]:
        sa, sb = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    state = torch.load(other.last_path.parent / "train_state.pt", weights_only=True)
    assert all(t.device.type == "cpu" for s in state["optimizer"]["state"].values() for t in s.values())


# ------------------------------------------------------------------------------------------------ checkpoints
def test_a_checkpoint_whose_tensors_were_saved_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    """Every storage of the file says ``cuda:0`` (as torch writes it from a GPU); it still loads here."""
    torch.manual_seed(0)
    model = build_model("gru", num_layers=1, hidden=8).eval()
    as_if_on_gpu = [(0, lambda storage: "cuda:0", lambda storage, location: None)]
    monkeypatch.setattr(
        torch.serialization, "_package_registry", as_if_on_gpu + torch.serialization._package_registry
    )
    save_checkpoint(tmp_path / "gpu.pt", model, dtype="fp32")
    monkeypatch.undo()
    if not CUDA:  # the file really asks for CUDA storages
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "gpu.pt", weights_only=True)
    loaded, card = load_checkpoint(tmp_path / "gpu.pt")
    assert model_device(loaded) == torch.device("cpu")
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )


def test_checkpoints_are_written_from_cpu_tensors_whatever_the_model_holds(tmp_path):
    torch.manual_seed(0)
    model = build_model("gru", num_layers=1, hidden=8).to(torch.float64).to(torch.device("cpu", 0))
    save_checkpoint(tmp_path / "m.pt", model, dtype="fp32")
    raw = torch.load(tmp_path / "m.pt", weights_only=True, map_location="meta")  # no data read, only metadata
    assert {t.dtype for t in raw["state_dict"].values()} == {torch.float32}
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert torch.allclose(loaded.mask.weight, model.mask.weight.float())


@needs_cuda
def test_a_model_trained_on_the_gpu_saves_and_loads_anywhere(tmp_path):
    torch.manual_seed(0)
    model = build_model("gru", num_layers=1, hidden=8).to("cuda")
    save_checkpoint(tmp_path / "m.pt", model, dtype="fp32")
    raw = torch.load(tmp_path / "m.pt", weights_only=True)  # no map_location: the storages say "cpu"
    assert all(t.device.type == "cpu" for t in raw["state_dict"].values())
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(loaded.mask.weight, model.mask.weight.cpu())


# ------------------------------------------------------------------------------------------------ batched teacher
def _chunks(count: int, seconds: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(4)
    return [(0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) for _ in range(count)]


@pytest.mark.parametrize("arch", ["gru", "convtasnet"])
def test_batched_teacher_outputs_do_not_depend_on_the_other_chunks_of_a_batch(arch):
    torch.manual_seed(0)
    kwargs = (
        {"num_layers": 1, "hidden": 16, "bidirectional": True}
        if arch == "gru"
        else {"N": 16, "B": 8, "H": 16, "X": 2, "R": 1}
    )
    teacher = build_model(arch, **kwargs).eval()
    chunks = _chunks(5) + _chunks(1, seconds=0.7)
    one_by_one = pseudo_targets(teacher, chunks)
    batched = pseudo_targets_batched(teacher, chunks, batch=4)
    for a, b in zip(one_by_one, batched, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)  # float rounding only
    # chunk 0 shares its pass with other chunks, at another place, or with none: the same numbers
    assert np.array_equal(pseudo_targets_batched(teacher, [chunks[3], chunks[0]], batch=4)[1], batched[0])
    assert np.array_equal(pseudo_targets_batched(teacher, [chunks[0]], batch=4)[0], batched[0])
    assert all(
        np.array_equal(a, b)
        for a, b in zip(pseudo_targets_batched(teacher, chunks, 1), one_by_one, strict=True)
    )


def test_the_result_cache_keeps_batched_or_gpu_teacher_outputs_apart(tmp_path):
    torch.manual_seed(0)
    teacher = build_model("gru", num_layers=1, hidden=8).eval()
    key = model_key(teacher)
    assert targets_folder(teacher, key) == key  # the CPU one chunk at a time: the folder fedpse always used
    assert targets_folder(teacher, key, batch=4) == f"{key}-cpu-b4"
    cache, chunks = ResultCache(tmp_path), _chunks(3)
    first = cache.targets(teacher, key, chunks, batch=4)
    again = ResultCache(tmp_path)
    assert all(
        np.array_equal(a, b) for a, b in zip(again.targets(teacher, key, chunks, batch=4), first, strict=True)
    )
    assert again.hits == 3
    assert sorted(p.name for p in (tmp_path / "targets").iterdir()) == [f"{key}-cpu-b4"]


@needs_cuda
def test_gpu_teacher_outputs_are_close_to_the_cpu_ones_and_repeat_exactly():
    torch.manual_seed(0)
    teacher = build_model("gru", num_layers=2, hidden=64, bidirectional=True).eval()
    chunks = _chunks(6)
    on_cpu = pseudo_targets(teacher, chunks)
    teacher = teacher.to(role_device(load_config(overrides=["device.server=cuda"]), "server"))
    on_gpu = pseudo_targets_batched(teacher, chunks, batch=4)
    for a, b in zip(on_cpu, on_gpu, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    again = pseudo_targets_batched(teacher, chunks[::-1], batch=4)[::-1]
    assert all(np.array_equal(a, b) for a, b in zip(on_gpu, again, strict=True))
    assert targets_folder(teacher, "k", batch=4) == "k-cuda-b4"


@needs_cuda
def test_pretraining_on_the_gpu_with_mixed_precision_writes_checkpoints_the_cpu_loads(tiny_world, tmp_path):
    world_cfg, world = tiny_world
    cfg = _pretrain_cfg(
        world_cfg, tmp_path, "device.pretrain=cuda", "pretrain.amp=fp16", "pretrain.workers=1"
    )
    result = pretrain(cfg, "student", world, progress=False, log=lambda _: None)
    model, card = load_checkpoint(result.last_path)
    assert model_device(model).type == "cpu" and card["device"].startswith("cuda")
    pretrain(
        _pretrain_cfg(world_cfg, tmp_path, "device.pretrain=cpu", "pretrain.steps=9"),
        "student",
        world,
        resume=True,
        progress=False,
        log=lambda _: None,
    )  # a GPU run's train_state.pt resumes on the CPU
