"""Students and teachers from config: architecture specs, shipped ``builtin:NAME`` checkpoints, ONNX teachers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from fedpse.config import Config, ConfigError
from fedpse.models.checkpoints import load_checkpoint
from fedpse.models.registry import build_from_spec

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def student_spec(cfg: Config) -> dict:
    return {
        "arch": "gru",
        "num_layers": cfg.student.layers,
        "hidden": cfg.student.hidden,
        "bidirectional": False,
    }


def teacher_spec(cfg: Config) -> dict:
    t = cfg.teacher
    if t.arch == "gru":
        return {
            "arch": "gru",
            "num_layers": t.layers,
            "hidden": t.hidden,
            "bidirectional": t.bidirectional,
            "magnitude": t.magnitude,
        }
    if t.arch == "convtasnet":
        c = t.convtasnet
        return {
            "arch": "convtasnet",
            "N": c.N,
            "L": c.L,
            "B": c.B,
            "H": c.H,
            "P": c.P,
            "X": c.X,
            "R": c.R,
            "causal": c.causal,
        }
    if t.arch == "identity":
        return {"arch": "identity"}
    raise ConfigError(
        f"teacher.arch={t.arch!r} has no trainable architecture spec (ONNX teachers are loaded by path)"
    )


def resolve_checkpoint(ref: str, key: str) -> Path:
    """``builtin:NAME`` -> the shipped file; anything else is a path. Errors name the config key."""
    if ref.startswith("builtin:"):
        name = ref.split(":", 1)[1]
        path = BUILTIN_DIR / f"{name}.pt"
        if not path.is_file():
            known = sorted(p.stem for p in BUILTIN_DIR.glob("*.pt"))
            raise ConfigError(f"{key}: no shipped checkpoint {name!r}; shipped: {known}")
        return path
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: checkpoint file {path} not found")
    return path


def _load_or_init(spec: dict, ref: str | None, key: str) -> tuple[nn.Module, dict]:
    if ref is None:
        return build_from_spec(spec).eval(), {"init": "random"}
    return load_weights(spec, ref, key)


def load_weights(spec: dict, ref: str, key: str) -> tuple[nn.Module, dict]:
    """The checkpoint ``ref`` (path or ``builtin:NAME``), which must have ``spec``'s architecture; errors name
    ``key``."""
    expected = {
        k: v
        for k, v in spec.items()
        if k in ("arch", "num_layers", "hidden", "bidirectional", "magnitude", "N", "B", "H", "X", "R")
    }
    return load_checkpoint(resolve_checkpoint(ref, key), expected_arch=expected)


def load_student(cfg: Config) -> tuple[nn.Module, dict]:
    """The generic (pretrained) student described by ``student.*``."""
    return _load_or_init(student_spec(cfg), cfg.student.checkpoint, "student.checkpoint")


def load_teacher(cfg: Config) -> tuple[nn.Module, dict]:
    """The teacher described by ``teacher.*`` (a trained GRU/ConvTasNet checkpoint or an ONNX file), in eval mode."""
    if cfg.teacher.arch == "onnx":
        from fedpse.models.onnx import build_onnx_teacher, resolve_block

        block = resolve_block(dataclasses.asdict(cfg.teacher.onnx))
        teacher = build_onnx_teacher(block)
        card = {
            "arch": "onnx",
            "path": str(teacher.path),
            "preset": block.get("preset"),
            "files": [str(p) for p in teacher.files],
            "params": teacher.param_count(),
        }
        try:
            card["macs_per_second"] = sum(teacher.macs_breakdown().values())
        except ValueError as err:  # the ledger then records the teacher's MACs as unknown
            card["macs_per_second"], card["macs_error"] = None, str(err)
        wrapper = teacher.as_torch_teacher().eval()
        wrapper.config = block  # the whole (resolved) block is part of the result-cache key
        return wrapper, card
    if cfg.teacher.arch == "identity":  # no weights: teacher.checkpoint is not used
        return build_from_spec(teacher_spec(cfg)).eval(), {"arch": "identity", "params": 0}
    model, card = _load_or_init(teacher_spec(cfg), cfg.teacher.checkpoint, "teacher.checkpoint")
    for p in model.parameters():
        p.requires_grad_(False)
    return model, card


def role_spec(cfg: Config, role: str) -> dict:
    if role == "student":
        return student_spec(cfg)
    if role == "teacher":
        if cfg.teacher.arch == "identity":
            raise ConfigError("teacher.arch=identity returns its input: it has nothing to pretrain")
        return teacher_spec(cfg)
    raise ConfigError(f"--role: expected 'student' or 'teacher', got {role!r}")
