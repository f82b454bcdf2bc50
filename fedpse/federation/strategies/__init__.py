"""Delivery modes, one file each: a ``DeliveryStrategy`` subclass that sets ``name`` (see ``base.py`` for what a
mode may override). Every module of this package is imported here, so a built-in mode is registered by existing.

A mode of your own needs no change to fedpse: put the subclass in a module of yours (e.g. ``my_pkg/my_mode.py``
defining ``class MyMode(DeliveryStrategy): name = "my_mode"``) and list that module in the config::

    federation:
      plugins: [my_pkg.my_mode]   # imported before the run is checked (fedpse simulate, --resume, flwr run)
      mode: my_mode

``tests/federation/test_new_mode.py`` holds a whole example (an identity teacher: the device's chunks come back as targets).

Defining the class registers the mode: ``federation.mode`` accepts it, its ``check`` runs with the other checks and
reports draw it with its ``color`` / ``order``. Modes run on the server only; devices answer the message types
of ``fedpse.federation.client_app``.
"""

from __future__ import annotations

import importlib
import pkgutil

from fedpse.config import ConfigError
from fedpse.federation.strategies.base import STRATEGIES, DeliveryStrategy

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def load_plugins(modules: list[str]) -> None:
    """Import the modules of ``federation.plugins``; the ``DeliveryStrategy`` subclasses they define register."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(
                f"federation.plugins: cannot import {name!r} ({type(err).__name__}: {err}); "
                "expected a module on the Python path (PYTHONPATH) that defines a delivery mode"
            ) from None


def strategy_class(mode: str) -> type[DeliveryStrategy]:
    """The strategy class of ``federation.mode``."""
    if mode not in STRATEGIES:
        raise ConfigError(f"federation.mode: unknown delivery mode {mode!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[mode]


__all__ = ["STRATEGIES", "DeliveryStrategy", "load_plugins", "strategy_class"]
