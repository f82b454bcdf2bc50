"""One user's device: its own noisy audio, its personalized student and its local caches, all on disk.

State lives in files under ``<run dir>/devices/<user>/`` (not in Flower's ``Context``, which is shipped to an actor
with every message), so memory stays flat in the number of users and any actor can serve any device:

    student.pt            the personalized student (fp32), absent until the first adaptation (= generic student)
    unguarded_student.pt  the fine-tuned student the guard turned down in the last round (adapt.guard; simulation
                          only: what the evaluator scores as "without the guard"; a real device would drop it)
    teacher.pt            the teacher, cached after its one download (teacher_weights mode)
    teacher_onnx/         ... or an ONNX teacher: its graph file(s) as sent and teacher.json, its teacher.onnx block
    targets/<chunk>.npy   pseudo-targets received (pseudo_targets) or computed on the device (teacher_weights)
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedpse.federation.plan import RunPlan
from fedpse.models.checkpoints import load_checkpoint, save_checkpoint
from fedpse.models.onnx import build_onnx_teacher, with_files_in
from fedpse.models.registry import build_from_spec
from fedpse.world.reader import World


class NoisyAudio:
    """The only slice of the world a device can read: its own user's noisy adaptation chunks."""

    def __init__(self, world: World, user_id: str):
        self._world = world
        self.user_id = user_id
        self._names = {s["name"] for s in world.segments(user_id, "adapt")}

    def chunk(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise ValueError(f"device {self.user_id}: no adaptation chunk named {name!r}")
        return self._world.load(self.user_id, name, "noisy")


@lru_cache(maxsize=4)
def _generic_student(path: str, mtime: float) -> nn.Module:
    """A run's generic student, loaded once per process (copied before use)."""
    return load_checkpoint(path)[0]


def generic_student(plan: RunPlan) -> nn.Module:
    """A fresh copy of the run's generic student (what every device starts with)."""
    path = plan.generic_student_path
    return copy.deepcopy(_generic_student(str(path), path.stat().st_mtime))


def keep_unguarded(
    plan: RunPlan, path: Path, state_dict: dict[str, torch.Tensor] | None, round_number: int, user: str
) -> None:
    """Write (or, for None, remove) the fine-tuned student a guard turned down at ``path`` (device or server side)."""
    if state_dict is None:
        path.unlink(missing_ok=True)
        Path(str(path) + ".card.json").unlink(missing_ok=True)
        return
    model = generic_student(plan)
    model.load_state_dict(state_dict)
    save_checkpoint(
        path, model, card={"user": user, "round": round_number, "guard": "kept_generic"}, dtype="fp32"
    )


class Device:
    """A user's device in run ``plan``."""

    def __init__(self, plan: RunPlan, user_id: str):
        self.plan = plan
        self.user_id = user_id
        self.root = plan.device_dir(user_id)
        self.audio = NoisyAudio(plan.world, user_id)

    # ------------------------------------------------------------------------------------------- student
    @property
    def student_path(self) -> Path:
        return self.root / "student.pt"

    def student(self) -> nn.Module:
        """The device's current student: personalized if it has adapted before, else the generic one."""
        if self.student_path.is_file():
            return load_checkpoint(self.student_path)[0]
        return generic_student(self.plan)

    def save_student(self, model: nn.Module, round_number: int) -> None:
        save_checkpoint(
            self.student_path, model, card={"user": self.user_id, "round": round_number}, dtype="fp32"
        )

    @property
    def unguarded_path(self) -> Path:
        return self.root / "unguarded_student.pt"

    def keep_unguarded(self, state_dict: dict[str, torch.Tensor] | None, round_number: int) -> None:
        """Keep the fine-tuned student the guard turned down (None: it adopted it; any older one is dropped)."""
        keep_unguarded(self.plan, self.unguarded_path, state_dict, round_number, self.user_id)

    def install_student(self, state_dict: dict[str, torch.Tensor], round_number: int) -> nn.Module:
        """Replace the student with weights received from the server (cloud_student, oracle_clean)."""
        model = generic_student(self.plan)
        model.load_state_dict(state_dict)
        self.save_student(model.eval(), round_number)
        return model

    # ------------------------------------------------------------------------------------------- teacher
    @property
    def teacher_path(self) -> Path:
        return self.root / "teacher.pt"

    @property
    def onnx_teacher_dir(self) -> Path:
        return self.root / "teacher_onnx"

    def has_teacher(self) -> bool:
        return self.teacher_path.is_file() or (self.onnx_teacher_dir / "teacher.json").is_file()

    def store_onnx_teacher(self, block: dict, files: dict[str, bytes]) -> nn.Module:
        """Keep an ONNX teacher as sent: its graph files and its ``teacher.onnx`` block pointing at them."""
        directory = self.onnx_teacher_dir
        directory.mkdir(parents=True, exist_ok=True)
        names = list(files)
        for name, data in files.items():
            (directory / name).write_bytes(data)
        block = with_files_in(block, directory, names)
        (directory / "teacher.json").write_text(
            json.dumps(block, indent=1)
        )  # written last: the cache is complete
        return self.teacher()

    def store_teacher(self, spec: dict, state_dict: dict[str, torch.Tensor]) -> nn.Module:
        teacher = build_from_spec(spec)
        teacher.load_state_dict(state_dict)
        save_checkpoint(self.teacher_path, teacher, card={"cached_by": self.user_id}, dtype="fp32")
        return teacher.eval()

    def teacher(self) -> nn.Module:
        if not self.has_teacher():
            raise RuntimeError(f"device {self.user_id}: no cached teacher; the server must send it first")
        onnx_block = self.onnx_teacher_dir / "teacher.json"
        if onnx_block.is_file():  # the same loader as the server's
            block = json.loads(onnx_block.read_text())
            wrapper = build_onnx_teacher(block).as_torch_teacher().eval()
            wrapper.config = block
            return wrapper
        return load_checkpoint(self.teacher_path)[0]

    # ------------------------------------------------------------------------------------------- targets
    def _target_path(self, name: str) -> Path:
        return self.root / "targets" / f"{name}.npy"

    def store_targets(self, targets: dict[str, np.ndarray]) -> None:
        for name, audio in targets.items():
            path = self._target_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.asarray(audio, dtype=np.float32))

    def has_targets(self, name: str) -> bool:
        return self._target_path(name).is_file()

    def targets(self, names: list[str]) -> list[np.ndarray]:
        missing = [n for n in names if not self.has_targets(n)]
        if missing:
            raise RuntimeError(f"device {self.user_id}: no pseudo-targets for chunks {missing}")
        return [np.load(self._target_path(n)) for n in names]
