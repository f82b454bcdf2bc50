"""What the studies in ``simulations/`` share: presets, the output folder, errors, Markdown tables, memory sampling.

The study scripts run as ``python simulations/<study>.py`` (this folder is then first on ``sys.path``); tests import
them after putting this folder on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CONFIG_DIR = HERE / "configs"
RESULTS_DIR = HERE / "results"
REPO = HERE.parent


class StudyError(ValueError):
    """A problem the user can fix (bad argument, missing checkpoint, unusable --out); printed as one line."""


def run_main(
    prog: str,
    main: Callable[[list[str] | None], Any],
    argv: list[str] | None = None,
    resumable: bool = False,
) -> None:
    """Call ``main(argv)``; a ``StudyError`` or fedpse ``ConfigError``/``WorldError`` ends as one line on stderr, and
    so does Ctrl-C (exit 130), saying whether the same command picks up the rows already written (``resumable``: the
    study keeps its finished rows and reuses them)."""
    from fedpse.config import ConfigError
    from fedpse.world.reader import WorldError

    try:
        main(argv)
    except (StudyError, ConfigError, WorldError) as err:
        sys.exit(f"{prog}: error: {err}")
    except KeyboardInterrupt:
        how = (
            "the rows finished so far are kept; the same command continues from them"
            if resumable
            else "nothing is resumed; the same command starts over"
        )
        print(f"\n{prog}: interrupted ({how})", file=sys.stderr)
        sys.exit(130)


# ------------------------------------------------------------------------------------------------ presets
def load_preset(study: str, quick: bool, path: str | Path | None = None) -> dict:
    """The ``full`` or ``quick`` block of ``configs/<study>.yaml`` (or of the YAML file at ``path``)."""
    path = Path(path) if path else CONFIG_DIR / f"{study}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise StudyError(f"--config {path}: cannot read it ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise StudyError(f"--config {path}: not valid YAML ({err})") from None
    name = "quick" if quick else "full"
    if not isinstance(data, dict) or not isinstance(data.get(name), dict):
        raise StudyError(f"--config {path}: expected a mapping with a '{name}' block")
    return dict(data[name])


def check_names(names: Sequence[str], available: dict, flag: str, what: str) -> None:
    """A one-line StudyError for the first of ``names`` that is not a key of the preset's ``available`` block."""
    unknown = [n for n in names if n not in available]
    if unknown:
        raise StudyError(f"{flag}: unknown {what} {unknown[0]!r}; expected some of {', '.join(available)}")


# ------------------------------------------------------------------------------------------------ output folder
def prepare_out(out: str | Path) -> Path:
    """Create ``out`` (and parents), check that files can be written there, and take its lock (a second study
    writing the same folder at once is refused, naming the holder's pid)."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise StudyError(f"--out {path}: exists and is not a folder")
    from fedpse.paths import UnwritableDirError, ensure_writable_dir
    from fedpse.results.lock import RunLockedError, hold

    try:
        ensure_writable_dir(path, "--out")
    except UnwritableDirError as err:
        raise StudyError(f"--out {err}") from None

    try:
        hold(path)  # one writer per output folder, held until the study's process ends
    except RunLockedError as err:
        raise StudyError(f"--out {err}") from None
    return path


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default, allow_nan=True) + "\n")
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


# ------------------------------------------------------------------------------------------------ tables
def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; every cell is ``str()``-ed and ``|`` escaped."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {list(row)} has {len(row)} cells, the table {len(headers)} columns")

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def num(value: float | None, digits: int = 2, signed: bool = False) -> str:
    """A number for a table: ``–`` when missing/NaN, ``∞`` when infinite, minus signs as in the README."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text.replace("-", "−")


def ratio(gain: float, cost: float) -> float:
    """``gain / cost``; ``inf`` for a positive gain at zero cost, NaN for no gain at zero cost."""
    if cost > 0:
        return gain / cost
    if gain > 0:
        return math.inf
    return math.nan


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# ------------------------------------------------------------------------------------------------ memory
def peak_rss_sampler():
    """``benchmarks/proctree.py``'s ``PeakRSS`` class (the benchmarks import it as a sibling; so do we, by path)."""
    name = "fedpse_benchmarks_proctree"
    if name in sys.modules:
        return sys.modules[name].PeakRSS
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "proctree.py")
    if spec is None or spec.loader is None:
        raise StudyError(f"{REPO / 'benchmarks' / 'proctree.py'}: not found (memory sampling needs it)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.PeakRSS
