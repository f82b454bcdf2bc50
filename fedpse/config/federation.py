"""The ``federation`` section: the delivery mode, rounds, the simulated devices, faults, fedavg_generic."""

from __future__ import annotations

from dataclasses import dataclass

from fedpse.config.fields import _f, _sub


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
