"""The shared picture of one federated run: config, run directory, participating users, the streaming schedule.

Both sides build it from the same resolved ``config.yaml`` in the run directory: the server to plan rounds, each
device (ClientApp) to find its own slice of the world. Nothing here touches clean audio.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from torch import nn

from fedpse.config import AdaptConfig, Config, ConfigError, load_config
from fedpse.federation.fleet import Fleet
from fedpse.models.checkpoints import load_checkpoint, save_checkpoint
from fedpse.models.zoo import load_student, load_teacher
from fedpse.world.reader import World


@dataclasses.dataclass
class RunModels:
    """The config's generic student and teacher as loaded (checked), before they are frozen into a run directory."""

    student: nn.Module
    student_card: dict
    teacher: nn.Module
    teacher_card: dict


def load_models(cfg: Config) -> RunModels:
    """Load the config's student and teacher (checkpoints resolvable and matching their architecture). Seeded, so
    that randomly initialised ones (``checkpoint: null``) are the same in every run of the config."""
    import torch

    torch.manual_seed(cfg.seed)
    student, student_card = load_student(cfg)
    teacher, teacher_card = load_teacher(cfg)
    return RunModels(student, student_card, teacher, teacher_card)


@dataclasses.dataclass
class RunPlan:
    """One run: its config, its directory and the users taking part."""

    cfg: Config
    run_dir: Path
    # the config's models as the checks before a run loaded them, until ``freeze_models`` writes them (then None)
    models: RunModels | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunPlan:
        """The plan of an existing run directory (from its resolved ``config.yaml``)."""
        run_dir = Path(run_dir)
        return cls(load_config(run_dir / "config.yaml"), run_dir)

    @cached_property
    def world(self) -> World:
        return World.open(self.cfg)

    @cached_property
    def fleet(self) -> Fleet:
        """The run's devices: profiles, availability windows, simulated times and injected faults."""
        return Fleet(self.cfg)

    @cached_property
    def users(self) -> list[str]:
        """Participating users: the world's first ``federation.num_users`` (all when 0)."""
        ids = self.world.user_ids()
        wanted = self.cfg.federation.num_users or len(ids)
        if wanted > len(ids):
            raise ConfigError(
                f"federation.num_users={wanted}, but the world at {self.world.root} has only {len(ids)} users; "
                "lower federation.num_users or build a bigger world (world.num_users)"
            )
        unknown = sorted(set(self.cfg.federation.fail_users) - set(ids[:wanted]))
        if unknown:
            raise ConfigError(f"federation.fail_users: {unknown} are not users of this run")
        return ids[:wanted]

    def user_for_partition(self, partition_id: int) -> str | None:
        """The user a simulated device (Flower partition id) carries; None for spare devices."""
        return self.users[partition_id] if 0 <= partition_id < len(self.users) else None

    # ---------------------------------------------------------------------------------------- streaming
    def chunk_names(self, user_id: str) -> list[str]:
        """The user's adaptation chunks in arrival order."""
        return [s["name"] for s in self.world.segments(user_id, "adapt")]

    def chunks_per_round(self, user_id: str) -> int:
        per = self.cfg.federation.chunks_per_round
        return per or math.ceil(len(self.chunk_names(user_id)) / self.cfg.federation.num_rounds)

    def chunks_available(self, user_id: str, round_number: int) -> list[str]:
        """Chunks the user has recorded by the end of ``round_number`` (1-based): the stream so far."""
        names = self.chunk_names(user_id)
        return names[: min(len(names), round_number * self.chunks_per_round(user_id))]

    # ---------------------------------------------------------------------------------------- adaptation
    def round_adapt(self) -> AdaptConfig:
        """``adapt.*`` with the per-round step budget applied."""
        steps = self.cfg.federation.steps_per_round
        return dataclasses.replace(self.cfg.adapt, steps=steps) if steps else self.cfg.adapt

    def adapt_seed(self, user_id: str, round_number: int) -> int:
        return zlib.crc32(f"{self.cfg.seed}:{user_id}:{round_number}".encode())

    # ---------------------------------------------------------------------------------------- models
    @property
    def generic_student_path(self) -> Path:
        return self.run_dir / "models" / "generic_student.pt"

    @property
    def teacher_path(self) -> Path:
        return self.run_dir / "models" / "teacher.pt"

    def freeze_models(self) -> None:
        """Write the run's generic student and teacher into the run directory, so that every party (devices in
        any actor, server, evaluator) uses the very same weights, also when they are randomly initialised.
        The models the checks loaded (``self.models``) are used, else loaded here."""
        models, self.models = self.models or load_models(self.cfg), None
        save_checkpoint(
            self.generic_student_path, models.student, card={"source": models.student_card}, dtype="fp32"
        )
        if self.cfg.teacher.arch != "onnx":  # an ONNX teacher stays where it is, loaded by path
            save_checkpoint(
                self.teacher_path, models.teacher, card={"source": models.teacher_card}, dtype="fp32"
            )

    def generic_student(self) -> nn.Module:
        """The generic student every device starts with (the app's pre-installed model)."""
        return load_checkpoint(self.generic_student_path)[0]

    def teacher(self) -> nn.Module:
        """The run's teacher, in eval mode with gradients off."""
        if not self.teacher_path.is_file():
            return load_teacher(self.cfg)[0]  # an ONNX teacher, loaded by path
        model = load_checkpoint(self.teacher_path)[0]
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    # ---------------------------------------------------------------------------------------- storage
    def device_dir(self, user_id: str) -> Path:
        """A device's own storage (its personalized student, cached teacher and targets)."""
        return self.run_dir / "devices" / user_id

    def server_dir(self, user_id: str) -> Path:
        """What the server keeps about a user (cloud_student: uploads, targets, the user's student copy)."""
        return self.run_dir / "server" / user_id


@dataclasses.dataclass
class Selection:
    """Who takes part in a round: ``selected`` (sorted), of whom ``retried`` were picked first as retries."""

    selected: list[str]
    retried: list[str]


def cohort_size(num_users: int, fraction: float) -> int:
    """Users the server wants per round: ``fraction`` of all the run's users, at least one."""
    return min(num_users, max(1, round(fraction * num_users)))


def select_round(
    users: list[str],
    fraction: float,
    seed: int,
    round_number: int,
    eligible: list[str] | None = None,
    retry: Sequence[str] = (),
) -> Selection:
    """The users of round ``round_number``.

    The server wants ``cohort_size(len(users), fraction)`` users and can only have eligible ones (devices inside
    their availability window; all when ``eligible`` is None). Users to ``retry`` (their last round failed), in the
    order given, fill the cohort first if eligible; the rest is a seeded draw over the remaining eligible user ids.
    With everyone eligible and nothing to retry this is exactly ``select_users``.
    """
    ordered = sorted(users)
    pool = ordered if eligible is None else sorted(set(eligible) & set(ordered))
    k = min(len(pool), cohort_size(len(ordered), fraction))
    in_pool = set(pool)
    retried = [u for u in retry if u in in_pool][:k]
    taken = set(retried)
    rest = [u for u in pool if u not in taken]
    rng = np.random.default_rng([seed, 0x5E1EC7, round_number])
    drawn = [rest[i] for i in rng.choice(len(rest), size=k - len(retried), replace=False)] if rest else []
    return Selection(sorted(retried + drawn), retried)


def select_users(users: list[str], fraction: float, seed: int, round_number: int) -> list[str]:
    """Users taking part in ``round_number``: a seeded draw over user ids (not Flower's node sampling)."""
    return select_round(users, fraction, seed, round_number).selected
