"""Loading a config: YAML file + ``--set dotted.key=value`` overrides -> a validated ``Config``; and back out
(``config_to_dict``, ``flatten``, ``dump_config``, ``describe``)."""

from __future__ import annotations

import dataclasses
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fedpse.config.fields import ConfigError, _build
from fedpse.config.schema import Config


def _validate_whole(cfg: Config) -> None:
    # Which noise families exist is the world's business: ``fedpse.world.reader.check_world_config``.
    if not cfg.world.noise.families:
        raise ConfigError("world.noise.families: expected at least one family")
    if cfg.world.speech.source in ("librispeech", "folders") and not cfg.world.speech.path:
        raise ConfigError(f"world.speech.path: required when world.speech.source={cfg.world.speech.source!r}")
    if cfg.teacher.arch == "onnx":
        _validate_onnx(cfg.teacher.onnx)
    if cfg.world.noise.source != "procedural" and not cfg.world.noise.path:
        raise ConfigError(f"world.noise.path: required when world.noise.source={cfg.world.noise.source!r}")


def _validate_onnx(o) -> None:
    """The ``teacher.onnx`` block describes one teacher: a preset, a waveform model by path, or spectral stages."""
    if o.preset is not None:
        given = [k for k, v in (("path", o.path), ("stages", o.stages)) if v]
        if given:
            raise ConfigError(
                f"teacher.onnx.{given[0]}: teacher.onnx.preset={o.preset!r} fills in the model files and framing; "
                f"remove teacher.onnx.{given[0]} (or the preset)"
            )
        return
    if o.framing == "spectral":
        if not o.stages:
            raise ConfigError("teacher.onnx.stages: required when teacher.onnx.framing='spectral'")
        for k, stage in enumerate(o.stages):
            if not stage.path:
                raise ConfigError(
                    f"teacher.onnx.stages[{k}].path: required (stage {k + 1} of {len(o.stages)})"
                )
        if o.path:
            raise ConfigError("teacher.onnx.path: framing='spectral' runs teacher.onnx.stages; remove path")
    elif not o.path:
        raise ConfigError(
            f"teacher.onnx.path: required when teacher.arch='onnx' with framing={o.framing!r} "
            "(or set teacher.onnx.preset, or framing='spectral' with teacher.onnx.stages)"
        )
    elif o.stages:
        raise ConfigError(f"teacher.onnx.stages: only read with framing='spectral', not {o.framing!r}")


def default_config_path() -> Path:
    """The embedded default config shipped inside the package."""
    return Path(str(resources.files("fedpse") / "configs" / "default.yaml"))


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r} ({err})") from None
    return key, value


def _apply_override(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, cannot set {key}")
        node = child
    node[parts[-1]] = value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    notes: list[str] | None = None,
) -> Config:
    """Load ``path`` (default: the embedded default) on top of the built-in defaults, apply overrides, validate.

    With ``world.room.enabled`` the model checkpoints the config does not name are the dereverberation models
    (``room_models``); ``notes``, when given, receives one line saying which models a world of rooms gets and why.
    """
    data = read_yaml(path or default_config_path())
    for text in overrides:
        key, value = parse_override(text)
        _apply_override(data, key, value)
    cfg = _build(Config, data, "")
    _validate_whole(cfg)
    note = room_models(cfg, data)
    if notes is not None and note:
        notes.append(note)
    return cfg


# ------------------------------------------------------------------------------------------------ rooms
# The shipped checkpoints trained for joint denoising + dereverberation (world.room.target=early), by the checkpoint
# key they replace when a world has rooms and the config leaves that key out: the key's default, the architecture
# the dereverberation model has (checked against the resolved config) and its name.
ROOM_MODELS = {
    "student": (
        "builtin:student-2x32",
        {"layers": 2, "hidden": 32},
        "builtin:student-2x32-dereverb",
    ),
    "teacher": (
        "builtin:teacher-gru-log",
        {"arch": "gru", "layers": 2, "hidden": 256, "bidirectional": True, "magnitude": "log1p"},
        "builtin:teacher-gru-log-dereverb",
    ),
}


def room_models(cfg: Config, given: dict) -> str:
    """Users in rooms get the dereverberation models: each ``student.checkpoint`` / ``teacher.checkpoint`` that the
    loaded mapping ``given`` (config file + overrides) leaves out, on the architecture of the dereverberation model,
    is set to that model in ``cfg`` (and so in the run's saved config.yaml: a resumed run and the result cache see
    the checkpoint actually used). Returns one line saying so, or that the checkpoints the config names are the
    denoising-only shipped models; "" when there are no rooms or nothing to say."""
    if not cfg.world.room.enabled:
        return ""
    chosen, denoising = [], []
    for role, (default, arch, dereverb) in ROOM_MODELS.items():
        section = getattr(cfg, role)
        named = isinstance(given.get(role), dict) and "checkpoint" in given[role]
        if not named and section.checkpoint == default:
            if all(getattr(section, k) == v for k, v in arch.items()):
                section.checkpoint = dereverb
                chosen.append(f"{role} {dereverb}")
        elif isinstance(section.checkpoint, str) and section.checkpoint.startswith("builtin:"):
            if not section.checkpoint.endswith("-dereverb"):
                denoising.append(f"{role}.checkpoint={section.checkpoint}")
    parts = []
    if chosen:
        parts.append(
            "users are in rooms (world.room.enabled), so the models are the joint denoising + dereverberation "
            f"ones: {', '.join(chosen)} (trained for world.room.target=early"
            + ("" if cfg.world.room.target == "early" else f"; this world's is {cfg.world.room.target}")
            + "); name student.checkpoint / teacher.checkpoint to choose others"
        )
    if denoising:
        parts.append(
            f"{' and '.join(denoising)} {'is a' if len(denoising) == 1 else 'are'} denoising-only "
            f"model{'s' if len(denoising) > 1 else ''} (trained without rooms) on users in rooms; the "
            "dereverberation models are " + " and ".join(m[2] for m in ROOM_MODELS.values())
        )
    return "; ".join(parts)


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten(data: dict, prefix: str = "") -> dict:
    """Nested dicts as one dict of dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, dotted) if isinstance(value, dict) else {dotted: value})
    return out


def dump_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (loadable again by ``load_config``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every leaf key: used by ``fedpse config`` and the docs."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out += describe(hints[f.name], key)
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append((key, default, f.metadata.get("help", "")))
    return out
