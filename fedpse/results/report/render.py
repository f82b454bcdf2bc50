"""Writing the report's blocks as Markdown (figures referenced) and as one self-contained HTML page."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from fedpse.results.report.document import Block
from fedpse.results.report.tables import Table


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block], figure_dir: str = "figures") -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {block[1]}\n")
        elif kind == "p":
            out.append(block[1] + "\n")
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]) + "\n")
        elif kind == "figure":
            out.append(f"![{block[1]}]({figure_dir}/{block[1]}.png)\n\n*{block[2]}*\n")
        elif kind == "table":
            table: Table = block[1]
            if not table.rows:
                out.append("(none)\n")
                continue
            align = ["---:" if k in table.right else "---" for k in range(len(table.headers))]
            lines = [
                "| " + " | ".join(_md_cell(h) for h in table.headers) + " |",
                "| " + " | ".join(align) + " |",
                *("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows),
            ]
            out.append("\n".join(lines) + "\n")
        elif kind == "details":
            out.append(f"<details><summary>{html.escape(block[1])}</summary>\n")
            out.append(render_markdown(block[2], figure_dir))
            out.append("</details>\n")
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 2em auto;
       max-width: 1400px; padding: 0 1.5em; line-height: 1.45; }
h1 { border-bottom: 2px solid #1f77b4; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .15em; }
table { border-collapse: collapse; margin: .8em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #d8d8d8; padding: 3px 8px; }
th { background: #f3f5f8; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; max-width: 1100px; }
details summary { cursor: pointer; font-weight: 600; margin: 1.5em 0 .5em; }
"""


def render_html(blocks: Sequence[Block], figures: dict[str, bytes], title: str = "fedpse report") -> str:
    body = _html_blocks(blocks, figures)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _html_blocks(blocks: Sequence[Block], figures: dict[str, bytes]) -> str:
    out: list[str] = []
    esc = html.escape
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{esc(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{esc(block[1])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "figure":
            data = base64.b64encode(figures[block[1]]).decode("ascii")
            out.append(
                f'<figure><img alt="{esc(block[1])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(block[2])}</figcaption></figure>"
            )
        elif kind == "table":
            table: Table = block[1]
            if not table.rows:
                out.append("<p>(none)</p>")
                continue
            head = "".join(f"<th>{esc(h)}</th>" for h in table.headers)
            rows = "".join(
                "<tr>"
                + "".join(
                    f'<td class="num">{esc(c)}</td>' if k in table.right else f"<td>{esc(c)}</td>"
                    for k, c in enumerate(row)
                )
                + "</tr>"
                for row in table.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "details":
            out.append(
                f"<details><summary>{esc(block[1])}</summary>{_html_blocks(block[2], figures)}</details>"
            )
    return "\n".join(out)
