"""Shared drawing helpers of the report's figures: a matplotlib Agg canvas (no pyplot state), PNG bytes, styling."""

from __future__ import annotations

import io
import re

FIGURE_DPI = 110


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    return fig


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI, facecolor="white", bbox_inches="tight", pad_inches=0.15)
    return buf.getvalue()


def nested_width(i: int, n: int, thinnest: float = 1.6, step: float = 1.3) -> float:
    """Earlier runs drawn wider, so runs with identical curves show as nested stripes instead of hiding."""
    return thinnest + step * (n - 1 - i)


def say_no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777777")


def style_axes(ax) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.7)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def wrap_label(label: str, width: int = 16) -> str:
    """Break long run labels (at '_', ' ' or '/') so tick labels do not run into each other."""
    if len(label) <= width:
        return label
    pieces = re.split(r"(?<=[_ /(])", label)
    lines, line = [], ""
    for piece in pieces:
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    lines.append(line)
    return "\n".join(lines)
