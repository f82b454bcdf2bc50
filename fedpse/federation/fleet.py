"""The fleet of a run's devices: how fast each user's device computes and transfers, when it may take part, and which faults
strike its rounds, on a simulated clock.

Everything is drawn from seeded RNGs keyed by (seed, user id[, day | round]), so a user's device is the same in every
run of a config whichever users run beside it, and the ServerApp and the ClientApps draw the very same values.

- **Profile** (one per user): a compute speed factor (log-normal around the reference device,
  ``federation.devices.speed_sigma``), uplink and downlink rates (log-uniform in ``uplink_mbps`` / ``downlink_mbps``)
  and, with ``availability=charging``, a daily window in which the device is plugged in and idle: a habitual start
  hour (``charging_start_hour`` + N(0, ``charging_start_jitter_hours``)), a length (uniform in ``charging_hours``),
  and a day-to-day jitter of the start (N(0, ``charging_daily_jitter_hours``), drawn per user and day).
- **Clock**: simulated seconds from day 0, 00:00. Round r is scheduled at ``start_hour`` + (r - 1) ×
  ``round_interval_hours`` and starts then, or when round r - 1 ends if that is later.
- **Eligibility**: a user may be selected for a round only if its window is open at the round's start; its device
  must also finish before the window closes (an unplugged device stops: ``left_window``).
- **Time of a message**: bytes × 8 / link rate, plus the compute that produced it: device MACs / (reference MAC/s ×
  speed factor) for replies, server MACs / ``server_macs_per_s`` for the server's messages. A user's round time
  is the sum over its messages (its conversation is sequential).
- **Faults** (``federation.faults``), drawn per (fault seed, user, round): a crash (the device raises on the
  round's first message), a dropout (it raises on the round's training message, after its upload) and a straggler
  (its compute is ``straggler_slowdown`` times slower that round, which may make it miss ``round_deadline_s``).
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np

from fedpse.config import Config, DevicesConfig, FaultsConfig

HOUR_S = 3600.0
DAY_S = 24 * HOUR_S

# Stream tags keep the draws of different purposes independent of one another.
_PROFILE, _WINDOW_DAY, _FAULTS = 0xDE71CE, 0x0DA7, 0xFA017

# Messages on which an injected mid-round dropout strikes (the round's training step, after any upload).
TRAINING_MESSAGES = ("train.adapt", "train.install")


def _user_key(user: str) -> int:
    return zlib.crc32(user.encode())


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


# ------------------------------------------------------------------------------------------------ profiles
@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    """One user's device: compute speed relative to the reference device, link rates and availability window."""

    user: str
    speed: float
    uplink_mbps: float
    downlink_mbps: float
    window_start_hour: float | None  # habitual opening hour of the daily window; None = always available
    window_hours: float

    def row(self, devices: DevicesConfig) -> dict:
        """The profile as a ``devices.csv`` row."""
        return {
            "user": self.user,
            "speed": self.speed,
            "macs_per_s": devices.reference_macs_per_s * self.speed,
            "uplink_mbps": self.uplink_mbps,
            "downlink_mbps": self.downlink_mbps,
            "availability": "always" if self.window_start_hour is None else "charging",
            "window_start_hour": self.window_start_hour,
            "window_hours": self.window_hours if self.window_start_hour is not None else None,
        }


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def draw_profile(devices: DevicesConfig, seed: int, user: str) -> DeviceProfile:
    """The device profile of ``user`` (same config + seed => same profile, in any process)."""
    rng = _rng(seed, _PROFILE, _user_key(user))
    speed = float(math.exp(rng.normal(0.0, devices.speed_sigma)))
    uplink = _log_uniform(rng, *devices.uplink_mbps)
    downlink = _log_uniform(rng, *devices.downlink_mbps)
    start = (devices.charging_start_hour + rng.normal(0.0, devices.charging_start_jitter_hours)) % 24.0
    hours = float(rng.uniform(*devices.charging_hours))
    charging = devices.availability == "charging"
    return DeviceProfile(user, speed, uplink, downlink, float(start) if charging else None, hours)


# ------------------------------------------------------------------------------------------------ fleet
@dataclasses.dataclass(frozen=True)
class Window:
    """An availability window on the simulated clock, [start_s, end_s)."""

    start_s: float
    end_s: float


@dataclasses.dataclass(frozen=True)
class Faults:
    """The faults drawn for one user's round."""

    crash: bool = False
    dropout: bool = False
    straggler: bool = False

    @property
    def label(self) -> str:
        """``crash`` | ``dropout`` | ``straggler`` | ``dropout+straggler`` ... ('' when none)."""
        return "+".join(name for name in ("crash", "dropout", "straggler") if getattr(self, name))


def draw_faults(faults: FaultsConfig, fault_seed: int, user: str, round_number: int) -> Faults:
    """Three independent uniform draws per (fault seed, user, round) against the configured probabilities (so
    changing one probability does not reshuffle the other faults); a crash pre-empts a dropout."""
    if round_number < 1:
        return Faults()
    u_crash, u_dropout, u_straggler = _rng(fault_seed, _FAULTS, _user_key(user), round_number).random(3)
    crash = bool(u_crash < faults.crash_probability)
    return Faults(
        crash=crash,
        dropout=bool(not crash and u_dropout < faults.dropout_probability),
        straggler=bool(u_straggler < faults.straggler_probability),
    )


class InjectedFaultError(RuntimeError):
    """Raised by a device whose round an injected fault strikes (looks like any device failure to the server)."""


class Fleet:
    """The devices of a run: profiles, availability on the simulated clock, message times and fault draws."""

    def __init__(self, cfg: Config):
        self.devices = cfg.federation.devices
        self.faults_cfg: FaultsConfig = cfg.federation.faults
        self.seed = cfg.seed
        self.fault_seed = cfg.seed if self.faults_cfg.seed is None else self.faults_cfg.seed
        self._profiles: dict[str, DeviceProfile] = {}

    def profile(self, user: str) -> DeviceProfile:
        if user not in self._profiles:
            self._profiles[user] = draw_profile(self.devices, self.seed, user)
        return self._profiles[user]

    # ------------------------------------------------------------------------------------------- clock
    def scheduled_start_s(self, round_number: int) -> float:
        """When round ``round_number`` is scheduled on the simulated clock (seconds from day 0, 00:00)."""
        return (
            self.devices.start_hour * HOUR_S + (round_number - 1) * self.devices.round_interval_hours * HOUR_S
        )

    def round_start_s(self, round_number: int, previous_end_s: float) -> float:
        """A round starts when scheduled, or when the previous round ends if that is later."""
        return max(self.scheduled_start_s(round_number), previous_end_s)

    def window(self, user: str, day: int) -> Window | None:
        """The user's availability window opening on ``day`` (None when the device is always available)."""
        profile = self.profile(user)
        if profile.window_start_hour is None:
            return None
        jitter = _rng(self.seed, _WINDOW_DAY, _user_key(user), day % 2**32).normal(
            0.0, self.devices.charging_daily_jitter_hours
        )
        start = day * DAY_S + (profile.window_start_hour + float(jitter)) * HOUR_S
        return Window(start, start + profile.window_hours * HOUR_S)

    def window_left_s(self, user: str, t: float) -> float:
        """Seconds until the window open at time ``t`` closes: 0 if none is open, ``inf`` if always available."""
        if self.profile(user).window_start_hour is None:
            return math.inf
        day = math.floor(t / DAY_S)
        # A window may open the day before (or, with jitter, two days before) and still be open at t.
        windows = [self.window(user, d) for d in (day - 2, day - 1, day, day + 1)]
        return max([w.end_s - t for w in windows if w is not None and w.start_s <= t < w.end_s], default=0.0)

    def available(self, user: str, t: float) -> bool:
        return self.window_left_s(user, t) > 0.0

    # ------------------------------------------------------------------------------------------- time
    def message_seconds(
        self,
        user: str,
        round_number: int,
        direction: str,
        size_bytes: float,
        device_macs: float,
        server_macs: float,
    ) -> tuple[float, float, float]:
        """Simulated (transfer, device compute, server compute) seconds of one message of ``user``'s round."""
        profile = self.profile(user)
        mbps = profile.uplink_mbps if direction == "up" else profile.downlink_mbps
        transfer = size_bytes * 8.0 / (mbps * 1e6)
        device = 0.0
        if device_macs > 0:
            device = device_macs / (self.devices.reference_macs_per_s * profile.speed)
            device *= self.straggler_slowdown(user, round_number)
        server = server_macs / self.devices.server_macs_per_s if server_macs > 0 else 0.0  # NaN (ONNX): 0
        return transfer, device, server

    # ------------------------------------------------------------------------------------------- faults
    def faults(self, user: str, round_number: int) -> Faults:
        """The faults injected into ``user``'s round ``round_number``."""
        return draw_faults(self.faults_cfg, self.fault_seed, user, round_number)

    def straggler_slowdown(self, user: str, round_number: int) -> float:
        return self.faults_cfg.straggler_slowdown if self.faults(user, round_number).straggler else 1.0

    def deadline_s(self, user: str, round_start_s: float) -> tuple[float, str]:
        """The simulated seconds ``user`` has in a round starting at ``round_start_s``, and what binds it:
        ``missed_deadline`` (the round deadline), ``left_window`` (its window closes first) or '' (no limit)."""
        deadline = self.faults_cfg.round_deadline_s or math.inf
        left = self.window_left_s(user, round_start_s)
        if left < deadline:
            return left, "left_window"
        return deadline, ("missed_deadline" if math.isfinite(deadline) else "")

    def inject(self, user: str, round_number: int, message_type: str) -> None:
        """Device side: raise ``InjectedFaultError`` if a crash or dropout strikes this message of the user's round."""
        faults = self.faults(user, round_number)
        if faults.crash:
            raise InjectedFaultError(
                f"injected crash of {user}'s device in round {round_number} (federation.faults.crash_probability)"
            )
        if faults.dropout and message_type in TRAINING_MESSAGES:
            raise InjectedFaultError(
                f"injected dropout of {user}'s device in round {round_number}, on {message_type} "
                "(federation.faults.dropout_probability)"
            )
