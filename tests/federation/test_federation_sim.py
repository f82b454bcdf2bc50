"""Real Flower + Ray simulations of 3 devices, every delivery mode on the same users, one Ray start-up.

Every message the server sends or receives is captured as it is charged to the ledger, so the checks below are
made on the messages themselves, not on flags.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from fedpse.distill.adapt import adapt
from fedpse.federation import payloads
from fedpse.federation.plan import RunPlan, select_users
from fedpse.federation.runner import simulate_many
from fedpse.models.checkpoints import load_checkpoint
from fedpse.results.store import RunStore
from tests.federation.test_federation_parts import tiny_run_config

pytestmark = pytest.mark.ray  # every test here runs a real Flower + Ray simulation

FAST = [
    "federation.num_rounds=2",
    "federation.chunks_per_round=1",
    "federation.steps_per_round=3",
    "adapt.eval_every=2",
]
RUNS = {
    "pseudo_targets": ["federation.fail_users=[u0002]"],
    "teacher_weights": ["federation.max_in_flight=1"],
    "cloud_student": [
        "federation.fraction=0.67",
        "federation.upload_codec=lossy",
        "federation.weights_precision=int8",
    ],
    "generic": ["federation.num_users=2"],  # 3 devices for 2 users: one spare device registers too
    "oracle_clean": [],
}


@pytest.fixture(scope="module")
def runs(tiny_world, tmp_path_factory):
    """Run every mode once; return {mode: (plan, summary, [(row, message), ...])}."""
    root = tmp_path_factory.mktemp("fed")
    configs = [
        (tiny_run_config(tiny_world, *FAST, f"federation.mode={mode}", *extra), root / mode)
        for mode, extra in RUNS.items()
    ]
    seen: dict[Path, list] = defaultdict(list)
    summaries = simulate_many(
        configs, progress=False, observers=(lambda d, row, msg: seen[d].append((row, msg)),)
    )
    return {
        mode: (RunPlan.load(run_dir), summary, seen[run_dir.resolve()])
        for (cfg, run_dir), mode, summary in zip(configs, RUNS, summaries, strict=True)
    }


def test_every_mode_completes_and_writes_its_run_directory(runs):
    for mode, (plan, summary, messages) in runs.items():
        store = RunStore(plan.run_dir)
        assert summary["mode"] == mode and store.read_summary()["mode"] == mode
        assert len(store.read_table("users")) == len(plan.users) == (2 if mode == "generic" else 3)
        assert [r["round"] for r in store.read_table("rounds")] == ["1", "2"]
        assert len(store.read_table("ledger")) == len(messages)
        expected_ok = {
            "pseudo_targets": 2,
            "cloud_student": summary["users"] - summary["users_not_selected"],
            "generic": 2,
        }
        assert summary["users_ok"] == expected_ok.get(mode, 3), mode
        assert summary["mean"]["si_sdr_personalized"] is not None
        assert summary["simulation"]["fast_engine"] is True  # fedpse's feeder replaced Flower's polling loop


def test_ledger_bytes_are_the_real_sizes_of_the_messages_sent(runs):
    for mode, (plan, _, messages) in runs.items():
        replies = {msg.metadata.reply_to_message_id: msg for row, msg in messages if row.direction == "up"}
        for row, msg in messages:
            real = sum(r.count_bytes() for r in msg.content.values()) if msg.has_content() else 0
            assert row.bytes == real
            reply = replies.get(msg.metadata.message_id) if row.direction == "down" else None
            if reply is not None and reply.has_content() and "device" in reply.content.metric_records:
                assert (
                    reply.content["device"]["bytes_received"] == row.bytes
                )  # what arrived is what was charged
        on_disk = sum(int(r["bytes"]) for r in RunStore(plan.run_dir).read_table("ledger"))
        assert on_disk == sum(row.bytes for row, _ in messages), mode


def test_teacher_weights_sends_no_audio_up_and_the_teacher_once(runs):
    plan, summary, messages = runs["teacher_weights"]
    up = [msg for row, msg in messages if row.direction == "up"]
    assert up and all(not msg.content.array_records for msg in up)  # metrics and control only
    assert summary["totals"]["audio_seconds_exposed"] == 0
    downloads = [(row, msg) for row, msg in messages if row.kind == "teacher_weights"]
    assert sorted(row.user for row, _ in downloads) == plan.users  # once per device, in round 1 only
    assert {row.round for row, _ in downloads} == {1}
    teacher_bytes = downloads[0][1].content["teacher"].count_bytes()
    params = summary["teacher_params"]
    assert 2 * params < teacher_bytes < 2 * params + 4000  # fp16 weights + array headers


def test_uploads_are_the_users_noisy_chunks_and_count_as_exposure(runs):
    plan, summary, messages = runs["pseudo_targets"]
    uploads = [(row, msg) for row, msg in messages if row.kind == "noisy_audio" and row.status == "ok"]
    assert {row.user for row, _ in uploads} == {"u0000", "u0001"}  # u0002's device failed
    for row, msg in uploads:
        (name,) = msg.content["audio"].keys()
        audio = payloads.decode_audio_record(msg.content["audio"])[name]
        np.testing.assert_array_equal(audio, plan.world.load(row.user, name, "noisy"))
        assert row.audio_seconds == pytest.approx(len(audio) / 16000) and row.codec == "flac"
    assert summary["totals"]["audio_seconds_exposed"] == pytest.approx(
        sum(r.audio_seconds for r, _ in uploads)
    )


def test_devices_never_receive_clean_audio(runs):
    for mode, (plan, _, messages) in runs.items():
        clean = {}
        for user in plan.users:
            for part in ("adapt", "test"):
                for seg in plan.world.segments(user, part):
                    clean[(user, seg["name"])] = plan.world.load(user, seg["name"], "clean")
        for row, msg in messages:
            if row.direction != "down":
                continue
            for record in msg.content.array_records.values():
                assert not any(arr.stype in payloads.AUDIO_STYPES.values() for arr in record.values())
                for name, value in payloads._decode_arrays(record).items():
                    ref = clean.get((row.user, name))
                    if ref is not None and len(ref) == value.size:
                        assert not np.allclose(value, ref, atol=1e-3), (mode, row.user, name)


def test_the_personalized_student_persists_across_rounds(runs):
    plan, _, _ = runs["pseudo_targets"]
    device = plan.device_dir("u0000")
    student, card = load_checkpoint(device / "student.pt")
    assert card["round"] == 2
    chunks = plan.chunk_names("u0000")[:2]
    noisy = [plan.world.load("u0000", n, "noisy") for n in chunks]
    targets = [np.load(device / "targets" / f"{n}.npy") for n in chunks]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = plan.generic_student()
        adapt(expected, noisy[:1], targets[:1], plan.round_adapt(), seed=plan.adapt_seed("u0000", 1))
        from_scratch = copy.deepcopy(plan.generic_student())
        for model in (expected, from_scratch):
            adapt(model, noisy, targets, plan.round_adapt(), seed=plan.adapt_seed("u0000", 2))
    finally:
        torch.set_num_threads(threads)

    def same(a, b):
        return all(torch.allclose(a.state_dict()[k], b.state_dict()[k], atol=1e-5) for k in a.state_dict())

    assert same(student, expected)  # round 2 continued from round 1's student ...
    assert not same(student, from_scratch)  # ... not from the generic one


def test_a_failing_device_is_recorded_and_the_run_goes_on(runs):
    plan, summary, messages = runs["pseudo_targets"]
    users = {r["user"]: r for r in RunStore(plan.run_dir).read_table("users")}
    assert users["u0002"]["status"] == "failed" and "injected device failure" in users["u0002"]["error"]
    assert users["u0002"]["rounds_selected"] == "2" and users["u0002"]["rounds_completed"] == "0"
    assert users["u0000"]["status"] == users["u0001"]["status"] == "ok"
    errors = [row for row, _ in messages if row.status == "error"]
    assert {(row.user, row.round) for row in errors} == {("u0002", 1), ("u0002", 2)}
    assert [r["failed"] for r in RunStore(plan.run_dir).read_table("rounds")] == ["1", "1"]
    assert summary["users_failed"] == ["u0002"]


def test_selection_follows_the_seeded_draw_over_user_ids(runs):
    plan, _, messages = runs["cloud_student"]
    for r in (1, 2):
        sent_to = sorted({row.user for row, _ in messages if row.round == r and row.direction == "down"})
        assert sent_to == select_users(plan.users, 0.67, plan.cfg.seed, r)
        assert len(sent_to) == 2


def test_ledger_records_codec_and_precision_as_sent(runs):
    _, _, messages = runs["cloud_student"]
    uploads = [(row, msg) for row, msg in messages if row.kind == "noisy_audio"]
    assert uploads and all(row.codec == "lossy" for row, _ in uploads)
    assert all(arr.stype == "audio/ogg-opus" for _, m in uploads for arr in m.content["audio"].values())
    students = [(row, msg) for row, msg in messages if row.kind == "student_weights"]
    assert students and all(row.precision == "int8" for row, _ in students)
    assert all(payloads.record_precision(m.content["student"]) == "int8" for _, m in students)
    assert all(row.server_macs > 0 for row, _ in students)  # the student's fine-tuning ran on the server


def test_cost_totals_make_sense_side_by_side(runs):
    totals = {mode: s["totals"] for mode, (_, s, _) in runs.items()}
    assert (
        totals["generic"]["bytes_down"] < 1000 and totals["generic"]["device_macs"] == 0
    )  # registration only
    assert totals["teacher_weights"]["device_macs"] > totals["pseudo_targets"]["device_macs"] > 0  # + teacher
    assert totals["pseudo_targets"]["server_macs"] > 0 and totals["teacher_weights"]["server_macs"] == 0
    assert totals["cloud_student"]["device_macs"] == 0 and totals["cloud_student"]["server_macs"] > 0
    assert totals["oracle_clean"]["audio_seconds_exposed"] == 0


def test_at_most_max_in_flight_users_are_in_conversation_at_once(runs):
    _, _, messages = runs["teacher_weights"]  # max_in_flight=1: one user's exchange after another
    order = [row.user for row, _ in messages if row.round > 0]
    runs_of_users = [u for i, u in enumerate(order) if i == 0 or order[i - 1] != u]
    assert len(runs_of_users) == 2 * 3  # 2 rounds x 3 users, never interleaved


def test_devices_register_before_any_round_and_a_spare_device_carries_no_user(runs):
    _, _, messages = runs["generic"]  # 3 simulated devices, 2 users in this run
    hellos = [row for row, _ in messages if row.message_type == "query.hello" and row.direction == "up"]
    assert sorted(row.user for row in hellos) == ["", "u0000", "u0001"]
    assert all(row.round == 0 for row in hellos)
