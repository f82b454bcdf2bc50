"""Results that depend only on a model's weights and an input's content, kept on disk across runs.

A sweep runs many configurations on the same users: the teacher's pseudo-targets for a chunk and the generic
student's and teacher's scores on a test set come out the same every time. They are stored once under
``federation.cache_dir`` (default ``~/.cache/fedpse/results``) and reused by every later run and process:

    targets/<model key>/<sha1 of the chunk's float32 samples>.npy   teacher outputs (float32)
    scores/<key>.json                                              baseline scores of one user

Keys are content hashes (a model's architecture and weights, or an ONNX teacher's file and framing; audio samples),
so a changed teacher, a lossy upload or another world gives another key and never a stale hit. Teacher outputs
computed on a GPU, or several chunks per forward pass, round differently from the CPU's one-chunk passes: they are
kept in a folder of their own (``targets_folder``), so a run's numbers never depend on which device filled the
cache. Only finite outputs are stored: a teacher that outputs NaN raises ``NonFiniteOutputError`` and leaves nothing behind. The ledger still charges the compute as if it had been done (the simulated
devices and servers did it); only the wall clock of the simulation is saved. Files are written to a temporary name
and renamed, so concurrent actors never read a partial file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from fedpse.models.accelerator import model_device
from fedpse.models.identity import model_fingerprint


def model_key(model) -> str:
    """Content key of a model: what determines its outputs (``fedpse.models.identity.model_fingerprint``: a torch
    model's architecture spec and weights; an ONNX teacher's file bytes, options and ``teacher.onnx`` block)."""
    return model_fingerprint(model)[:32]


def targets_folder(teacher, key: str, batch: int = 1) -> str:
    """Cache folder of the outputs of ``teacher`` (content key ``key``) computed ``batch`` chunks per pass where it
    runs: ``key`` itself for the CPU one chunk at a time (what fedpse always computed), else ``key-<device>-b<batch>``."""
    device = model_device(teacher).type
    return key if device == "cpu" and batch == 1 else f"{key}-{device}-b{batch}"


def audio_key(audio: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultCache:
    """Teacher outputs and baseline scores under ``root`` (``None``: no caching, everything is computed)."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root).expanduser() if root else None
        self.hits = 0
        self.misses = 0

    # -------------------------------------------------------------------------------------- teacher outputs
    def targets(
        self, teacher, key: str, chunks: list[np.ndarray], user: str | None = None, batch: int = 1
    ) -> list[np.ndarray]:
        """``pseudo_targets_batched(teacher, chunks, batch, user)`` (``batch`` 1: ``pseudo_targets``), reading outputs
        computed before for the same teacher, audio, device and batch."""
        from fedpse.distill.adapt import pseudo_targets_batched

        def compute(todo: list[np.ndarray]) -> list[np.ndarray]:
            return pseudo_targets_batched(teacher, todo, batch, user=user)

        if self.root is None:
            self.misses += len(chunks)
            return compute(chunks)
        folder = self.root / "targets" / targets_folder(teacher, key, batch)
        paths = [folder / f"{audio_key(c)}.npy" for c in chunks]
        out: list[np.ndarray | None] = [None] * len(chunks)
        for i, path in enumerate(paths):
            try:
                out[i] = np.load(path)
            except (OSError, ValueError):  # absent, or unreadable: compute it again
                continue
            if out[i].shape != chunks[i].shape or not np.isfinite(out[i]).all():
                out[i] = None
        todo = [i for i, o in enumerate(out) if o is None]
        self.hits += len(chunks) - len(todo)
        self.misses += len(todo)
        if todo:
            computed = compute([chunks[i] for i in todo])
            for i, target in zip(todo, computed, strict=True):
                out[i] = np.asarray(target, dtype=np.float32)
                _atomic_write(paths[i], lambda fh, t=out[i]: np.save(fh, t))
        return out

    # -------------------------------------------------------------------------------------- scores
    def scores(self, key: str, compute) -> dict[str, float]:
        """``compute()`` (a dict of floats), read from disk when the same ``key`` was computed before."""
        if self.root is None:
            return compute()
        path = self.root / "scores" / f"{hashlib.sha1(key.encode()).hexdigest()}.json"
        try:
            stored = json.loads(path.read_text())
            if stored.get("key") == key and _finite_scores(stored["scores"]):
                self.hits += 1
                return dict(stored["scores"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # absent or damaged
            pass
        self.misses += 1
        scores = compute()
        _atomic_write(path, lambda fh: fh.write(json.dumps({"key": key, "scores": scores}).encode()))
        return scores


def _finite_scores(scores: dict) -> bool:
    """SI-SDR scores are always finite (PESQ may be NaN: undefined on silence); anything else is recomputed."""
    return all(math.isfinite(v) for k, v in scores.items() if k.startswith("si_sdr"))
