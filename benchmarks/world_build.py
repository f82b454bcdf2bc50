"""Benchmark `fedpse world build`: wall time, audio generated per wall second, peak memory, disk size.

    python benchmarks/world_build.py                 # default world and a 300-user world (3 min each)
    python benchmarks/world_build.py --users 40 300 --minutes 5 3

Each world is built into a fresh temporary cache. Peak RSS is summed over the whole process tree (the builder and
its worker processes), sampled every 0.1 s. It also measures reading a user's cached audio vs regenerating it
(the reason worlds are materialised as FLAC) and prints how distinct the built-in TTS voices are.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from proctree import PeakRSS


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def bench_build(users: int, minutes: float, workers: int, keep: bool) -> dict:
    from fedpse.config import load_config
    from fedpse.world.cache import build_world

    cache = Path(tempfile.mkdtemp(prefix="fedpse-bench-"))
    cfg = load_config(
        overrides=[
            f"world.num_users={users}",
            f"world.adaptation_minutes={minutes}",
            f"world.cache_dir={cache}",
            f"world.workers={workers}",
        ]
    )
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        world = build_world(cfg, progress=False)
    wall = time.perf_counter() - t0
    stats = json.loads((world.root / "build_stats.json").read_text())
    user_audio = sum(s["seconds"] for u in world.manifest["users"] for s in u["segments"])
    out = {
        "users": users,
        "adaptation_minutes": minutes,
        "workers": workers,
        "wall_seconds": round(wall, 1),
        "audio_seconds_generated": round(stats["audio_seconds_generated"], 1),
        "user_audio_seconds": round(user_audio, 1),
        "x_real_time": round(stats["audio_seconds_generated"] / wall, 1),
        "peak_rss_mb": round(mem.peak / 2**20, 1),
        "peak_pss_mb": round(mem.peak_pss / 2**20, 1),
        "disk_mb": round(_disk_bytes(world.root) / 2**20, 1),
    }
    out.update(bench_read_vs_regenerate(world, cfg))
    if not keep:
        shutil.rmtree(cache)
    return out


def bench_read_vs_regenerate(world, cfg) -> dict:
    """Seconds of user audio read per wall second from FLAC vs rendered from scratch (one user, one process)."""
    from fedpse.config import config_to_dict
    from fedpse.world import cache as wc

    uid = world.user_ids()[0]
    t0 = time.perf_counter()
    chunks = world.adaptation_chunks(uid) + [x for pair in world.test_set(uid) for x in pair]
    read_s = time.perf_counter() - t0
    audio_s = sum(len(c) for c in chunks) / 16000
    plan = wc.plan_world(cfg)
    tmp = Path(tempfile.mkdtemp(prefix="fedpse-regen-"))
    shutil.copytree(world.root / "babble", tmp / "babble")
    wc._init_worker(config_to_dict(cfg), str(tmp))
    t0 = time.perf_counter()
    wc._job_user({"kind": "user", "plan": plan["users"][0]["plan"], "speaker": plan["users"][0]["speaker"]})
    regen_s = time.perf_counter() - t0
    shutil.rmtree(tmp)
    return {
        "read_x_real_time": round(audio_s / read_s, 1),
        "regenerate_x_real_time": round(audio_s / 2 / regen_s, 1),  # noisy+clean read vs one mixture rendered
    }


def bench_voices(n_voices: int, n_utterances: int) -> dict:
    from fedpse.world.voices import distinctness_report, sample_voices

    voices = sample_voices(n_voices, np.random.default_rng([0, 1, 0]), "uv")
    return distinctness_report(voices, n_utterances, np.random.default_rng(3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, nargs="+", default=[40, 300])
    ap.add_argument("--minutes", type=float, nargs="+", default=[5.0, 3.0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--voices", type=int, default=20, help="voices in the distinctness report (0 = skip)")
    ap.add_argument("--keep", action="store_true", help="keep the built worlds")
    ap.add_argument("--json", default="benchmarks/results/world_build.json")
    args = ap.parse_args()
    if len(args.minutes) != len(args.users):
        ap.error("--minutes needs one value per --users value")
    rows = [bench_build(u, m, args.workers, args.keep) for u, m in zip(args.users, args.minutes, strict=True)]
    cols = list(rows[0])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    result = {"builds": rows}
    if args.voices:
        rep = bench_voices(args.voices, 5)
        result["voices"] = rep
        print(json.dumps({k: v for k, v in rep.items() if not isinstance(v, dict | list)}, indent=1))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
