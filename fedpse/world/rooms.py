"""Shoebox rooms for reverberant users and for reverberant pretraining: sampling a room, its impulse responses
(image source method via pyroomacoustics, cached on disk), and reverberating speech with a dry or early-reverb clean
reference.

Pretraining rooms (``pretraining_rooms``) come from their own seeded stream, one per split (train / val), and any
room that is also a user's room (same seed or same RIR key) is skipped, so the rooms a model trains and validates
in are never the rooms it is tested in. ``RirBank`` holds their RIRs in memory for online mixing.

RIRs are scaled so the direct path has unit gain (pyroomacoustics gives it ``1 / distance``): the dry reference
then matches the direct-path part of the reverberant speech in level and time. pyroomacoustics is imported
inside functions: it takes about a second to import and most worlds have no rooms.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from fedpse.audio.io import SAMPLE_RATE

RIR_VERSION = 1  # part of the cache key: bump when the simulation below changes
MIN_WALL_DISTANCE_M = 0.5
ROOM_LENGTH_M = (3.5, 8.0)  # living rooms and offices
ROOM_WIDTH_M = (3.0, 6.0)
ROOM_HEIGHT_M = (2.4, 3.2)
TALKER_HEIGHT_M = (1.1, 1.8)  # seated to standing
MIC_HEIGHT_M = (0.7, 1.5)  # device on a table or shelf
SOURCE_MIC_DISTANCE_M = (0.5, 4.0)
FADE_MS = 5.0  # fade-out after the early-reverb window
TARGETS = ("dry", "early")
PRETRAIN_ROOM_STREAM = (
    0x5245_5642  # "REVB": the seed stream of pretraining rooms, apart from the world's user draws
)
SPLITS = {"train": 1, "val": 2}

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Room:
    """A shoebox room: size, reverberation time, talker and microphone positions (metres), and the seed drawn."""

    dims_m: Vec3
    rt60_s: float
    source_m: Vec3
    mic_m: Vec3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dims_m", "source_m", "mic_m"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"room {name} must have 3 coordinates (x, y, z), got {value}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "rt60_s", float(self.rt60_s))
        object.__setattr__(self, "seed", int(self.seed))
        if min(self.dims_m) <= 0 or self.rt60_s <= 0:
            raise ValueError(f"room needs positive dims_m and rt60_s, got {self.dims_m} and {self.rt60_s}")
        for name in ("source_m", "mic_m"):
            point = getattr(self, name)
            if not all(0 < p < d for p, d in zip(point, self.dims_m, strict=True)):
                raise ValueError(f"room {name}={point} is not inside the room {self.dims_m}")

    @property
    def distance_m(self) -> float:
        """Talker-to-microphone distance (the direct path)."""
        return math.dist(self.source_m, self.mic_m)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Room:
        missing = [k for k in ("dims_m", "rt60_s", "source_m", "mic_m") if k not in d]
        if missing:
            raise ValueError(f"room description {d} lacks {missing}")
        return cls(d["dims_m"], d["rt60_s"], d["source_m"], d["mic_m"], d.get("seed", 0))


def sample_room(rng: np.random.Generator, rt60_range: tuple[float, float] = (0.2, 0.8)) -> Room:
    """A plausible living-room/office room; talker and mic at least 0.5 m from every wall, 0.5-4 m apart."""
    lo, hi = rt60_range
    if not 0 < lo <= hi:
        raise ValueError(f"rt60_range must satisfy 0 < low <= high, got {rt60_range}")
    seed = int(rng.integers(2**31))
    draw = np.random.default_rng(seed)
    dims = (draw.uniform(*ROOM_LENGTH_M), draw.uniform(*ROOM_WIDTH_M), draw.uniform(*ROOM_HEIGHT_M))
    rt60 = float(draw.uniform(lo, hi))
    for _ in range(1000):
        source = _point(draw, dims, TALKER_HEIGHT_M)
        mic = _point(draw, dims, MIC_HEIGHT_M)
        if SOURCE_MIC_DISTANCE_M[0] <= math.dist(source, mic) <= SOURCE_MIC_DISTANCE_M[1]:
            return Room(_mm(dims), round(rt60, 3), _mm(source), _mm(mic), seed)
    raise RuntimeError(
        f"could not place talker and microphone in a {dims} room"
    )  # unreachable for these sizes


def _point(draw: np.random.Generator, dims: Vec3, height_m: tuple[float, float]) -> Vec3:
    margin = MIN_WALL_DISTANCE_M
    z_hi = min(height_m[1], dims[2] - margin)
    return (
        draw.uniform(margin, dims[0] - margin),
        draw.uniform(margin, dims[1] - margin),
        draw.uniform(height_m[0], z_hi),
    )


def _mm(point: Vec3) -> Vec3:
    """Millimetre precision: positions survive JSON round trips and hash identically."""
    return tuple(round(float(v), 3) for v in point)  # type: ignore[return-value]


def room_key(room: Room) -> str:
    """Content hash of everything that determines the room's RIR."""
    text = json.dumps({"room": room.to_dict(), "fs": SAMPLE_RATE, "version": RIR_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def direct_path_index(room: Room) -> int:
    """Sample at which the direct path arrives in the RIR (propagation delay + the fractional-delay filter's)."""
    import pyroomacoustics as pra

    delay = room.distance_m / pra.constants.get("c") * SAMPLE_RATE
    return int(round(delay + pra.constants.get("frac_delay_length") // 2))


def _simulate_rir(room: Room) -> np.ndarray:
    """Full RIR by the image source method, scaled so the direct path has unit gain.

    Sabine's formula misjudges non-cubic shoeboxes (measured RT60 up to ~1.7x the request), so when the measured
    RT60 is off by more than 5 % the absorption is corrected once (Eyring-style) and the room simulated again.
    """
    import pyroomacoustics as pra

    try:
        absorption, max_order = pra.inverse_sabine(room.rt60_s, room.dims_m)
    except ValueError:
        raise ValueError(
            f"room {room.dims_m} m cannot have RT60 {room.rt60_s} s (Sabine absorption above 1); "
            "use a larger RT60 or a smaller room"
        ) from None
    rir = _image_source_rir(room, absorption, max_order)
    ratio = measured_rt60_s(rir) / room.rt60_s
    if math.isfinite(ratio) and ratio > 0 and abs(ratio - 1.0) > 0.05:
        absorption = min(0.99, 1.0 - (1.0 - absorption) ** ratio)
        rir = _image_source_rir(room, absorption, max_order)
    return (rir * room.distance_m).astype(np.float32)


def _image_source_rir(room: Room, absorption: float, max_order: int) -> np.ndarray:
    import pyroomacoustics as pra

    shoebox = pra.ShoeBox(
        list(room.dims_m), fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=max_order
    )
    shoebox.add_source(list(room.source_m))
    shoebox.add_microphone(list(room.mic_m))
    shoebox.compute_rir()
    return np.asarray(shoebox.rir[0][0], dtype=np.float64)


def measured_rt60_s(rir: np.ndarray) -> float:
    """RT60 of an impulse response from its Schroeder decay (T30, extrapolated to 60 dB); NaN if unmeasurable."""
    from pyroomacoustics.experimental import measure_rt60

    try:
        return float(measure_rt60(np.asarray(rir, dtype=np.float64), SAMPLE_RATE, decay_db=30))
    except (ValueError, IndexError, ZeroDivisionError):
        return math.nan


def _cached_rir(room: Room, cache_dir: Path | None) -> np.ndarray:
    if cache_dir is None:
        return _simulate_rir(room)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"rir-{room_key(room)}.npy"
    if path.is_file():
        return np.load(path)
    rir = _simulate_rir(room)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{path.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, rir)
    os.replace(tmp, path)  # atomic: parallel workers never see a half-written file
    return rir


def room_rirs(
    room: Room, cache_dir: Path | None = None, early_ms: float = 50.0
) -> tuple[np.ndarray, np.ndarray]:
    """(full RIR, early RIR) at 16 kHz, float32, same time origin; the early one ends ``early_ms`` after the
    direct path, followed by a 5 ms raised-cosine fade. The full RIR is cached as ``cache_dir/rir-<hash>.npy``."""
    if early_ms < 0:
        raise ValueError(f"early_ms must be >= 0, got {early_ms}")
    full = _cached_rir(room, cache_dir)
    end = min(len(full), direct_path_index(room) + int(round(early_ms * SAMPLE_RATE / 1000)))
    fade = min(len(full) - end, int(round(FADE_MS * SAMPLE_RATE / 1000)))
    early = full[: end + fade].copy()
    early[end:] *= (0.5 + 0.5 * np.cos(np.pi * (np.arange(fade) + 1) / (fade + 1))).astype(np.float32)
    return full, early


def _convolve_aligned(speech: np.ndarray, rir: np.ndarray, start: int, n: int) -> np.ndarray:
    """``speech * rir`` from sample ``start`` on (the direct path), ``n`` samples long."""
    return _fit(fftconvolve(speech, rir)[start : start + n], n)


def reverberate(
    speech: np.ndarray,
    room: Room,
    target: str = "dry",
    early_ms: float = 50.0,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(reverberant speech, clean reference), both as long as ``speech`` and aligned so the direct path is at
    sample 0. ``target="dry"``: the reference is ``speech`` itself; ``"early"``: ``speech`` through the early RIR."""
    if target not in TARGETS:
        raise ValueError(f"unknown reverberation target {target!r}; expected one of {TARGETS}")
    speech = np.asarray(speech, dtype=np.float32)
    if speech.ndim != 1:
        raise ValueError(f"speech must be mono (1-D), got shape {speech.shape}")
    full, early = room_rirs(room, cache_dir, early_ms)
    start, n = direct_path_index(room), len(speech)
    reverberant = _convolve_aligned(speech, full, start, n)
    reference = speech.copy() if target == "dry" else _convolve_aligned(speech, early, start, n)
    return reverberant, reference


def pretraining_rooms(
    seed: int,
    split: str,
    count: int,
    rt60_range: tuple[float, float],
    exclude: list[Room] | tuple[Room, ...] = (),
) -> list[Room]:
    """``count`` rooms of the pretraining pool's ``split`` ("train" | "val"): a seeded stream of its own per split,
    skipping any room in ``exclude`` (the users' rooms, and the train rooms when drawing val ones)."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {sorted(SPLITS)}, got {split!r}")
    seeds, keys = {r.seed for r in exclude}, {room_key(r) for r in exclude}
    rng = np.random.default_rng([seed, PRETRAIN_ROOM_STREAM, SPLITS[split]])
    rooms: list[Room] = []
    while len(rooms) < count:
        room = sample_room(rng, rt60_range)
        if room.seed not in seeds and room_key(room) not in keys:
            rooms.append(room)
    return rooms


class RirBank:
    """RIRs of a list of rooms, in memory, for reverberating pretraining speech on the fly.

    ``apply(speech, rng, n)``: ``speech`` has ``pre`` samples of lead-in (so the crop hears the reverberant tail of
    what came before, as a device in a room does) followed by the ``n`` samples of the crop; returns the reverberant
    crop and its clean reference (dry, or the early-reverb speech), aligned on the direct path like a user's."""

    def __init__(self, rooms: list[Room], target: str, early_ms: float, cache_dir: Path | None = None):
        if target not in TARGETS:
            raise ValueError(f"unknown reverberation target {target!r}; expected one of {TARGETS}")
        if not rooms:
            raise ValueError("RirBank needs at least one room")
        self.rooms, self.target, self.early_ms = list(rooms), target, early_ms
        self._rirs = []
        for room in self.rooms:
            full, early = room_rirs(room, cache_dir, early_ms)
            self._rirs.append((full, early if target == "early" else None, direct_path_index(room)))
        self.pre = max(len(full) for full, _, _ in self._rirs)  # lead-in long enough for the longest tail

    def __len__(self) -> int:
        return len(self.rooms)

    def apply(self, speech: np.ndarray, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        full, early, start = self._rirs[int(rng.integers(len(self._rirs)))]
        offset = len(speech) - n  # the lead-in
        reverberant = _convolve_aligned(speech, full, start + offset, n)
        if early is None:
            return reverberant, np.ascontiguousarray(speech[offset:], dtype=np.float32)
        return reverberant, _convolve_aligned(speech, early, start + offset, n)

    def describe(self) -> dict:
        """What a model card records about the rooms it trained in."""
        rt60 = [r.rt60_s for r in self.rooms]
        return {
            "rooms": len(self.rooms),
            "rt60_s": [round(min(rt60), 3), round(max(rt60), 3)],
            "target": self.target,
            "early_ms": self.early_ms,
            "room_seeds": [r.seed for r in self.rooms],
        }


def _fit(audio: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, len(audio))] = audio[:n]
    return out
