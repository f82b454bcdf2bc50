"""Build models by name and describe them as a JSON-serialisable spec, so a checkpoint can rebuild its model.

A spec is flat: ``{"arch": "gru", "num_layers": 2, "hidden": 32, "n_fft": 1024, "hop": 256, "bidirectional": false}``;
``build_from_spec(model_spec(m))`` rebuilds an identical (untrained) architecture.
"""

from __future__ import annotations

import inspect

from torch import nn

from fedpse.models.convtasnet import ConvTasNet
from fedpse.models.gru import GRUMaskNet
from fedpse.models.passthrough import IdentityTeacher

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "gru": GRUMaskNet,
    "convtasnet": ConvTasNet,
    "identity": IdentityTeacher,  # a teacher that returns its input (tests, bad-teacher studies)
}


def arch_kwargs(arch: str) -> dict[str, object]:
    """Keyword arguments accepted by ``arch`` and their defaults."""
    cls = _arch_class(arch)
    params = inspect.signature(cls.__init__).parameters
    return {name: p.default for name, p in params.items() if name != "self"}


def build_model(arch: str, **kwargs) -> nn.Module:
    """Build ``arch`` ("gru" | "convtasnet" | "identity") with ``kwargs``; unknown arch or keyword -> ``ValueError`` naming it."""
    allowed = arch_kwargs(arch)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for arch {arch!r}; allowed: {sorted(allowed)}")
    return ARCHITECTURES[arch](**kwargs)


def model_spec(model: nn.Module) -> dict:
    """``{"arch": name, **constructor kwargs}`` for a model built by this registry (JSON-serialisable)."""
    for arch, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return {"arch": arch, **model.config}
    raise ValueError(
        f"{type(model).__name__} is not a registered architecture; known: {sorted(ARCHITECTURES)}"
    )


def build_from_spec(spec: dict) -> nn.Module:
    """Inverse of ``model_spec``."""
    if not isinstance(spec, dict) or "arch" not in spec:
        raise ValueError(f"a model spec must be a dict with an 'arch' key, got {spec!r}")
    kwargs = {k: v for k, v in spec.items() if k != "arch"}
    return build_model(spec["arch"], **kwargs)


def describe_spec(spec: dict) -> str:
    """Short human name, e.g. 'gru 2x32', 'gru 2x256 bidirectional', 'convtasnet N=128 B=64 H=128 X=6 R=2'."""
    arch = spec.get("arch", "?")
    if arch == "gru":
        text = f"gru {spec.get('num_layers')}x{spec.get('hidden')}"
        text += " bidirectional" if spec.get("bidirectional") else ""
        return text + (f" {spec['magnitude']}" if spec.get("magnitude", "linear") != "linear" else "")
    if arch == "convtasnet":
        sizes = " ".join(f"{k}={spec.get(k)}" for k in ("N", "L", "B", "H", "P", "X", "R"))
        return f"convtasnet {sizes}" + (" causal" if spec.get("causal") else "")
    return str(arch)


def _arch_class(arch: str) -> type[nn.Module]:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown model arch {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch]
