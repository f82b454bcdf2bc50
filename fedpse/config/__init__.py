"""Typed configuration: YAML files + ``--set dotted.key=value`` overrides -> validated dataclasses.

Every field carries its constraints in ``field(metadata=...)``: ``min``/``max`` (inclusive), ``choices``, ``help``.
Unknown keys, wrong types and out-of-range values raise ``ConfigError`` naming the dotted key path and what was
expected, before any work starts. ``dump_config`` writes the resolved config next to a command's outputs.

This is the bottom layer: it knows no delivery mode and no noise family. Those are checked by the layers that define
them, also before any work: ``fedpse.federation.prepare.check_federation`` and ``fedpse.world.reader.check_world_config``.

``fields`` holds the field helpers and the validation, ``world`` / ``schema`` / ``federation`` the sections, ``load``
reading and writing; every public name is importable from ``fedpse.config``.
"""

from fedpse.config.federation import DevicesConfig, FaultsConfig, FedAvgConfig, FederationConfig
from fedpse.config.fields import ConfigError, check_device_name
from fedpse.config.load import (
    config_to_dict,
    default_config_path,
    describe,
    dump_config,
    flatten,
    load_config,
    parse_override,
    read_yaml,
)
from fedpse.config.schema import (
    AdaptConfig,
    Config,
    ConvTasNetConfig,
    DeviceConfig,
    OnnxTeacherConfig,
    PretrainConfig,
    ScoringConfig,
    StudentConfig,
    TeacherConfig,
)
from fedpse.config.world import NeuralTtsConfig, NoiseConfig, RoomConfig, SpeechConfig, WorldConfig

__all__ = [
    "AdaptConfig",
    "Config",
    "ConfigError",
    "ConvTasNetConfig",
    "DeviceConfig",
    "DevicesConfig",
    "FaultsConfig",
    "FedAvgConfig",
    "FederationConfig",
    "NeuralTtsConfig",
    "NoiseConfig",
    "OnnxTeacherConfig",
    "PretrainConfig",
    "RoomConfig",
    "ScoringConfig",
    "SpeechConfig",
    "StudentConfig",
    "TeacherConfig",
    "WorldConfig",
    "check_device_name",
    "config_to_dict",
    "default_config_path",
    "describe",
    "dump_config",
    "flatten",
    "load_config",
    "parse_override",
    "read_yaml",
]
