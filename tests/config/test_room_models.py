"""Users in rooms get the dereverberation models unless the config names its own: resolved when the config is
loaded, said in one line, and recorded in the run's config.yaml (so a resumed run uses the same checkpoints)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import yaml

from fedpse.cli import main
from fedpse.config import dump_config, load_config
from fedpse.distill.cache import model_key
from fedpse.models import zoo
from fedpse.models.checkpoints import load_checkpoint, save_checkpoint

ROOMS = ["world.room.enabled=true", "world.room.target=early"]
DEREVERB = {"student": "student-2x32-dereverb", "teacher": "teacher-gru-log-dereverb"}


def standin_builtins(folder: Path) -> Path:
    """A builtin folder with the shipped denoising-only 2×32 student and GRU-log teacher, and stand-ins for their
    dereverberation versions (the same networks with other weights, so a test can tell which one was loaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    for role, name in DEREVERB.items():
        shipped = zoo.BUILTIN_DIR / f"{name.removesuffix('-dereverb')}.pt"
        (folder / shipped.name).write_bytes(shipped.read_bytes())
        target = folder / f"{name}.pt"
        if not target.is_file():
            model, _ = load_checkpoint(shipped)
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(0.5)
            save_checkpoint(target, model, {"role": role, "stand_in": True})
    return folder


@pytest.fixture
def builtins(tmp_path, monkeypatch) -> Path:
    """``builtin:NAME`` resolved in a folder holding stand-in dereverberation checkpoints."""
    folder = standin_builtins(tmp_path / "checkpoints")
    monkeypatch.setattr(zoo, "BUILTIN_DIR", folder)
    return folder


def test_rooms_pick_the_dereverberation_models_when_the_config_names_none():
    notes: list[str] = []
    cfg = load_config(overrides=ROOMS, notes=notes)
    assert cfg.student.checkpoint == "builtin:student-2x32-dereverb"
    assert cfg.teacher.checkpoint == "builtin:teacher-gru-log-dereverb"
    assert len(notes) == 1 and "joint denoising + dereverberation" in notes[0]
    assert "builtin:student-2x32-dereverb" in notes[0] and "builtin:teacher-gru-log-dereverb" in notes[0]


def test_without_rooms_nothing_changes_and_nothing_is_said():
    notes: list[str] = []
    cfg = load_config(notes=notes)
    assert cfg.student.checkpoint == "builtin:student-2x32"
    assert cfg.teacher.checkpoint == "builtin:teacher-gru-log"
    assert notes == []


def test_checkpoints_the_config_names_are_kept_and_denoising_only_ones_are_said():
    notes: list[str] = []
    cfg = load_config(
        overrides=[
            *ROOMS,
            "student.checkpoint=builtin:student-2x32",
            "teacher.checkpoint=builtin:teacher-gru-log",
        ],
        notes=notes,
    )
    assert cfg.student.checkpoint == "builtin:student-2x32"
    assert cfg.teacher.checkpoint == "builtin:teacher-gru-log"
    assert len(notes) == 1 and "are denoising-only models" in notes[0]
    # one named, one left to the default: the other still gets its dereverberation model, both are said
    notes = []
    cfg = load_config(overrides=[*ROOMS, "teacher.checkpoint=null"], notes=notes)
    assert cfg.teacher.checkpoint is None and cfg.student.checkpoint == "builtin:student-2x32-dereverb"
    assert "denoising-only" not in notes[0]


def test_a_config_file_that_names_the_key_counts_as_named(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"world": {"room": {"enabled": True}}, "student": {"checkpoint": None}}))
    cfg = load_config(path)
    assert cfg.student.checkpoint is None  # random init, as the file says
    assert cfg.teacher.checkpoint == "builtin:teacher-gru-log-dereverb"


def test_other_architectures_keep_their_defaults():
    """There is no dereverberation model of another size or kind: those keep the (denoising) default."""
    cfg = load_config(overrides=[*ROOMS, "teacher.arch=convtasnet", "student.hidden=64"])
    assert cfg.teacher.checkpoint == "builtin:teacher-gru-log"
    assert cfg.student.checkpoint == "builtin:student-2x32"


def test_the_saved_config_names_the_checkpoint_so_reloading_it_keeps_it(tmp_path):
    """A run's config.yaml holds the resolved checkpoint: loading it again (resume) keeps it, with rooms or not."""
    path = dump_config(load_config(overrides=ROOMS), tmp_path / "config.yaml")
    assert yaml.safe_load(path.read_text())["student"]["checkpoint"] == "builtin:student-2x32-dereverb"
    notes: list[str] = []
    again = load_config(path, notes=notes)
    assert again.student.checkpoint == "builtin:student-2x32-dereverb"
    assert again.teacher.checkpoint == "builtin:teacher-gru-log-dereverb"
    assert notes == []  # nothing chosen for the user, nothing denoising-only


def test_the_chosen_checkpoints_are_the_ones_loaded(builtins):
    cfg = load_config(overrides=ROOMS)
    student, _ = zoo.load_student(cfg)
    teacher, _ = zoo.load_teacher(cfg)
    assert model_key(student) == model_key(load_checkpoint(builtins / "student-2x32-dereverb.pt")[0])
    assert model_key(teacher) == model_key(load_checkpoint(builtins / "teacher-gru-log-dereverb.pt")[0])
    assert model_key(student) != model_key(load_checkpoint(builtins / "student-2x32.pt")[0])


def test_simulate_prints_the_models_and_saves_them_in_the_run_config(builtins, tmp_path, monkeypatch):
    """`fedpse simulate` with rooms: one line on which models and why, before the run; the run gets the config with
    the dereverberation checkpoints (the runner itself is replaced: this is about what it is given)."""
    import fedpse.federation.runner as runner

    given = []

    def fake_simulate_many(runs, progress, verbose):
        given.extend(runs)
        return []

    monkeypatch.setattr(runner, "simulate_many", fake_simulate_many)
    monkeypatch.setattr(runner, "summary_table", lambda summaries: "")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            ["simulate", "--out", str(tmp_path / "run"), "--modes", "pseudo_targets,generic"]
            + [f"--set={o}" for o in ROOMS]
        )
    assert code == 0
    lines = [line for line in printed.getvalue().splitlines() if "dereverberation" in line]
    assert len(lines) == 1 and lines[0].startswith("fedpse: users are in rooms")
    assert [cfg.student.checkpoint for cfg, _ in given] == ["builtin:student-2x32-dereverb"] * 2
    assert {cfg.teacher.checkpoint for cfg, _ in given} == {"builtin:teacher-gru-log-dereverb"}
