"""A noise place and its timeline: ``Environment`` (family, seed, recipe), drawing new places, rendering any stretch.

A place's recipe is drawn by its family from ``[seed, the family's position in FAMILIES]``; its synthesiser is built
once (cached) and renders whole blocks, which ``render`` slices to the requested stretch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world.noise.bank import BabbleBank
from fedpse.world.noise.base import FAMILIES
from fedpse.world.noise.common import BLOCK_SAMPLES


@dataclass(frozen=True)
class Environment:
    """A noise place: ``family`` + ``seed`` + JSON-serialisable recipe ``params`` (drawn from the seed)."""

    env_id: str
    family: str
    seed: int
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(
                f"environment {self.env_id!r}: unknown noise family {self.family!r}; expected one of {tuple(FAMILIES)}"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(
                f"environment {self.env_id!r}: seed must be a non-negative integer, got {self.seed!r}"
            )

    def to_dict(self) -> dict:
        return {"env_id": self.env_id, "family": self.family, "seed": self.seed, "params": self.params}

    @classmethod
    def from_dict(cls, data: dict) -> Environment:
        missing = [key for key in ("env_id", "family", "seed", "params") if key not in data]
        if missing:
            raise ValueError(f"environment record is missing {missing}; got keys {sorted(data)}")
        if not isinstance(data["params"], dict):
            raise ValueError(f"environment {data['env_id']!r}: params must be a mapping")
        return cls(str(data["env_id"]), str(data["family"]), int(data["seed"]), dict(data["params"]))


def sample_environment(family: str, rng: np.random.Generator, env_id: str) -> Environment:
    """Draw a new place of ``family``: a seed from ``rng``, then every recipe parameter from that seed."""
    if family not in FAMILIES:
        raise ValueError(f"unknown noise family {family!r}; expected one of {tuple(FAMILIES)}")
    seed = int(rng.integers(0, 2**62))
    params = FAMILIES[family].draw(np.random.default_rng([seed, list(FAMILIES).index(family)]))
    return Environment(env_id=env_id, family=family, seed=seed, params=_jsonable(params))


def render(env: Environment, start_s: float, seconds: float, bank: BabbleBank | None = None) -> np.ndarray:
    """``seconds`` of the place's timeline from ``start_s`` (float32, 16 kHz, ``round(seconds * 16000)`` samples)."""
    if not (math.isfinite(start_s) and math.isfinite(seconds)) or start_s < 0 or seconds < 0:
        raise ValueError(f"render: start_s and seconds must be finite and >= 0, got {start_s}, {seconds}")
    return render_samples(env, round(start_s * SAMPLE_RATE), round(seconds * SAMPLE_RATE), bank)


def render_samples(env: Environment, start: int, length: int, bank: BabbleBank | None = None) -> np.ndarray:
    """Like ``render`` but in absolute sample indices (no rounding): samples ``[start, start + length)``."""
    if start < 0 or length < 0:
        raise ValueError(f"render: start and length must be >= 0, got {start}, {length}")
    if FAMILIES[env.family].needs_bank and bank is None:
        raise ValueError(
            f"environment {env.env_id!r} is a {env.family} place: pass bank=BabbleBank(talkers) with speech to mix"
        )
    if length == 0:
        return np.zeros(0, dtype=np.float32)
    synth = _compiled(env.family, env.seed, json.dumps(env.params, sort_keys=True))
    k0, k1 = start // BLOCK_SAMPLES, (start + length - 1) // BLOCK_SAMPLES + 1
    audio = synth.blocks(k0, k1, bank)
    offset = start - k0 * BLOCK_SAMPLES
    return np.array(audio[offset : offset + length], dtype=np.float32)


def _jsonable(value: Any) -> Any:
    """Recipe values as plain JSON types (numpy scalars -> Python, floats rounded to 6 significant digits)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(f"{float(value):.6g}")
    return value


@lru_cache(maxsize=16)
def _compiled(family: str, seed: int, params_json: str):
    """The place's synthesiser (filters designed, timbres built, level computed), cached across renders."""
    try:
        return FAMILIES[family](seed, json.loads(params_json))
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{family} environment (seed {seed}): malformed recipe params ({err!r})") from None
