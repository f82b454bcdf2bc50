"""A built world on disk: where the world a config describes lives (``world_dir``, keyed by ``world_key``) and read
access to it (``World``). Building one is ``fedpse.world.cache``; ``open_world`` there opens it or builds it first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from fedpse.audio.io import load_audio
from fedpse.config import Config, ConfigError, config_to_dict
from fedpse.world.users import pcm_sha256

FORMAT_VERSION = 1
# World settings added after FORMAT_VERSION 1, with the value that builds worlds as before they existed: at that
# value they stay out of the world key, so worlds (and results keyed by them) cached before them are still found.
_LATER_KEYS = {
    ("speech", "skip_bad_files"): False,
    ("noise", "skip_bad_files"): False,
    ("noise", "min_rms_dbfs"): -80.0,
}


# the room settings every room-less world is keyed with (the defaults when rooms came in): a room-less world's
# key ignores world.room.*, which pretraining reads for its reverberant mixtures (rt60_s, target, early_ms)
ROOMLESS = {"enabled": False, "rt60_s": [0.2, 0.8], "target": "dry", "early_ms": 50.0}


class WorldError(ValueError):
    """A world cache that is missing, incomplete or built from a different config."""


# ------------------------------------------------------------------------------------------------ identity
def check_world_config(cfg: Config) -> None:
    """World settings the config layer cannot check on its own (it knows no noise family); ``ConfigError``."""
    from fedpse.world.noise import FAMILIES  # deferred: reading a world needs no noise synthesis

    for fam in cfg.world.noise.families:
        if fam not in FAMILIES:
            raise ConfigError(
                f"world.noise.families: unknown family {fam!r}; expected some of {sorted(FAMILIES)}"
            )


def world_key(cfg: Config) -> str:
    """Hash of everything that determines the world's audio (not where it is cached or how many workers). A config
    that describes no possible world (an unknown noise family) is a ``ConfigError`` here, before any world work."""
    check_world_config(cfg)
    world = config_to_dict(cfg.world)
    world.pop("cache_dir")
    world.pop("workers")
    for (section, key), old in _LATER_KEYS.items():
        if world[section][key] == old:
            del world[section][key]
    if world["speech"]["source"] != "neural_tts":
        del world["speech"]["neural_tts"]  # (added later too) its settings change no audio of other sources
    # a world without rooms has the same audio whatever the room settings say
    if not world["room"]["enabled"]:
        world["room"] = ROOMLESS
    blob = json.dumps({"format": FORMAT_VERSION, "seed": cfg.seed, "world": world}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def world_dir(cfg: Config) -> Path:
    return Path(os.path.expanduser(cfg.world.cache_dir)) / f"world-{world_key(cfg)[:12]}"


# ------------------------------------------------------------------------------------------------ reading
class World:
    """Read access to a built world. Devices get only noisy audio; clean references go to the evaluator."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise WorldError(f"{self.root}: no manifest.json; build the world with `fedpse world build`")
        try:
            self.manifest = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise WorldError(f"{path}: corrupt manifest ({err}); delete the folder and rebuild") from None
        if not self.manifest.get("complete"):
            raise WorldError(
                f"{path}: the world build did not finish; run `fedpse world build` again to resume"
            )
        self._users = {u["user_id"]: u for u in self.manifest["users"]}

    @classmethod
    def open(cls, cfg: Config) -> World:
        """The world ``cfg`` describes; errors if it is not built or the cache was built from other settings."""
        root = world_dir(cfg)
        world = cls(root)
        if world.manifest.get("key") != world_key(cfg):
            raise WorldError(
                f"{root}: the cached world does not match this config (seed/world settings differ)"
            )
        return world

    @property
    def seed(self) -> int:
        return int(self.manifest["seed"])

    def user_ids(self) -> list[str]:
        return list(self._users)

    def user(self, user_id: str) -> dict:
        if user_id not in self._users:
            raise WorldError(
                f"user {user_id!r} is not in the world at {self.root} ({len(self._users)} users)"
            )
        return self._users[user_id]

    def segments(self, user_id: str, part: str) -> list[dict]:
        return [s for s in self.user(user_id)["segments"] if s["part"] == part]

    def load(self, user_id: str, name: str, kind: str = "noisy") -> np.ndarray:
        if kind not in ("noisy", "clean"):
            raise ValueError(f"kind: expected 'noisy' or 'clean', got {kind!r}")
        return load_audio(self.root / "users" / user_id / f"{name}.{kind}.flac")

    def adaptation_chunks(self, user_id: str, kind: str = "noisy") -> list[np.ndarray]:
        return [self.load(user_id, s["name"], kind) for s in self.segments(user_id, "adapt")]

    def test_set(self, user_id: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(noisy, clean) held-out test mixtures — for scoring only."""
        return [
            (self.load(user_id, s["name"], "noisy"), self.load(user_id, s["name"], "clean"))
            for s in self.segments(user_id, "test")
        ]

    def pretrain_speech_files(self, split: str) -> dict[str, list[Path]]:
        """Pretraining utterance files per speaker, ``split`` = "train" | "val" (validation speakers are disjoint)."""
        return {
            e["speaker"]: [self.root / i["path"] for i in e["items"]]
            for e in self.manifest["pretrain_speech"]
            if e["split"] == split
        }

    def pretrain_noise_files(self, split: str) -> list[Path]:
        return [self.root / e["path"] for e in self.manifest["pretrain_noise"] if e["split"] == split]

    def user_rooms(self) -> list[dict]:
        """The rooms users are in (``Room.to_dict`` form); empty in a world without rooms."""
        return [u["room"] for u in self._users.values() if u.get("room")]

    def verify(self) -> list[str]:
        """Recompute every user audio hash; returns the names of files whose content differs from the manifest."""
        bad = []
        for uid, user in self._users.items():
            for s in user["segments"]:
                for kind in ("noisy", "clean"):
                    if pcm_sha256(self.load(uid, s["name"], kind)) != s[f"{kind}_sha256"]:
                        bad.append(f"{uid}/{s['name']}.{kind}.flac")
        return bad

    def remove(self) -> None:
        shutil.rmtree(self.root)
