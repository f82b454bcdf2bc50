"""Cloud fine-tuning of U users' students: one user after another (``adapt``, what the server does by default) against
all U stepped together (``distill.stacked.adapt_stacked``, ``device.stack_finetune``), on the CPU and on CUDA when
torch sees a GPU.

    python benchmarks/stacked_finetune.py                      # U = 1, 4, 16; 20 steps; the CPU (and CUDA)
    python benchmarks/stacked_finetune.py --users 1 4 --steps 5 --label quick

The workload is the server's: the default student (GRUMaskNet 2x32, random weights), ``adapt`` defaults (batch of
4 crops of 4 s, Adam, lr 1e-3) on 4 chunks of 6 s per user (random audio: the work, not the quality, is measured),
``adapt.patience=0`` so that every user takes every step, ``adapt.threads`` torch threads (1, as on the server).
user-steps/s = U x steps / wall time; users/hour = U x 3600 / wall time. Each path runs once per U after a
warm-up; the two paths' weights are compared (they differ by float summation order only).

Results: printed as a table and written to ``benchmarks/results/stacked-<label>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fedpse.config import load_config
from fedpse.distill.adapt import adapt
from fedpse.distill.stacked import AdaptJob, adapt_stacked
from fedpse.models.accelerator import describe_device
from fedpse.models.gru import GRUMaskNet

HERE = Path(__file__).resolve().parent
CHUNKS, CHUNK_SECONDS = 4, 6.0


def machine() -> dict:
    """What this benchmark runs on (each device's own description is in its run)."""
    cuda = torch.version.cuda if torch.cuda.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "cuda": cuda,
    }


def user_data(user: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A user's noisy chunks and their targets (random audio: a mixture and a quieter part of it)."""
    rng = np.random.default_rng(user)
    samples = int(CHUNK_SECONDS * 16000)
    noisy = [(0.1 * rng.standard_normal(samples)).astype(np.float32) for _ in range(CHUNKS)]
    return noisy, [(0.5 * x + 0.01 * rng.standard_normal(samples)).astype(np.float32) for x in noisy]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work) -> float:
    synchronize(device)
    started = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - started


def bench(device: torch.device, users: int, cfg, data: list) -> dict:
    """Both paths for ``users`` users on ``device``: wall seconds, user-steps/s, users/hour, weight difference."""
    torch.manual_seed(0)
    students = [GRUMaskNet().to(device) for _ in range(users)]
    alone = [copy.deepcopy(s) for s in students]
    stacked = [copy.deepcopy(s) for s in students]

    def one_by_one() -> None:
        for k, model in enumerate(alone):
            adapt(model, *data[k], cfg, seed=k, user=f"u{k}")

    def together() -> None:
        jobs = [AdaptJob(model, *data[k], cfg, seed=k, user=f"u{k}") for k, model in enumerate(stacked)]
        for result in adapt_stacked(jobs):
            if isinstance(result, Exception):
                raise result

    row = {"users": users, "steps": cfg.steps}
    for path, work in (("per_user", one_by_one), ("stacked", together)):
        seconds = timed(device, work)
        row[path] = {
            "wall_seconds": round(seconds, 3),
            "user_steps_per_s": round(users * cfg.steps / seconds, 2),
            "users_per_hour": round(users * 3600 / seconds, 1),
        }
    row["speedup"] = round(row["per_user"]["wall_seconds"] / row["stacked"]["wall_seconds"], 2)
    row["max_weight_difference"] = max(
        float((p - q).detach().abs().max())
        for a, b in zip(alone, stacked, strict=True)
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, nargs="+", default=[1, 4, 16], help="stack sizes U to time")
    ap.add_argument("--steps", type=int, default=20, help="Adam steps per user")
    ap.add_argument(
        "--threads", type=int, default=1, help="adapt.threads (torch threads; the server's default: 1)"
    )
    ap.add_argument(
        "--devices",
        nargs="+",
        default=None,
        help="cpu and/or cuda[:N] (default: cpu, and cuda when available)",
    )
    ap.add_argument("--label", default="latest", help="results file: benchmarks/results/stacked-LABEL.json")
    args = ap.parse_args()
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    cfg = load_config(
        overrides=[f"adapt.steps={args.steps}", "adapt.patience=0", f"adapt.threads={args.threads}"]
    ).adapt
    data = [user_data(k) for k in range(max(args.users))]
    result = {"machine": machine(), "steps": args.steps, "threads": args.threads, "runs": {}}
    print("machine:", json.dumps(result["machine"]))
    for name in devices:
        device = torch.device(name)
        torch.set_num_threads(args.threads)
        where = describe_device(device)
        print(
            f"\n{where}: {args.steps} steps per user, batch {cfg.batch_size} x {cfg.segment_seconds:g} s crops"
        )
        warm = load_config(
            overrides=["adapt.steps=2", "adapt.patience=0", f"adapt.threads={args.threads}"]
        ).adapt
        bench(device, 2, warm, data)  # warm-up: allocators, kernels, cuDNN
        rows = []
        print(
            f"{'users':>5} | {'per-user: steps/s':>17} {'users/h':>8} | {'stacked: steps/s':>16} {'users/h':>8} | x"
        )
        for users in args.users:
            row = bench(device, users, cfg, data)
            rows.append(row)
            one, many = row["per_user"], row["stacked"]
            print(
                f"{users:>5} | {one['user_steps_per_s']:>17.2f} {one['users_per_hour']:>8.0f} | "
                f"{many['user_steps_per_s']:>16.2f} {many['users_per_hour']:>8.0f} | {row['speedup']:.2f}"
                f"   (weights differ by <= {row['max_weight_difference']:.1e})"
            )
        result["runs"][name] = {"device": where, "rows": rows}
    out = HERE / "results" / f"stacked-{args.label}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwritten: {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
