"""Reports over finished run directories: PNG figures, a Markdown report and a self-contained HTML page.

``build_report([run_dir, ...], out_dir)`` reads each run (``users.csv``, ``summary.json``, ``evaluations.csv``,
``rounds.csv``, ``config.yaml``; see ``fedpse.results.store``; ``ledger.csv`` is only validated), draws the figures
and writes::

    OUT/report.md        the report, referencing figures/*.png
    OUT/report.html      the same report with the figures embedded (one file, no external references)
    OUT/figures/*.png    gain_distribution, gain_vs_minutes, gap_closure, tradeoffs

One module per step, each importing only those above it:

    run_files.py  reading and checking one run's files (CSV tables, summary.json, config.yaml); ReportError
    runs.py       run directories found, read, labelled and coloured (colours and order from results.modes)
    stats.py      gain statistics, adaptation curves, Pareto fronts, unit scales
    canvas.py     the figures' shared matplotlib helpers (Agg canvas, PNG bytes, styling)
    figures.py    the figures, pure: runs in, PNG bytes out; FIGURES names them with their captions
    tables.py     the tables
    document.py   the report as a list of blocks (headings, text, tables, figures)
    render.py     blocks as Markdown and as a self-contained HTML page

A mode's colour and place come from the strategies' registrations in ``fedpse.results.modes``: a process that
reports must have imported ``fedpse.federation.strategies`` first (``fedpse report`` does), or every mode is drawn
as an unregistered one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedpse.results.report.document import report_blocks
from fedpse.results.report.figures import FIGURES
from fedpse.results.report.render import render_html, render_markdown
from fedpse.results.report.run_files import ReportError
from fedpse.results.report.runs import Run, load_run, load_runs

__all__ = ["Report", "ReportError", "Run", "build_report", "default_out_dir", "load_run", "load_runs"]


@dataclass
class Report:
    """Where a report was written."""

    out_dir: Path
    markdown: Path
    html: Path
    figures: list[Path]
    runs: list[str]


def default_out_dir(paths: Sequence[str | Path]) -> Path:
    """``RUN_DIR/report`` for one directory, ``runs/report-<date>-<time>`` for several (like simulate's runs)."""
    if len(paths) == 1:
        return Path(paths[0]).expanduser() / "report"
    return Path("runs") / f"report-{time.strftime('%Y%m%d-%H%M%S')}"


def build_report(paths: Sequence[str | Path], out_dir: str | Path | None = None) -> Report:
    """Read the runs, draw every figure and write report.md, report.html and figures/*.png under ``out_dir``."""
    runs = load_runs(paths)
    out = Path(out_dir).expanduser() if out_dir is not None else default_out_dir(paths)
    figure_dir = out / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    figures = {name: draw(runs) for name, (draw, _) in FIGURES.items()}
    figure_paths = []
    for name, png in figures.items():
        path = figure_dir / f"{name}.png"
        path.write_bytes(png)
        figure_paths.append(path)
    blocks = report_blocks(runs, time.strftime("%Y-%m-%d %H:%M"))
    markdown = out / "report.md"
    markdown.write_text(render_markdown(blocks), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(blocks, figures), encoding="utf-8")
    return Report(out, markdown, page, figure_paths, [run.label for run in runs])
