"""Results that depend only on a model's weights and an input's content, kept on disk across runs.

A sweep runs many configurations on the same users: the teacher's pseudo-targets for a chunk and the generic
student's and teacher's scores on a test set come out the same every time. They are stored once under
``federation.cache_dir`` (default ``~/.cache/fedpse/results``) and reused by every later run and process:

    targets/<model key>/<sha1 of the chunk's float32 samples>.npy   teacher outputs (float32)
    scores/<key>.json                                              baseline scores of one user

Keys are content hashes (model weights, audio samples), so a changed teacher, a lossy upload or another world gives
another key and never a stale hit. The ledger still charges the compute as if it had been done (the simulated
devices and servers did it); only the wall clock of the simulation is saved. Files are written to a temporary name
and renamed, so concurrent actors never read a partial file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from torch import nn


def model_key(model) -> str:
    """Content key of a model: its class and weights (an ONNX teacher: its file's bytes and framing)."""
    digest = hashlib.sha1(type(model).__name__.encode())
    if isinstance(model, nn.Module):
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        magnitude = getattr(model, "magnitude", "linear")
        if magnitude != "linear":  # the GRU's input feature changes its output, not its weights
            digest.update(f"magnitude={magnitude}".encode())
    else:
        digest.update(Path(model.path).read_bytes())
        for attr in ("framing", "sample_rate", "_chunk", "_hop", "_block", "_shift"):
            digest.update(repr(getattr(model, attr, None)).encode())
    return digest.hexdigest()[:20]


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
    def targets(self, teacher, key: str, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """``pseudo_targets(teacher, chunks)``, reading outputs computed before for the same teacher and audio."""
        from fedpse.distill.adapt import pseudo_targets

        if self.root is None:
            self.misses += len(chunks)
            return pseudo_targets(teacher, chunks)
        paths = [self.root / "targets" / key / f"{audio_key(c)}.npy" for c in chunks]
        out: list[np.ndarray | None] = [None] * len(chunks)
        for i, path in enumerate(paths):
            try:
                out[i] = np.load(path)
            except (OSError, ValueError):  # absent, or unreadable: compute it again
                continue
            if out[i].shape != chunks[i].shape:
                out[i] = None
        todo = [i for i, o in enumerate(out) if o is None]
        self.hits += len(chunks) - len(todo)
        self.misses += len(todo)
        if todo:
            for i, target in zip(todo, pseudo_targets(teacher, [chunks[i] for i in todo]), strict=True):
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
            if stored.get("key") == key:
                self.hits += 1
                return dict(stored["scores"])
        except (OSError, ValueError, KeyError):
            pass
        self.misses += 1
        scores = compute()
        _atomic_write(path, lambda fh: fh.write(json.dumps({"key": key, "scores": scores}).encode()))
        return scores
