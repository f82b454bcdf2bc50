"""fedavg_generic: Flower's FedAvg/FedAdam fold personalized students' deltas into a new generic student."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpse.federation.strategies.fedavg_generic import DeltaAggregator


def _deltas(n: int, seed: int = 0) -> list[tuple[dict[str, np.ndarray], float]]:
    rng = np.random.default_rng(seed)
    return [
        (
            {
                "w": rng.standard_normal((3, 4)).astype(np.float32),
                "b": rng.standard_normal(4).astype(np.float32),
            },
            float(rng.integers(10, 100)),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("group", [1, 3, 32])
def test_fedavg_in_groups_is_the_exact_weighted_mean(group):
    deltas = _deltas(7)
    agg = DeltaAggregator("fedavg", group=group)
    for delta, weight in deltas:
        agg.add(delta, weight)
    out = agg.result()
    total = sum(w for _, w in deltas)
    for key in ("w", "b"):
        expected = sum(d[key] * w for d, w in deltas) / total
        np.testing.assert_allclose(out[key], expected, rtol=1e-5, atol=1e-6)
    assert agg.count == 7


def test_fedadam_steps_along_the_mean_delta_with_the_server_learning_rate():
    deltas = _deltas(5, seed=1)
    agg = DeltaAggregator("fedadam", server_lr=1e-3, group=2)
    for delta, weight in deltas:
        agg.add(delta, weight)
    out = agg.result()
    mean = DeltaAggregator("fedavg")
    for delta, weight in deltas:
        mean.add(delta, weight)
    avg = mean.result()
    for key in out:
        agree = np.sign(out[key]) == np.sign(avg[key])
        assert agree.all()
        assert np.abs(out[key]).max() < 1e-2  # an Adam step of size ~eta, not the raw delta


def test_bad_weights_and_empty_aggregates_are_refused():
    agg = DeltaAggregator()
    with pytest.raises(ValueError, match="weight must be positive"):
        agg.add({"w": np.zeros(2, np.float32)}, 0.0)
    with pytest.raises(ValueError, match="no deltas"):
        agg.result()


# ---------------------------------------------------------------------------------------------- in a simulation
@pytest.fixture(scope="module")
def fedavg_runs(tiny_world, tmp_path_factory):
    """Two devices personalize (teacher_weights), share deltas; the third user of the world is held out."""
    from fedpse.federation.runner import simulate_many
    from tests.federation.test_federation_parts import tiny_run_config

    root = tmp_path_factory.mktemp("fedavg")
    common = [
        "federation.mode=fedavg_generic",
        "federation.num_users=2",
        "federation.num_rounds=2",
        "federation.chunks_per_round=1",
        "federation.steps_per_round=3",
        "adapt.eval_every=2",
    ]
    runs = [
        (tiny_run_config(tiny_world, *common), root / "fedavg"),
        (
            tiny_run_config(
                tiny_world,
                *common,
                "federation.fedavg.aggregator=fedadam",
                "federation.fedavg.server_lr=0.001",
                "federation.weights_precision=fp32",
            ),
            root / "fedadam",
        ),
    ]
    seen: dict = {}
    summaries = simulate_many(
        runs, progress=False, observers=(lambda d, row, msg: seen.setdefault(d, []).append((row, msg)),)
    )
    return runs, summaries, seen


@pytest.mark.ray
def test_deltas_are_shared_and_averaged_into_a_new_generic_student(fedavg_runs):
    from fedpse.federation.payloads import content_bytes
    from fedpse.federation.plan import RunPlan
    from fedpse.models.checkpoints import load_checkpoint
    from fedpse.results.store import RunStore

    runs, summaries, seen = fedavg_runs
    (_, run_dir), summary = runs[0], summaries[0]
    plan = RunPlan.load(run_dir)
    shares = [(row, msg) for row, msg in seen[run_dir.resolve()] if row.kind == "student_delta"]
    assert sorted(row.user for row, _ in shares) == ["u0000", "u0001"]
    for row, msg in shares:
        assert row.direction == "up" and row.bytes == content_bytes(msg.content) > 0
    assert summary["users_ok"] == 2
    # The federated student = generic + the FedAvg of the deltas, weighted by the audio each user trained on.
    generic = load_checkpoint(plan.generic_student_path)[0].state_dict()
    federated = load_checkpoint(run_dir / "models" / "federated_student.pt")[0].state_dict()
    users = {r["user"]: r for r in RunStore(run_dir).read_table("users")}
    weights = {u: float(users[u]["audio_minutes_used"]) for u in ("u0000", "u0001")}
    students = {u: load_checkpoint(plan.device_dir(u) / "student.pt")[0].state_dict() for u in weights}
    total = sum(weights.values())
    for key, value in generic.items():
        mean_delta = sum((students[u][key] - value) * w for u, w in weights.items()) / total
        # fp16 deltas on the wire (federation.weights_precision=fp16)
        torch.testing.assert_close(federated[key], value + mean_delta, atol=2e-3, rtol=0)
    assert any(not torch.equal(federated[k], generic[k]) for k in generic)


@pytest.mark.ray
def test_cold_start_scores_the_held_out_user_with_both_generic_students(fedavg_runs):
    from fedpse.results.store import RunStore

    runs, summaries, _ = fedavg_runs
    for (cfg, run_dir), summary in zip(runs, summaries, strict=True):
        rows = RunStore(run_dir).read_table("cold_start")
        assert [r["user"] for r in rows] == ["u0002"]  # never took part
        block = summary["cold_start"]
        assert block["holdout_users"] == 1 and block["devices_aggregated"] == 2
        assert block["aggregator"] == cfg.federation.fedavg.aggregator
        assert block["mean_gain_db"] == pytest.approx(
            float(rows[0]["si_sdr_federated"]) - float(rows[0]["si_sdr_generic"]), abs=1e-6
        )
