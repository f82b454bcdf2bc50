"""The personalization guard in a federated run: where it runs, what it records, and that a round can never leave
a user below the generic student."""

from __future__ import annotations

import json

import pytest
import torch

from fedpse.cli import main
from fedpse.federation.device import Device, generic_student
from fedpse.federation.plan import RunPlan
from fedpse.federation.resume import replayed
from fedpse.results.store import RunStore
from tests.federation.test_run_safety import tiny_yaml

IDENTITY_TEACHER = [
    "student.checkpoint=builtin:student-2x32",
    "teacher.arch=identity",
    "adapt.guard=on",
    "adapt.guard_probe_seconds=8",
    "federation.num_rounds=2",
    "federation.steps_per_round=5",
]


@pytest.mark.ray
def test_a_teacher_that_returns_its_input_leaves_every_device_with_its_generic_student(
    tiny_world, tmp_path, capsys
):
    """Wherever the adaptation runs: on the device with the server's check of the teacher (pseudo_targets), on the
    device with its own teacher (teacher_weights), on the server (cloud_student)."""
    modes = ["pseudo_targets", "teacher_weights", "cloud_student"]
    config = tiny_yaml(tiny_world, tmp_path, *IDENTITY_TEACHER)
    assert (
        main(["simulate", config, "--modes", ",".join(modes), "--out", str(tmp_path / "runs"), "--quiet"])
        == 0
    )
    out = capsys.readouterr().out
    for mode in modes:
        assert f"{mode}: guard: kept the generic student for 3 of 3 users" in out
        run = tmp_path / "runs" / mode
        store, plan = RunStore(run), RunPlan.load(run)
        for attempt in store.read_table("attempts"):  # every round: the teacher check turned it down
            assert attempt["guard_decision"] == "kept_generic", mode
            assert float(attempt["guard_teacher_lead_db"]) < 0 and float(attempt["guard_macs"]) > 0
        generic = generic_student(plan).state_dict()
        for user in store.read_table("users"):
            assert user["guard_decision"] == "kept_generic" and float(user["gain_db"]) == pytest.approx(
                0, abs=1e-6
            )
            unguarded = float(
                user["si_sdr_unguarded"]
            )  # the fine-tuned student the guard turned down, scored
            gain = unguarded - float(user["si_sdr_generic"])
            assert float(user["gain_unguarded_db"]) == pytest.approx(gain, abs=1e-5)
            kept = Device(plan, user["user"]).student().state_dict()
            assert all(torch.equal(kept[k], generic[k]) for k in generic)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["guard"] == {"adopted": 0, "kept_generic": 3}
        assert summary["mean"]["gain_unguarded_db"] is not None
    ledger = RunStore(tmp_path / "runs" / "pseudo_targets").read_table("ledger")
    sent = [r for r in ledger if r["kind"] == "pseudo_targets"]
    assert sent and all(
        float(r["server_macs"]) > 0 for r in sent
    )  # the server's check of the teacher is charged
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Personalization guard" in report and "kept_generic" in report


def test_a_resumed_run_replays_the_guard_decision_of_each_committed_round(tmp_path):
    attempt = {
        "status": "ok",
        "error": "",
        "injected": "",
        "adapted": "1",
        "steps": "5",
        "sim_seconds": "1.5",
        "deadline_s": "",
        "guard_decision": "kept_generic",
        "guard_generic_db": "7.25",
        "guard_personalized_db": "6.5",
        "guard_teacher_lead_db": "",
        "guard_macs": "1000",
    }
    evaluation = {"si_sdr_generic": "7", "si_sdr_personalized": "7", "si_sdr_unguarded": "6"}
    parsed, scores = replayed(RunStore(tmp_path), "u0000", 1, attempt, evaluation)
    assert parsed["guard_decision"] == "kept_generic" and parsed["guard_generic_db"] == 7.25
    assert parsed["guard_teacher_lead_db"] != parsed["guard_teacher_lead_db"]  # NaN: not measured
    assert scores["si_sdr_unguarded"] == 6.0
    before_the_guard = {k: v for k, v in attempt.items() if not k.startswith("guard")}
    parsed, _ = replayed(RunStore(tmp_path), "u0000", 1, before_the_guard, evaluation)
    assert not any(k.startswith("guard") for k in parsed)
