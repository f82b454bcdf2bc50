"""How a delivery mode looks in reports: its colour, its place in a side-by-side comparison, and whether it is a
reference (an upper bound, not a deployable mode).

The results layer sits below the federation layer, so it cannot import the strategies. Instead each delivery
strategy registers its style here when its class is defined (``DeliveryStrategy.__init_subclass__``); a mode nobody
registered (a run directory written by a mode whose module is not imported) gets a spare colour and sorts last.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModeStyle:
    color: str | None = None  # a matplotlib colour; None = the next spare colour
    order: int = 1000  # position in a comparison of modes (baseline first, upper bounds last)
    reference: bool = False  # an upper bound (e.g. oracle_clean): reported apart from the deployable modes


MODE_STYLES: dict[str, ModeStyle] = {}


def register_mode(name: str, style: ModeStyle) -> None:
    MODE_STYLES[name] = style


def mode_style(name: str) -> ModeStyle:
    return MODE_STYLES.get(name, ModeStyle())


def registered_modes() -> list[str]:
    """Registered mode names in comparison order."""
    return sorted(MODE_STYLES, key=lambda m: (MODE_STYLES[m].order, m))
