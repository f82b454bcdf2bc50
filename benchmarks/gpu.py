"""Benchmark the same workload on the CPU and on the GPU (when torch sees one): pretraining steps/s and users/hour of
`fedpse simulate` in each delivery mode, on a small generated world.

    python benchmarks/gpu.py --quick            # about a minute on a CPU: 3 users, 3 modes, small models
    python benchmarks/gpu.py                    # 8 users, every mode, the papers' 3x1024 GRU teacher pretraining
    python benchmarks/gpu.py --devices cuda --gpu-share 0.125 --users 32

For each device: (1) ``fedpse pretrain`` of the generic student and of a teacher for a fixed number of steps
(``device.pretrain``; steps/s over the training loop), (2) one Flower + Ray simulation running every selected mode
in turn (``device.default``: the server's teacher and cloud fine-tuning, scoring; client actors reserve
``--gpu-share`` of a GPU each on CUDA, ``federation.num_gpus``), users/hour = users x 3600 / the run's wall time
(Ray's start-up excluded, shown apart). The result cache is off: every run does all its work. The figures are only
comparable between devices of one invocation (same world, same work); what ran where is printed first.

Results: printed as a table and written to ``benchmarks/results/gpu-<label>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
WORLD = [
    "world.num_users={users}",
    "world.adaptation_minutes={minutes}",
    "world.chunk_seconds=6",
    "world.test_mixtures=2",
    "world.test_seconds=4",
    "world.speech.user_voice_pool=12",
    "world.speech.pretrain_voices=6",
    "world.speech.pretrain_utterances_per_voice=4",
    "world.speech.babble_voices=4",
    "world.noise.pretrain_environments=4",
    "world.noise.pretrain_seconds_per_environment=12",
    "world.noise.families=[stationary, babble, hum]",
]
SIMULATE = [
    "federation.chunks_per_round=1",
    "federation.steps_per_round=10",
    "federation.cache_dir=null",  # every run does all its work
]
QUICK = {
    "users": 3,
    "minutes": 0.3,
    "rounds": 1,
    "modes": ["pseudo_targets", "teacher_weights", "cloud_student"],
    "pretrain_steps": {"student": 6, "teacher": 2},
    "teacher": ["teacher.arch=gru", "teacher.layers=2", "teacher.hidden=256", "teacher.bidirectional=true"],
}
FULL = {
    "users": 8,
    "minutes": 0.6,
    "rounds": 2,
    "modes": ["pseudo_targets", "teacher_weights", "cloud_student", "oracle_clean", "fedavg_generic"],
    "pretrain_steps": {"student": 50, "teacher": 10},
    "teacher": [
        "teacher.arch=gru",
        "teacher.layers=3",
        "teacher.hidden=1024",
        "teacher.bidirectional=false",
        "teacher.magnitude=linear",  # the papers' input feature (the default teacher's is log1p)
        "teacher.checkpoint=null",  # random weights: the work, not the quality, is measured
    ],
}


def machine() -> dict:
    """What this benchmark runs on."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def device_overrides(device: str, gpu_share: float) -> list[str]:
    """Everything on ``device``: pretraining, server, scoring; client actors share the GPU on CUDA."""
    if device == "cpu":
        return ["device.default=cpu", "federation.num_gpus=0"]
    return [f"device.default={device}", f"federation.num_gpus={gpu_share}"]


def bench_pretrain(setup: dict, base: list[str], device: str, work: Path, threads: int) -> dict:
    from fedpse.config import load_config
    from fedpse.distill.pretrain import pretrain
    from fedpse.world.cache import open_world

    out = {}
    for role, steps in setup["pretrain_steps"].items():
        cfg = load_config(
            overrides=[
                *base,
                f"pretrain.out_dir={work / 'pretrain' / device.replace(':', '')}",
                f"pretrain.steps={steps}",
                f"pretrain.val_every={steps}",
                f"pretrain.checkpoint_every={steps}",
                "pretrain.val_mixtures=1",  # the loop's time is mostly training
                f"pretrain.threads={threads}",
                f"{role}.checkpoint=null",
            ]
        )
        lines: list[str] = []
        result = pretrain(cfg, role, open_world(cfg, progress=False), progress=False, log=lines.append)
        last = json.loads(lines[-1])  # the final validation's history row: the loop's wall time
        out[role] = {
            "model": _arch(cfg, role),
            "steps": result.steps,
            "batch": f"{cfg.pretrain.batch_size} x {cfg.pretrain.segment_seconds:g} s",
            "loop_seconds": round(last["wall_s"], 2),
            "steps_per_s": round(result.steps / last["wall_s"], 3),
            "ran_on": next(line for line in lines if line.startswith("pretraining")).split(" on ", 1)[1],
        }
    return out


def _arch(cfg, role: str) -> str:
    from fedpse.models.registry import describe_spec
    from fedpse.models.zoo import role_spec

    return describe_spec(role_spec(cfg, role))


def bench_simulate(setup: dict, base: list[str], device: str, work: Path) -> dict:
    from fedpse.config import load_config
    from fedpse.federation.runner import simulate_many

    runs = []
    # The first run of a simulation also starts the client actors (imports, CUDA contexts): a warm-up, not counted.
    for mode in [setup["modes"][0], *setup["modes"]]:
        cfg = load_config(
            overrides=[*base, f"federation.mode={mode}", f"federation.num_rounds={setup['rounds']}"]
        )
        runs.append((cfg, work / "simulate" / device.replace(":", "") / f"{mode}-{len(runs)}"))
    summaries = simulate_many(runs, progress=False)[1:]
    users = setup["users"]
    out = {}
    for mode, summary in zip(setup["modes"], summaries, strict=True):
        wall = float(summary["wall_seconds"])
        out[mode] = {"wall_seconds": round(wall, 2), "users_per_hour": round(users * 3600 / wall, 1)}
    out["ray_start_seconds"] = round(float(summaries[0]["simulation"].get("ray_start_seconds") or 0.0), 2)
    return out


def print_table(result: dict) -> None:
    print("machine:", json.dumps(result["machine"]))
    print(f"workload: {result['users']} users, {result['rounds']} round(s), teacher {result['teacher']}")
    for device, figures in result["devices"].items():
        print(f"\n== {device}")
        for role, p in figures["pretrain"].items():
            print(
                f"  pretrain {role:8s} {p['model']:28s} batch {p['batch']:10s} {p['steps_per_s']:8.3f} steps/s "
                f"({p['steps']} steps in {p['loop_seconds']:.1f} s) on {p['ran_on']}"
            )
        sim = figures["simulate"]
        for mode, s in sim.items():
            if mode != "ray_start_seconds":
                print(
                    f"  simulate {mode:16s} {s['users_per_hour']:10.1f} users/h  ({s['wall_seconds']:.1f} s)"
                )
        print(f"  (Ray start-up: {sim['ray_start_seconds']:.1f} s, not counted)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="3 users, 3 modes, small models: about a minute on a CPU"
    )
    ap.add_argument(
        "--devices", nargs="+", default=None, help="cpu, cuda, cuda:N (default: cpu, and cuda when present)"
    )
    ap.add_argument(
        "--users", type=int, default=0, help="users of the world and of each run (default: by mode)"
    )
    ap.add_argument(
        "--gpu-share", type=float, default=0.25, help="federation.num_gpus per client actor on CUDA"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of CPU pretraining")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra config override")
    ap.add_argument(
        "--work", type=Path, default=Path("runs") / "bench-gpu", help="worlds and run directories"
    )
    ap.add_argument("--label", default="latest", help="results file: benchmarks/results/gpu-LABEL.json")
    ap.add_argument("--keep", action="store_true", help="keep the run directories under --work")
    args = ap.parse_args()
    setup = dict(QUICK if args.quick else FULL)
    if args.users:
        setup["users"] = args.users
    devices = args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    world = [line.format(users=setup["users"], minutes=setup["minutes"]) for line in WORLD]
    work = args.work / time.strftime("%Y%m%d-%H%M%S")
    common = [*world, f"world.cache_dir={args.work / 'worlds'}", *SIMULATE, *setup["teacher"], *args.extra]
    result = {
        "machine": machine(),
        "quick": args.quick,
        "users": setup["users"],
        "rounds": setup["rounds"],
        "teacher": " ".join(setup["teacher"]),
        "workload": common,
        "devices": {},
    }
    print("machine:", json.dumps(result["machine"]))
    try:
        for device in devices:
            base = [*common, *device_overrides(device, args.gpu_share)]
            t0 = time.perf_counter()
            result["devices"][device] = {
                "pretrain": bench_pretrain(setup, base, device, work, args.threads),
                "simulate": bench_simulate(setup, base, device, work),
            }
            result["devices"][device]["wall_seconds"] = round(time.perf_counter() - t0, 1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(result)
    out = HERE / "results" / f"gpu-{args.label}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
