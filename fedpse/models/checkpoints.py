"""Model checkpoints with model cards: one ``.pt`` file loadable with ``torch.load(weights_only=True)``.

File layout (only tensors and primitive containers, so it never unpickles code)::

    {"format": "fedpse-checkpoint", "version": 1, "spec": {"arch": "gru", ...}, "dtype": "fp16" | "fp32",
     "card": {...}, "state_dict": {name: tensor}}

A human-readable copy of the card is written next to it as ``<path>.card.json``. The card holds whatever the caller
passes (config, world seed, steps, validation SI-SDR, ...) plus ``arch``, ``model_spec``, ``params``,
``macs_per_second`` and ``dtype`` computed here.
"""

from __future__ import annotations

import io
import json
import os
import pickletools
import re
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

import fedpse
from fedpse.models.macs import count_params, macs_per_second
from fedpse.models.registry import arch_kwargs, build_from_spec, describe_spec, model_spec

FORMAT = "fedpse-checkpoint"
VERSION = 1
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
_MISSING = object()


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: says which file and what was expected."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def card_path(path: str | Path) -> Path:
    """Where the human-readable card of checkpoint ``path`` lives: ``<path>.card.json``."""
    return Path(str(path) + ".card.json")


def save_checkpoint(
    path: str | Path, model: nn.Module, card: dict | None = None, dtype: str = "fp16"
) -> dict:
    """Write ``model``'s weights (``dtype`` storage), spec and ``card`` to ``path`` and the card to JSON; return the card."""
    if dtype not in DTYPES:
        raise ValueError(f"checkpoint dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    try:
        caller_card = json.loads(json.dumps(card or {}))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"checkpoint card must be JSON-serialisable (str/number/bool/list/dict): {err}"
        ) from None
    spec = model_spec(model)
    full_card = {
        **caller_card,
        "arch": describe_spec(spec),
        "model_spec": spec,
        "params": count_params(model),
        "macs_per_second": macs_per_second(model),
        "dtype": dtype,
        "fedpse_version": fedpse.__version__,
    }
    state = {
        name: (
            t.detach().to("cpu", DTYPES[dtype]) if t.is_floating_point() else t.detach().cpu()
        ).contiguous()
        for name, t in model.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "spec": spec,
        "dtype": dtype,
        "card": full_card,
        "state_dict": state,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda tmp: torch.save(payload, tmp))
    _atomic_write(card_path(path), lambda tmp: Path(tmp).write_text(json.dumps(full_card, indent=2) + "\n"))
    return full_card


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate the raw checkpoint dict (no model built). Raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    try:
        # torch warns before it refuses a pickle of another protocol: noise next to the error said here
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load raises many types on damaged files (UnpicklingError, EOFError, IndexError, RuntimeError, ...); its
    # weights-only unpickler refuses random bytes and a pickle of Python objects with the same UnpicklingError.
    except Exception as err:
        if "weights only" in str(err).lower() and _is_pickle(path):
            raise CheckpointError(
                path,
                "not a fedpse checkpoint: it holds Python objects other than tensors and plain containers",
            ) from None
        raise CheckpointError(
            path,
            "not a PyTorch checkpoint, or the file is corrupt or truncated "
            f"({type(err).__name__}: {_first_sentence(err)})",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        keys = [str(k) for k in list(payload)[:8]] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            path,
            f"not a fedpse checkpoint (expected a dict with format={FORMAT!r}; found {keys}); "
            "save it with fedpse.models.checkpoints.save_checkpoint",
        )
    missing = [k for k in ("spec", "card", "state_dict") if not isinstance(payload.get(k), dict)]
    if missing or payload.get("version") != VERSION:
        raise CheckpointError(
            path, f"malformed fedpse checkpoint (version {payload.get('version')!r}, bad {missing})"
        )
    return payload


def load_checkpoint(path: str | Path, expected_arch: dict | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model from its spec, load the weights in fp32, ``eval()`` it; return ``(model, card)``.

    ``expected_arch`` is a (partial) spec such as ``{"arch": "gru", "num_layers": 2, "hidden": 32}``; any key that
    differs from the checkpoint's spec raises ``CheckpointError`` naming both.
    """
    payload = read_checkpoint(path)
    spec = payload["spec"]
    if expected_arch:
        # A key added to an architecture later (e.g. the GRU's magnitude) reads as its default in older files.
        defaults = _spec_defaults(spec)
        diffs = {k: v for k, v in expected_arch.items() if spec.get(k, defaults.get(k, _MISSING)) != v}
        if diffs:
            have = ", ".join(f"{k}={spec.get(k, '<absent>')!r}" for k in diffs)
            want = ", ".join(f"{k}={v!r}" for k, v in diffs.items())
            raise CheckpointError(
                path, f"architecture mismatch: checkpoint is {describe_spec(spec)} ({have}), expected {want}"
            )
    try:
        model = build_from_spec(spec)
    except (ValueError, TypeError) as err:
        raise CheckpointError(path, f"checkpoint spec {spec} cannot be built: {err}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    _check_state(path, model, state, spec)
    _check_finite(path, state)
    model.load_state_dict(state)
    return model.eval(), payload["card"]


def _spec_defaults(spec: object) -> dict:
    try:
        return arch_kwargs(spec["arch"])
    except (TypeError, KeyError, ValueError):
        return {}


def _check_state(path: Path | str, model: nn.Module, state: dict, spec: dict) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {unexpected[:5]}" if unexpected else "",
        ]
        parts += shapes[:5]
        detail = "; ".join(p for p in parts if p)
        raise CheckpointError(path, f"weights do not match the {describe_spec(spec)} architecture: {detail}")


def _check_finite(path: Path | str, state: dict) -> None:
    """Weights that are NaN or inf (a diverged training run, a damaged file) would make every output NaN."""
    bad = {
        name: int((~torch.isfinite(t)).sum())
        for name, t in state.items()
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    }
    if bad:
        shown = ", ".join(
            f"{name} ({count} of {state[name].numel()})" for name, count in list(bad.items())[:3]
        )
        more = f" and {len(bad) - 3} more tensors" if len(bad) > 3 else ""
        raise CheckpointError(
            path,
            f"weights hold NaN or inf values: {shown}{more}; expected finite weights (a diverged training run? "
            "retrain it or use another checkpoint)",
        )


def _is_pickle(path: Path) -> bool:
    """Whether the file's pickles (the ``data.pkl`` of a zip checkpoint, else the pickles the file starts with) are
    well formed.

    Only parses opcodes (``pickletools``), never runs them: tells a pickle of Python objects (which the weights-only
    unpickler refuses) from random or damaged bytes (which it refuses with the same error type).
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            data = path.read_bytes()
        stream = io.BytesIO(data)
        # A plain pickle is one; a legacy (pre-zip) torch file starts with four (magic, protocol, sys info, data).
        for _ in range(4):
            if stream.tell() == len(data):
                break
            for _ in pickletools.genops(stream):
                pass
    except Exception:  # zipfile.BadZipFile, StopIteration, ValueError (unknown opcode), truncated data, ...
        return False
    return True


def _first_sentence(err: Exception) -> str:
    """The useful part of torch's long messages, on one line: ``Unsupported operand 95`` of a weights-only refusal,
    else the first sentence (``PytorchStreamReader failed reading zip archive: failed finding central directory``)."""
    text = str(err)
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, flags=re.S)
    text = " ".join((match.group(1) if match else text).split())
    return text.split(". ", 1)[0][:160]


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def update_card(path: str | Path, extra: dict) -> dict:
    """Merge ``extra`` into a checkpoint's model card (inside the file and in ``<path>.card.json``); weights untouched.

    Used to record figures measured after training, e.g. SI-SDR on held-out users' test sets.
    """
    path = Path(path)
    payload = read_checkpoint(path)
    card = {**payload["card"], **json.loads(json.dumps(extra))}
    payload["card"] = card
    _atomic_write(path, lambda tmp: torch.save(payload, tmp))
    _atomic_write(card_path(path), lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2) + "\n"))
    return card
