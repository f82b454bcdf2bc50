"""Typed configuration: YAML files + ``--set dotted.key=value`` overrides -> validated dataclasses.

Every field carries its constraints in ``field(metadata=...)``: ``min``/``max`` (inclusive), ``choices``, ``help``.
Unknown keys, wrong types and out-of-range values raise ``ConfigError`` naming the dotted key path and what was
expected, before any work starts. ``dump_config`` writes the resolved config next to a command's outputs.

This is the bottom layer: it knows no delivery mode and no noise family. Those are checked by the layers that define
them, also before any work: ``fedpse.federation.prepare.check_federation`` and ``fedpse.world.reader.check_world_config``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config problem a user can fix: names the key (or file) and what was expected."""


def _f(default: Any, help: str = "", **limits: Any) -> Any:
    meta = {"help": help, **limits}
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def _sub(cls: type) -> Any:
    return field(default_factory=cls)


# ----------------------------------------------------------------------------------------------------- world
@dataclass
class SpeechConfig:
    source: str = _f(
        "tts", "where user and pretraining speech comes from", choices=["tts", "librispeech", "folders"]
    )
    path: str | None = _f(None, "corpus root for librispeech/folders sources")
    user_voice_pool: int = _f(400, "size of the TTS voice pool users are drawn from", min=1)
    pretrain_voices: int = _f(120, "TTS voices in the pretraining pool (disjoint from users)", min=2)
    babble_voices: int = _f(24, "TTS voices used only to make babble noise", min=2)
    pretrain_utterances_per_voice: int = _f(16, "utterances per pretraining voice", min=1)
    pretrain_validation_fraction: float = _f(
        0.1, "share of pretraining speakers held out for validation", min=0.0, max=0.5
    )
    min_rms_dbfs: float = _f(-60.0, "an utterance quieter than this is rejected as silent", max=0.0)
    skip_bad_files: bool = _f(
        False,
        "skip unreadable, empty, silent or NaN/inf corpus utterances (listed in <world>/skipped_files.csv) "
        "instead of stopping at the first",
    )


@dataclass
class NoiseConfig:
    source: str = _f(
        "procedural", "noise places", choices=["procedural", "wham", "musan", "demand", "folder"]
    )
    path: str | None = _f(None, "noise corpus root for wham/musan/demand/folder sources")
    families: list[str] = _f(
        ["stationary", "babble", "hum", "clatter", "traffic", "music"],
        "procedural families users are drawn from",
    )
    pretrain_environments: int = _f(
        60, "environment instances in the pretraining pool (not used by any user)", min=1
    )
    pretrain_seconds_per_environment: float = _f(
        60.0, "seconds of audio per pretraining environment", min=1.0
    )
    test_gap_seconds: float = _f(
        5.0, "gap on each place's noise timeline between adaptation and test segments", min=0.0
    )
    min_rms_dbfs: float = _f(
        -80.0, "a corpus noise recording quieter than this is rejected as silent", max=0.0
    )
    skip_bad_files: bool = _f(
        False,
        "skip unreadable, empty, silent or NaN/inf noise recordings and places too short for a user's timeline "
        "(listed in <world>/skipped_files.csv) instead of stopping at the first",
    )


@dataclass
class RoomConfig:
    enabled: bool = _f(False, "reverberate users' speech in a shoebox room")
    rt60_s: list[float] = _f([0.2, 0.8], "RT60 range in seconds [low, high]")
    target: str = _f("dry", "clean reference for reverberant users", choices=["dry", "early"])
    early_ms: float = _f(50.0, "early-reverb window after the direct path (target=early)", min=0.0, max=200.0)


@dataclass
class WorldConfig:
    num_users: int = _f(40, "number of simulated users", min=1, max=100000)
    cache_dir: str = _f("~/.cache/fedpse/worlds", "where built worlds (manifest + FLAC audio) are stored")
    adaptation_minutes: float = _f(5.0, "unlabeled adaptation audio per user", min=0.05, max=600.0)
    chunk_seconds: float = _f(10.0, "length of one adaptation chunk (chunks arrive round by round)", min=1.0)
    test_mixtures: int = _f(6, "held-out test mixtures per user", min=1)
    test_seconds: float = _f(10.0, "length of one test mixture", min=1.0)
    snr_db: list[float] = _f([-5.0, 10.0], "range users' SNRs are drawn from [low, high] dB")
    snr_spread_db: float = _f(2.0, "per-mixture SNR jitter around the user's own SNR (+-dB)", min=0.0)
    workers: int = _f(2, "processes used to build the world", min=1, max=256)
    speech: SpeechConfig = _sub(SpeechConfig)
    noise: NoiseConfig = _sub(NoiseConfig)
    room: RoomConfig = _sub(RoomConfig)


# ---------------------------------------------------------------------------------------------- models
@dataclass
class ConvTasNetConfig:
    N: int = _f(128, "encoder filters", min=1)  # noqa: N815 - the paper's hyper-parameter names
    L: int = _f(32, "encoder filter length in samples (even; 32 trains ~4x faster than 16 on CPU)", min=2)  # noqa: N815
    B: int = _f(64, "bottleneck channels", min=1)  # noqa: N815
    H: int = _f(128, "channels inside each TCN block", min=1)  # noqa: N815
    P: int = _f(3, "depthwise kernel size", min=1)  # noqa: N815
    X: int = _f(6, "blocks per repeat (dilations 1..2^(X-1))", min=1)  # noqa: N815
    R: int = _f(2, "repeats", min=1)  # noqa: N815
    causal: bool = _f(False, "causal (cLN) instead of non-causal (gLN)")


@dataclass
class OnnxTeacherConfig:
    path: str | None = _f(None, "path to a user-supplied ONNX denoiser (teacher.arch=onnx)")
    sample_rate: int = _f(16000, "sample rate the ONNX model expects", min=1000)
    framing: str = _f("whole", "how audio is fed to the model", choices=["whole", "chunk", "stateful"])
    chunk_seconds: float = _f(4.0, "chunk length for framing=chunk", min=0.01)
    hop_seconds: float = _f(2.0, "hop between chunks for framing=chunk (overlap-add)", min=0.01)
    block_samples: int = _f(512, "block length for framing=stateful", min=1)
    shift_samples: int = _f(128, "block shift for framing=stateful", min=1)


@dataclass
class StudentConfig:
    layers: int = _f(2, "GRU layers of the student", min=1, max=8)
    hidden: int = _f(32, "GRU units per layer of the student", min=1, max=4096)
    checkpoint: str | None = _f(
        "builtin:student-2x32",
        "generic student weights: a path, builtin:NAME (shipped) or null (random init)",
    )


@dataclass
class TeacherConfig:
    arch: str = _f("gru", "teacher model", choices=["gru", "convtasnet", "onnx"])
    layers: int = _f(2, "GRU layers (arch=gru)", min=1, max=8)
    hidden: int = _f(256, "GRU units per layer (arch=gru)", min=1, max=4096)
    bidirectional: bool = _f(
        True, "bidirectional GRU teacher (it runs offline on recorded chunks, so it may look ahead)"
    )
    magnitude: str = _f(
        "linear",
        "GRU input feature (arch=gru): linear magnitude as in the paper, or log1p (log(1 + |X|))",
        choices=["linear", "log1p"],
    )
    convtasnet: ConvTasNetConfig = _sub(ConvTasNetConfig)
    onnx: OnnxTeacherConfig = _sub(OnnxTeacherConfig)
    checkpoint: str | None = _f(
        "builtin:teacher-gru",
        "teacher weights: a path, builtin:NAME (shipped: teacher-gru, teacher-convtasnet) or null (random init)",
    )


@dataclass
class PretrainConfig:
    steps: int = _f(4000, "Adam steps", min=1)
    batch_size: int = _f(8, "mixtures per step", min=1)
    segment_seconds: float = _f(3.0, "length of each online-mixed training mixture", min=0.1)
    lr: float = _f(1e-3, "Adam learning rate", min=0.0)
    snr_db: list[float] = _f([-5.0, 10.0], "online mixing SNR range [low, high] dB")
    grad_clip: float = _f(5.0, "gradient norm clip (0 = off)", min=0.0)
    amp: str = _f(
        "off",
        "mixed precision on CUDA: fp16 (with loss scaling) or bf16 autocast; ignored on the CPU (said in the log)",
        choices=["off", "fp16", "bf16"],
    )
    workers: int = _f(
        0,
        "processes mixing training batches ahead of the optimizer (0 = in the training loop); each step's batch "
        "is the same either way",
        min=0,
        max=64,
    )
    noise_augment: float = _f(
        0.0,
        "share of training noises made new: a second place mixed in, spectral tilt, time reversal",
        min=0.0,
        max=1.0,
    )
    val_mixtures: int = _f(64, "validation mixtures (held-out pretraining speakers and noises)", min=1)
    val_every: int = _f(250, "validate every N steps", min=1)
    checkpoint_every: int = _f(250, "write a checkpoint every N steps", min=1)
    threads: int = _f(1, "torch threads", min=1, max=256)
    max_minutes: float = _f(0.0, "stop (with a checkpoint) after this much wall time; 0 = no limit", min=0.0)
    out_dir: str = _f("runs/pretrain", "where checkpoints and the log go (a subfolder per role)")


@dataclass
class AdaptConfig:
    lr: float = _f(1e-3, "Adam learning rate for test-time fine-tuning", min=0.0)
    steps: int = _f(
        100, "maximum Adam steps per adaptation call (100: measured knee of gain vs steps)", min=0
    )
    batch_size: int = _f(4, "crops per step", min=1)
    segment_seconds: float = _f(4.0, "crop length (chunk length seen by one training example)", min=0.1)
    layers: str = _f("all", "which student layers are adapted", choices=["all", "gru", "mask", "last_gru"])
    holdout_fraction: float = _f(0.2, "unlabeled chunks held out for the stopping rule", min=0.0, max=0.9)
    eval_every: int = _f(50, "check agreement with the teacher on held-out chunks every N steps", min=1)
    patience: int = _f(4, "stop after this many checks without improvement (0 = never stop early)", min=0)
    threads: int = _f(1, "torch threads", min=1, max=256)


# ------------------------------------------------------------------------------------------------ device
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str, key: str) -> None:
    """Raise ``ConfigError`` naming ``key`` unless ``name`` is auto, cpu, cuda or cuda:N (syntax only)."""
    if not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name):
        raise ConfigError(f"{key}: expected auto, cpu, cuda or cuda:N (N = GPU index), got {name!r}")


@dataclass
class DeviceConfig:
    """Where tensors run (torch devices; the simulated users' phones are ``federation.devices``)."""

    default: str = _f(
        "auto", "torch device of every role left null: auto (CUDA when available), cpu, cuda or cuda:N"
    )
    pretrain: str | None = _f(None, "fedpse pretrain (null = device.default)")
    server: str | None = _f(
        None, "the server's teacher inference and cloud_student fine-tuning (null = device.default)"
    )
    client: str | None = _f(
        None,
        "KD on the simulated devices and in fedpse adapt; a client actor uses the GPU Ray assigns it only when "
        "federation.num_gpus > 0, else the CPU (null = device.default)",
    )
    scoring: str | None = _f(None, "scoring on held-out test sets (null = device.default)")
    teacher_batch: int = _f(
        8,
        "equal-length chunks per teacher forward pass on a GPU (server side; a CPU always runs one chunk at a "
        "time, and 1 does so on a GPU too)",
        min=1,
        max=1024,
    )
    tf32: bool = _f(
        False,
        "allow TF32 matmuls and convolutions on Ampere+ GPUs (faster; ~1e-3 relative error instead of fp32's)",
    )

    def __post_init__(self) -> None:
        for name in ("default", "pretrain", "server", "client", "scoring"):
            value = getattr(self, name)
            if value is not None or name == "default":
                check_device_name(value, f"device.{name}")


# ------------------------------------------------------------------------------------------ federation
@dataclass
class DevicesConfig:
    availability: str = _f(
        "always",
        "when a device may take part: always, or only inside a daily charging window (plugged in / idle)",
        choices=["always", "charging"],
    )
    reference_macs_per_s: float = _f(
        2e9, "training/inference throughput (MAC/s) of a reference device (speed factor 1)", min=1.0
    )
    speed_sigma: float = _f(
        0.5,
        "log-normal sigma of each device's speed factor around the reference device (0 = all equal)",
        min=0.0,
        max=3.0,
    )
    uplink_mbps: list[float] = _f(
        [1.0, 20.0], "device uplink range [low, high] Mbit/s (log-uniform per user)", min=0.001
    )
    downlink_mbps: list[float] = _f(
        [5.0, 100.0], "device downlink range [low, high] Mbit/s (log-uniform per user)", min=0.001
    )
    server_macs_per_s: float = _f(
        1e11, "server throughput (MAC/s) for its work in a user's round (teacher, cloud fine-tuning)", min=1.0
    )
    charging_start_hour: float = _f(
        22.0, "mean hour of day a charging window opens (availability=charging)", min=0.0, max=24.0
    )
    charging_start_jitter_hours: float = _f(
        1.5, "std of each user's habitual window start around charging_start_hour", min=0.0, max=12.0
    )
    charging_daily_jitter_hours: float = _f(
        0.5, "std of a window's start from day to day around the user's habitual start", min=0.0, max=6.0
    )
    charging_hours: list[float] = _f(
        [5.0, 9.0],
        "range [low, high] of each user's window length in hours (uniform per user)",
        min=0.1,
        max=24.0,
    )
    start_hour: float = _f(
        22.0, "simulated hour of day (day 0) at which round 1 is scheduled", min=0.0, max=24.0
    )
    round_interval_hours: float = _f(
        1.0,
        "simulated time between scheduled round starts (a round starts late if the previous one ran over)",
        min=0.0,
    )


@dataclass
class FaultsConfig:
    crash_probability: float = _f(
        0.0,
        "chance a selected device crashes at the start of its round (drawn per user and round)",
        min=0.0,
        max=1.0,
    )
    dropout_probability: float = _f(
        0.0,
        "chance a selected device drops out mid-round: after its upload, on receiving the training message",
        min=0.0,
        max=1.0,
    )
    straggler_probability: float = _f(
        0.0,
        "chance a selected device is a straggler that round (computes straggler_slowdown times slower)",
        min=0.0,
        max=1.0,
    )
    straggler_slowdown: float = _f(10.0, "compute slowdown of a straggler", min=1.0)
    round_deadline_s: float = _f(
        0.0,
        "simulated seconds a round waits for a device; a slower user's update is discarded (0 = no deadline)",
        min=0.0,
    )
    seed: int | None = _f(None, "seed of the fault draws (null = the master seed): other faults, same world")


@dataclass
class FedAvgConfig:
    inner_mode: str = _f(
        "teacher_weights",
        "fedavg_generic: delivery mode of the personalization rounds before the deltas are aggregated "
        "(a mode whose strategy is inner_capable)",
    )
    aggregator: str = _f(
        "fedavg",
        "Flower strategy folding the deltas into the new generic student",
        choices=["fedavg", "fedadam"],
    )
    server_lr: float = _f(
        1.0,
        "fedavg: scale of the averaged delta; fedadam: its eta (one Adam step, keep it small, e.g. 1e-3)",
        min=0.0,
    )
    aggregation_group: int = _f(32, "deltas averaged per group (bounds server memory)", min=1)
    holdout_users: int = _f(
        0, "cold-start users scored: world users outside the run (0 = all of them)", min=0
    )


@dataclass
class FederationConfig:
    mode: str = _f(
        "pseudo_targets",
        "delivery mode: how the teacher's knowledge reaches each device (one strategy of "
        "fedpse/federation/strategies/ or of a module in federation.plugins; fedavg_generic: personalize, then "
        "aggregate a new generic student)",
    )
    num_rounds: int = _f(2, "rounds; each round the selected users' next adaptation chunks arrive", min=1)
    fraction: float = _f(
        1.0, "share of users selected per round (seeded RNG over user ids)", min=0.01, max=1.0
    )
    num_users: int = _f(0, "users taking part: the world's first N (0 = every user of the world)", min=0)
    chunks_per_round: int = _f(
        3, "adaptation chunks arriving per user per round (0 = all chunks spread over num_rounds)", min=0
    )
    adapt_on: str = _f(
        "all",
        "a selected user fine-tunes on every chunk so far, or only on the new ones",
        choices=["all", "new"],
    )
    steps_per_round: int = _f(30, "Adam steps per adaptation call (0 = adapt.steps)", min=0)
    weights_precision: str = _f(
        "fp16", "precision of model weights sent (teacher, student)", choices=["fp32", "fp16", "int8"]
    )
    targets_precision: str = _f(
        "fp16", "precision of pseudo-targets sent down", choices=["fp32", "fp16", "int8"]
    )
    upload_codec: str = _f(
        "flac",
        "encoding of uploaded noisy audio: flac (lossless) or lossy (Ogg Opus)",
        choices=["flac", "lossy"],
    )
    lossy_compression: float = _f(
        0.8,
        "Opus compression level for upload_codec=lossy (0 = best quality, 1 = smallest; 0.8 ~ 58 kbit/s)",
        min=0.0,
        max=1.0,
    )
    pesq_stoi: bool = _f(False, "also score PESQ and STOI on the test sets (slower)")
    num_cpus: float = _f(1.0, "CPUs reserved per client actor (an actor runs one device at a time)", min=0.01)
    num_gpus: float = _f(
        0.0, "GPUs reserved per client actor (e.g. 0.25 = four actors share a GPU; 0 = CPU only)", min=0.0
    )
    ray_address: str | None = _f(
        None,
        "join an existing Ray cluster at this address (e.g. 10.0.0.1:6379, or 'auto' for the local one) "
        "instead of starting a private Ray; the run dir and world cache must be on a filesystem every node sees",
    )
    ray_num_cpus: int = _f(
        0, "CPUs Ray may use (0 = every core of this machine; ignored with ray_address)", min=0
    )
    ray_object_store_mb: int = _f(256, "Ray object store size (MB)", min=80)
    ray_tmpdir: str | None = _f(
        None, "Ray temp/session folder (null = <run dir>/ray, or a short /tmp path if that is too long)"
    )
    fast_engine: bool = _f(
        True,
        "feed Flower's simulation engine only the nodes with pending messages, every 20 ms (fedpse/federation/"
        "engine.py; false = Flower's own loop over every node every 0.1 s)",
    )
    cache_dir: str | None = _f(
        "~/.cache/fedpse/results",
        "reuse teacher outputs and baseline scores computed by earlier runs (keyed by model weights and audio "
        "content; costs are still charged to the ledger); null = compute everything every run",
    )
    server_threads: int = _f(
        1, "torch threads for server-side work (teacher, cloud fine-tuning, scoring)", min=1
    )
    reply_timeout_s: float = _f(
        3600.0, "a device silent this long after a message is recorded as failed", min=1.0
    )
    max_in_flight: int = _f(
        8, "users whose round is in progress at once (bounds queued payloads; raise with many actors)", min=1
    )
    fail_users: list[str] = _f([], "fault injection: these users' devices raise on every training message")
    plugins: list[str] = _f(
        [],
        "modules imported before the run is checked (e.g. my_pkg.my_mode): a module defining a DeliveryStrategy "
        "subclass adds a delivery mode (see fedpse/federation/strategies/__init__.py)",
    )
    devices: DevicesConfig = _sub(DevicesConfig)
    faults: FaultsConfig = _sub(FaultsConfig)
    fedavg: FedAvgConfig = _sub(FedAvgConfig)


@dataclass
class Config:
    seed: int = _f(0, "master seed: same config + seed => identical world, runs and results")
    world: WorldConfig = _sub(WorldConfig)
    student: StudentConfig = _sub(StudentConfig)
    teacher: TeacherConfig = _sub(TeacherConfig)
    pretrain: PretrainConfig = _sub(PretrainConfig)
    adapt: AdaptConfig = _sub(AdaptConfig)
    device: DeviceConfig = _sub(DeviceConfig)
    federation: FederationConfig = _sub(FederationConfig)


# ------------------------------------------------------------------------------------------------ validation
_RANGE_PAIRS = {
    "world.snr_db",
    "world.room.rt60_s",
    "pretrain.snr_db",
    "federation.devices.uplink_mbps",
    "federation.devices.downlink_mbps",
    "federation.devices.charging_hours",
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` (ints are accepted for floats); raise ConfigError on mismatch."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp}")  # a programming error, surfaced clearly


def _check_limits(value: Any, meta: dict, key: str) -> None:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if item is None:
            continue
        if "choices" in meta and item not in meta["choices"]:
            raise ConfigError(f"{key}: expected one of {meta['choices']}, got {item!r}")
        if "min" in meta and item < meta["min"]:
            raise ConfigError(f"{key}: expected >= {meta['min']}, got {item!r}")
        if "max" in meta and item > meta["max"]:
            raise ConfigError(f"{key}: expected <= {meta['max']}, got {item!r}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or '<root>'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{key}: unknown config key; known keys here: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
        else:
            kwargs[name] = _coerce(value, tp, key)
            _check_limits(kwargs[name], fields[name].metadata, key)
    obj = cls(**kwargs)
    for name in fields:
        key = f"{prefix}.{name}" if prefix else name
        if key in _RANGE_PAIRS:
            pair = getattr(obj, name)
            if len(pair) != 2 or pair[0] > pair[1]:
                raise ConfigError(f"{key}: expected [low, high] with low <= high, got {pair!r}")
    return obj


def _validate_whole(cfg: Config) -> None:
    # Which noise families exist is the world's business: ``fedpse.world.reader.check_world_config``.
    if not cfg.world.noise.families:
        raise ConfigError("world.noise.families: expected at least one family")
    if cfg.world.speech.source != "tts" and not cfg.world.speech.path:
        raise ConfigError(f"world.speech.path: required when world.speech.source={cfg.world.speech.source!r}")
    if cfg.teacher.arch == "onnx" and not cfg.teacher.onnx.path:
        raise ConfigError("teacher.onnx.path: required when teacher.arch='onnx'")
    if cfg.world.noise.source != "procedural" and not cfg.world.noise.path:
        raise ConfigError(f"world.noise.path: required when world.noise.source={cfg.world.noise.source!r}")


# ------------------------------------------------------------------------------------------------- loading
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


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load ``path`` (default: the embedded default) on top of the built-in defaults, apply overrides, validate."""
    data = read_yaml(path or default_config_path())
    for text in overrides:
        key, value = parse_override(text)
        _apply_override(data, key, value)
    cfg = _build(Config, data, "")
    _validate_whole(cfg)
    return cfg


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
