"""What a model is: a short human name for messages, and a content fingerprint for the result cache.

The fingerprint covers everything that changes a model's outputs, so two models with equal fingerprints give equal
outputs on equal inputs: for a torch model its class, architecture spec (constructor config) and every tensor of its
state dict; for an ONNX teacher the model file's bytes, every option it was built with, what it resolved from the
file (sample rate, chunk and hop in samples, ...) and, when it came from a config, the whole ``teacher.onnx`` block
(so a framing key added later is covered without touching this file); for a spectral chain every stage file's bytes,
the STFT framing and what each stage resolved (input/output names, axes, states).
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn


def _onnx(model: object):
    """The ``OnnxTeacher`` behind ``model`` (itself or a ``TorchOnnxTeacher``), else None."""
    from fedpse.models.onnx.chain import SpectralTeacher
    from fedpse.models.onnx_teacher import OnnxTeacher, TorchOnnxTeacher

    if isinstance(model, TorchOnnxTeacher):
        return model.teacher
    return model if isinstance(model, OnnxTeacher | SpectralTeacher) else None


def describe_model(model: object) -> str:
    """A short name of ``model``: ``gru 2x32``, ``convtasnet N=...``, ``onnx PATH``, else its class name."""
    from fedpse.models.registry import describe_spec, model_spec

    onnx = _onnx(model)
    if onnx is not None:
        return f"onnx {onnx.path}"
    try:
        return describe_spec(model_spec(model))
    except ValueError:
        return type(model).__name__


def model_fingerprint(model: object) -> str:
    """A stable hex digest (SHA-256) of what determines ``model``'s outputs (see the module docstring)."""
    digest = hashlib.sha256()
    onnx = _onnx(model)
    if onnx is not None:
        # The whole teacher.onnx block it was loaded from (when loaded from a config), whatever keys it has.
        config = json.loads(json.dumps(getattr(model, "config", None) or {}, default=repr))
        config.pop("path", None)  # the files' bytes stand for their paths
        for stage in config.get("stages") or []:
            stage.pop("path", None)
        identity = {"kind": "onnx", **onnx.identity(), "config": config}
        digest.update(json.dumps(identity, sort_keys=True, default=repr).encode())
        return digest.hexdigest()
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"cannot fingerprint a {type(model).__name__}: expected a torch model or an ONNX teacher"
        )
    architecture = {"class": f"{type(model).__module__}.{type(model).__qualname__}", "spec": _spec(model)}
    digest.update(json.dumps(architecture, sort_keys=True, default=repr).encode())
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:  # a module's extra state
            digest.update(repr(value).encode())
    return digest.hexdigest()


def _spec(model: nn.Module) -> object:
    """The architecture spec (registry models), else the model's own ``config`` if it has one."""
    from fedpse.models.registry import model_spec

    try:
        return model_spec(model)
    except ValueError:
        config = getattr(model, "config", None)
        return config if isinstance(config, dict) else None
