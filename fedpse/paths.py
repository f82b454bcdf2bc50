"""Folders fedpse writes to (world cache, run directories, result cache): checked before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class UnwritableDirError(ValueError):
    """A folder fedpse must write to cannot be created or written; names the folder and the config key to change."""


def ensure_writable_dir(path: str | Path, key: str) -> Path:
    """Create ``path`` if needed and prove it writable (a probe file is created and removed); returns it.

    Raises ``UnwritableDirError`` naming the folder, why, and ``key`` (the setting that chooses the folder).
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".fedpse-write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        if err.filename and Path(err.filename) != path:
            reason += f": {err.filename}"
        raise UnwritableDirError(
            f"{path}: not writable ({reason}); set {key} to a folder you can write"
        ) from None
    return path
