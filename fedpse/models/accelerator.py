"""Where tensors run: the ``device`` config section (``auto | cpu | cuda | cuda:N``, per role) as ``torch.device``.

Roles: ``pretrain`` (``fedpse pretrain``), ``server`` (the server's teacher inference and cloud_student
fine-tuning), ``client`` (knowledge distillation inside the Ray client actors, ``fedpse adapt``) and ``scoring``
(held-out test sets). A role left null uses ``device.default``; ``auto`` is CUDA when torch sees a GPU.

Data follows the model: ``distill`` functions run where their model is (``model_device``) and hand numpy arrays
back, so callers place a model once and everything else is device-agnostic. Checkpoints and caches are always
written from CPU tensors and read with ``map_location="cpu"``.

Numbers on a GPU are comparable with, not equal to, the CPU's: cuDNN/cuBLAS kernels sum in another order
(differences of ~1e-6 relative in fp32; TF32, off unless ``device.tf32``, makes it ~1e-3). On one GPU model with one
torch/CUDA version they repeat bit for bit (cuDNN is put in deterministic mode), which resume and the result cache
rely on; the result cache keeps GPU outputs apart from CPU ones (``distill.cache.targets_key``). The CPU path is the
one fedpse always had.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch
from torch import nn

from fedpse.config import Config, ConfigError, check_device_name

ROLES = ("pretrain", "server", "client", "scoring")


def resolve_device(name: str, key: str = "device.default") -> torch.device:
    """``auto | cpu | cuda | cuda:N`` -> ``torch.device``; ``ConfigError`` naming ``key`` when it cannot be used."""
    check_device_name(name, key)
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if available else torch.device("cpu")
    if not available:
        raise ConfigError(
            f"{key}={name}: this torch ({torch.__version__}) sees no CUDA GPU; use cpu or auto, "
            "or install a CUDA build of torch (then fedpse, without constraints.txt)"
        )
    device = torch.device(name)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ConfigError(f"{key}={name}: only {torch.cuda.device_count()} CUDA GPU(s) here (cuda:0 ...)")
    return torch.device("cuda", index)


def role_setting(cfg: Config, role: str) -> tuple[str, str]:
    """(device name, the config key it came from) of ``role``: its own key, else ``device.default``."""
    if role not in ROLES:
        raise ValueError(f"device role must be one of {ROLES}, got {role!r}")
    own = getattr(cfg.device, role)
    return (own, f"device.{role}") if own is not None else (cfg.device.default, "device.default")


def role_device(cfg: Config, role: str) -> torch.device:
    """The torch device ``role`` runs on in this process (CUDA flags set as ``device.tf32`` says)."""
    device = resolve_device(*role_setting(cfg, role))
    configure(device, cfg.device.tf32)
    return device


def check_client_setting(cfg: Config) -> None:
    """Refuse, before Ray starts, a client device the client actors could never have.

    Client actors get a GPU only when ``federation.num_gpus`` > 0 (Ray then shows each the one it assigned, as
    ``cuda:0``), so ``cuda`` without GPUs reserved, or ``cuda:N`` with N > 0, is a config error."""
    name, key = role_setting(cfg, "client")
    check_device_name(name, key)
    if name.startswith("cuda") and cfg.federation.num_gpus == 0:
        raise ConfigError(
            f"{key}={name}: client actors get no GPU with federation.num_gpus=0; "
            "set federation.num_gpus (e.g. 0.25: four actors share a GPU) or use auto/cpu"
        )
    if name.startswith("cuda:") and name != "cuda:0":
        raise ConfigError(
            f"{key}={name}: inside a client actor the GPU Ray assigned is cuda:0; use cuda or auto"
        )
    if cfg.federation.num_gpus > 0 and cfg.federation.ray_address is None and not torch.cuda.is_available():
        raise ConfigError(
            f"federation.num_gpus={cfg.federation.num_gpus}: this machine has no CUDA GPU for Ray to assign "
            "(client actors would never start); use 0"
        )


def check_devices(cfg: Config) -> None:
    """Every device a simulation of ``cfg`` uses, checked before any work (``ConfigError`` naming the key)."""
    for role in ("server", "scoring"):
        resolve_device(*role_setting(cfg, role))
    check_client_setting(cfg)


def release_memory(device: torch.device) -> None:
    """Hand the CUDA memory this process keeps cached back to the GPU (a client actor between messages: an idle
    actor otherwise holds what its last message used, besides its CUDA context). Nothing to do on the CPU."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def client_device(cfg: Config) -> torch.device:
    """The device of a client actor's KD: the GPU Ray assigned it (``federation.num_gpus`` > 0), else the CPU.

    With ``federation.num_gpus`` = 0 the actor stays on the CPU even when it could see a GPU, so that idle actors
    never hold CUDA contexts nobody reserved. On a GPU, the actor's share of the GPU's memory is capped at
    ``federation.num_gpus`` (``limit_memory``)."""
    name, key = role_setting(cfg, "client")
    if cfg.federation.num_gpus == 0 or name == "cpu":
        return torch.device("cpu")
    device = resolve_device(name, key)
    configure(device, cfg.device.tf32)
    if device.type == "cuda":
        limit_memory(device, min(1.0, cfg.federation.num_gpus))
    return device


@functools.cache
def limit_memory(device: torch.device, fraction: float) -> None:
    """Cap this process's CUDA caching allocator on ``device`` at ``fraction`` of its memory (once per process)."""
    torch.cuda.set_per_process_memory_fraction(fraction, device)


def configure(device: torch.device, tf32: bool = False) -> None:
    """CUDA numerics for ``device``: deterministic cuDNN, TF32 only when asked. Nothing to do on the CPU."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` runs: the device of its first parameter or buffer (the CPU for a model without tensors, such
    as the wrapper of an ONNX teacher)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def to_cpu(obj):
    """``obj`` with every tensor inside (dicts, lists, tuples) detached and moved to the CPU: what is saved to disk."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def describe_device(device: torch.device) -> str:
    """``cpu (N threads)`` or ``cuda:0 (NVIDIA H100 80GB HBM3, 79.1 GiB)``: what a log or benchmark ran on."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    return f"{device} ({torch.get_num_threads()} threads)"
