"""`fedpse report`: figures, Markdown and a self-contained HTML page from finished run directories.

The run directories are written here with RunStore, as a finished `fedpse simulate --modes` would leave them
(no Ray, no models): two modes on the same four users, one of whom failed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

import fedpse.federation.strategies  # noqa: F401  each mode registers its colour and order for reports
from fedpse.cli import main
from fedpse.config import load_config
from fedpse.results.modes import MODE_STYLES, ModeStyle
from fedpse.results.report import ReportError, build_report, load_run, load_runs
from fedpse.results.report.document import pareto_lines
from fedpse.results.report.figures import FIGURES
from fedpse.results.report.runs import SPARE_COLORS, label_runs
from fedpse.results.report.stats import pareto_front
from fedpse.results.store import RunStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
USERS = ["u0000", "u0001", "u0002", "u0003"]
# Per user: noisy, generic, teacher SI-SDR (dB); u0003 fails on its device in every mode.
SCORES = {"u0000": (-3.6, 2.8, 4.9), "u0001": (2.8, 10.9, 12.2), "u0002": (-3.9, 3.7, 5.5)}
# Per mode: final gain per scored user, what each user sends up / receives, device and server MACs per user.
MODES = {
    "pseudo_targets": {
        "gains": {"u0000": 0.74, "u0001": 0.90, "u0002": -0.35},
        "costs": {
            "bytes_up": 1.25e6,
            "bytes_down": 1.92e6,
            "audio_seconds_exposed": 60.0,
            "device_macs": 1.8e10,
            "server_macs": 9.9e9,
        },
    },
    "teacher_weights": {
        "gains": {"u0000": 0.75, "u0001": 0.91, "u0002": 0.05},
        "costs": {
            "bytes_up": 357.0,
            "bytes_down": 5.26e6,
            "audio_seconds_exposed": 0.0,
            "device_macs": 2.8e10,
            "server_macs": 0.0,
        },
    },
}


def write_run(root: Path, mode: str) -> Path:
    """A finished two-round run of ``mode`` on USERS, written through RunStore."""
    spec = MODES[mode]
    store = RunStore.create(
        root, load_config(overrides=[f"federation.mode={mode}", "federation.num_rounds=2"])
    )
    users, evaluations = [], []
    for user in USERS:
        costs = {k: (0.0 if user == "u0003" else v) for k, v in spec["costs"].items()}
        if user == "u0003":
            users.append(
                {"user": user, "status": "failed", "error": "RuntimeError: device out of memory", **costs}
            )
            continue
        noisy, generic, teacher = SCORES[user]
        gain = spec["gains"][user]
        for rnd, fraction in ((1, 0.7), (2, 1.0)):
            evaluations.append(
                {
                    "round": rnd,
                    "user": user,
                    "si_sdr_noisy": noisy,
                    "si_sdr_generic": generic,
                    "si_sdr_personalized": generic + fraction * gain,
                    "si_sdr_teacher": teacher,
                    "gain_db": fraction * gain,
                    "adapt_audio_seconds": 30.0 * rnd,
                    "steps": 30,
                }
            )
        users.append(
            {
                "user": user,
                "status": "ok",
                "rounds_selected": 2,
                "rounds_completed": 2,
                "si_sdr_noisy": noisy,
                "si_sdr_generic": generic,
                "si_sdr_personalized": generic + gain,
                "si_sdr_teacher": teacher,
                "si_sdri_db": generic + gain - noisy,
                "gain_db": gain,
                "gap_closure": gain / (teacher - generic),
                "audio_minutes_used": 1.0,
                "adapt_steps": 60,
                **costs,
            }
        )
    for row in evaluations:
        store.append("evaluations", row)
    for rnd in (1, 2):
        store.append(
            "rounds", {"round": rnd, "selected": 4, "completed": 3, "failed": 1, "wall_seconds": 12.5}
        )
    store.append("ledger", {"round": 1, "user": "u0000", "direction": "up", "kind": "metrics", "bytes": 120})
    store.write_table("users", users)
    totals = {k: v * 3 for k, v in spec["costs"].items()}
    store.write_summary(
        {
            "mode": mode,
            "users": 4,
            "rounds": 2,
            "fraction": 1.0,
            "users_ok": 3,
            "users_failed": ["u0003"],
            "mean": {"gain_db": sum(spec["gains"].values()) / 3},
            "totals": totals,
            "per_user": {k: v / 4 for k, v in totals.items()},
            "wall_seconds": 31.4,
        }
    )
    return root


@pytest.fixture(scope="module")
def modes_dir(tmp_path_factory) -> Path:
    """``simulate --modes`` layout: one run directory per mode under one folder."""
    root = tmp_path_factory.mktemp("modes")
    for mode in MODES:
        write_run(root / mode, mode)
    return root


@pytest.fixture(scope="module")
def report(modes_dir):
    """`fedpse report MODES_DIR`: the folder's runs, reported into MODES_DIR/report; what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", str(modes_dir)]) == 0
    out = modes_dir / "report"
    figures = sorted((out / "figures").glob("*.png"))
    return SimpleNamespace(
        out_dir=out,
        markdown=out / "report.md",
        html=out / "report.html",
        figures=figures,
        printed=printed.getvalue(),
    )


def copy_run(modes_dir: Path, tmp_path: Path, mode: str = "pseudo_targets") -> Path:
    return Path(shutil.copytree(modes_dir / mode, tmp_path / mode))


def test_every_figure_is_a_valid_png(report):
    names = sorted(p.name for p in report.figures)
    assert names == sorted(f"{name}.png" for name in FIGURES)
    for path in report.figures:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), path
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.width > 400 and image.height > 200


def test_html_is_self_contained(report):
    page = report.html.read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page))
    assert not re.search(r"https?://|<link|<script|url\(", page)


def test_markdown_lists_improved_share_and_worst_users(report):
    text = report.markdown.read_text()
    assert "pseudo_targets: 2 of 3 users improved (67 %)" in text
    assert "teacher_weights: 3 of 3 users improved (100 %)" in text
    worst = text.split("### Worst users")[1].split("##")[0]
    assert worst.index("| pseudo_targets | u0002 | ok |") < worst.index("| pseudo_targets | u0000 | ok |")
    assert "-0.35" in worst
    assert "u0003 | failed | RuntimeError: device out of memory" in text
    for name in FIGURES:
        assert f"(figures/{name}.png)" in text
        assert (report.out_dir / "figures" / f"{name}.png").is_file()


def test_costs_table_and_pareto_front(report):
    text = report.markdown.read_text()
    costs = text.split("## Costs per mode")[1].split("##")[0]
    # Three users sent 1.25 MB and 60 s of raw audio each, received 1.92 MB; the failed one nothing.
    assert "| run | up / user (kB) | down / user (MB) | audio exposed / user (s) |" in costs
    assert "| pseudo_targets | 937.50 | 1.44 | 45.0 | 180 |" in costs
    assert "privacy: raw audio uploaded: teacher_weights" in text  # no audio and a higher gain
    assert "device compute: pseudo_targets, teacher_weights" in text  # cheaper vs better


def test_cli_reports_a_folder_of_runs_into_it(report, modes_dir):
    assert "report of 2 run(s) (pseudo_targets, teacher_weights)" in report.printed
    assert str(modes_dir / "report" / "report.md") in report.printed
    assert str(modes_dir / "report" / "report.html") in report.printed


def test_tolerates_extra_columns_empty_values_and_unknown_summary_blocks(modes_dir, tmp_path):
    run_dir = copy_run(modes_dir, tmp_path, "teacher_weights")
    path = run_dir / "users.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["device_clock_seconds"] = "" if row["user"] == "u0001" else "41.5"
        row["gap_closure"] = ""  # recomputed from the scores
    rows[0]["status"] = "retried"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0].keys()])
        writer.writeheader()
        writer.writerows(rows)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["cold_start"] = {"rounds": 3, "mean_gain_db": 0.42, "bytes": {"down": 1.5e6}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "evaluations.csv").unlink()  # no per-round scores: that figure says so instead

    report = build_report([run_dir], tmp_path / "out")
    text = report.markdown.read_text()
    assert "| cold_start.bytes.down | 1500000 |" in text
    assert "1 retried" in text
    assert len(report.figures) == len(FIGURES)
    run = load_run(run_dir)
    assert run.gap_closures()[0] == pytest.approx(0.75 / (4.9 - 2.8), rel=1e-4)


def test_same_mode_twice_is_labelled_by_folder(modes_dir, tmp_path):
    runs = [load_run(modes_dir / "pseudo_targets"), load_run(copy_run(modes_dir, tmp_path))]
    label_runs(runs)
    assert runs[0].label != runs[1].label
    assert all(run.label.startswith("pseudo_targets (") for run in runs)
    assert runs[0].color != runs[1].color


def test_mode_colour_order_and_reference_come_from_the_registry(modes_dir, tmp_path, monkeypatch):
    """A mode looks as its strategy registered it; a mode nobody registered gets a spare colour and sorts last."""
    monkeypatch.setitem(MODE_STYLES, "teacher_weights", ModeStyle("#123456", order=-1, reference=True))
    monkeypatch.setitem(MODE_STYLES, "pseudo_targets", ModeStyle("#abcdef", order=5))
    folder = tmp_path / "modes"
    for mode in MODES:
        shutil.copytree(modes_dir / mode, folder / mode)
    mystery = Path(shutil.copytree(modes_dir / "pseudo_targets", folder / "a_mystery_mode"))
    summary = json.loads((mystery / "summary.json").read_text())
    (mystery / "summary.json").write_text(json.dumps({**summary, "mode": "a_mystery_mode"}))

    runs = load_runs([folder])
    assert [(run.mode, run.color, run.reference) for run in runs] == [
        ("teacher_weights", "#123456", True),
        ("pseudo_targets", "#abcdef", False),
        ("a_mystery_mode", SPARE_COLORS[0], False),
    ]
    assert all("teacher_weights" not in line for line in pareto_lines(runs))  # a reference is not deployable


def test_pareto_front_treats_equal_gains_as_ties():
    # cost, gain: a free baseline, two runs with the same gain (the cheaper wins), a better and dearer one.
    costs = [0.0, 1.0, 2.0, 3.0, float("nan")]
    gains = [0.0, 0.93, 0.9301, 1.5, 9.0]
    assert pareto_front(costs, gains) == [0, 1, 3]


def test_missing_run_directory(tmp_path):
    with pytest.raises(ReportError, match="no such run directory"):
        build_report([tmp_path / "nope"], tmp_path / "out")


def test_unfinished_run_names_the_missing_file(modes_dir, tmp_path):
    run_dir = copy_run(modes_dir, tmp_path)
    (run_dir / "users.csv").unlink()
    with pytest.raises(ReportError, match=r"users\.csv: missing — is this a finished fedpse run directory"):
        build_report([run_dir], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_summary_names_file_and_line(modes_dir, tmp_path):
    run_dir = copy_run(modes_dir, tmp_path)
    (run_dir / "summary.json").write_text('{\n "mode": "pseudo_targets",\n "users": 4,,\n}\n')
    with pytest.raises(ReportError, match=r"summary\.json, line 3, column \d+: not valid JSON"):
        load_run(run_dir)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda text: text + "u0004,ok,2\n", r"users\.csv, line 6: 3 fields where the header has \d+"),
        (
            lambda text: text.replace(",60,", ",sixty,", 1),
            r"users\.csv, line 2: column adapt_steps = 'sixty'",
        ),
        (lambda text: "", r"users\.csv: empty — expected a CSV header"),
        (lambda text: "name,score\nx,1\n", r"users\.csv, line 1: no column\(s\) user"),
    ],
)
def test_corrupt_users_table_names_file_and_line(modes_dir, tmp_path, damage, expected):
    run_dir = copy_run(modes_dir, tmp_path)
    path = run_dir / "users.csv"
    path.write_text(damage(path.read_text()))
    with pytest.raises(ReportError, match=expected):
        load_run(run_dir)


def test_cli_error_path(modes_dir, tmp_path, capsys):
    run_dir = copy_run(modes_dir, tmp_path)
    (run_dir / "summary.json").unlink()
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedpse: error: ") and f"{run_dir / 'summary.json'}: missing" in err
