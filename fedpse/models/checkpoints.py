"""Model checkpoints with model cards: one ``.pt`` file loadable with ``torch.load(weights_only=True)``.

File layout (only tensors and primitive containers, so it never unpickles code)::

    {"format": "fedpse-checkpoint", "version": 1, "spec": {"arch": "gru", ...}, "dtype": "fp16" | "fp32",
     "card": {...}, "state_dict": {name: tensor}}

A human-readable copy of the card is written next to it as ``<path>.card.json``. The card holds whatever the caller
passes (config, world seed, steps, validation SI-SDR, ...) plus ``arch``, ``model_spec``, ``params``,
``macs_per_second`` and ``dtype`` computed here.
"""

from __future__ import annotations

import json
import os
import pickle
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
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise CheckpointError(
                path,
                "not a fedpse checkpoint: it holds Python objects other than tensors and plain containers",
            ) from None
        raise CheckpointError(
            path, f"cannot read checkpoint; the file is corrupt or truncated ({err})"
        ) from None
    # torch.load raises many types on damaged files (EOFError, IndexError, RuntimeError, ...).
    except Exception as err:
        raise CheckpointError(
            path, f"cannot read checkpoint; the file is corrupt or truncated ({type(err).__name__}: {err})"
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
