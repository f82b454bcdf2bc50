"""Delivery modes, one file each. Every module in this package is imported, so adding a mode = adding one file
with a ``DeliveryStrategy`` subclass that sets ``name``."""

from __future__ import annotations

import importlib
import pkgutil

from fedpse.config import ConfigError
from fedpse.federation.strategies.base import STRATEGIES, DeliveryStrategy

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def strategy_class(mode: str) -> type[DeliveryStrategy]:
    """The strategy class of ``federation.mode``."""
    if mode not in STRATEGIES:
        raise ConfigError(f"federation.mode: unknown delivery mode {mode!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[mode]


__all__ = ["STRATEGIES", "DeliveryStrategy", "strategy_class"]
