"""The report as a document: a list of blocks (headings, text, tables, figures), the same for Markdown and HTML."""

from __future__ import annotations

from collections.abc import Sequence

from fedpse.results.report.figures import FIGURES
from fedpse.results.report.runs import Run
from fedpse.results.report.stats import TRADEOFFS, gain_stats, tradeoff_points
from fedpse.results.report.tables import (
    WORST_USERS,
    Table,
    costs_table,
    dnsmos_table,
    extra_summary_table,
    guard_table,
    guard_users_table,
    number_cell,
    per_user_table,
    results_table,
    rounds_table,
    rt60_table,
    runs_table,
    unscored_users_table,
    worst_users_table,
)

# A report is a list of blocks, rendered to Markdown and to HTML alike:
#   ("h1"|"h2"|"h3", text)  ("p", text)  ("list", [text])  ("table", Table)  ("figure", name, caption)
#   ("details", summary, [blocks])
Block = tuple


def report_blocks(runs: Sequence[Run], created: str) -> list[Block]:
    """The whole report as blocks (shared by the Markdown and HTML renderers)."""
    blocks: list[Block] = [
        ("h1", "fedpse report"),
        (
            "p",
            f"{len(runs)} run(s), report made {created}. SI-SDR in dB; gain = personalized − generic student on "
            "each user's held-out test mixtures; a user improved when the gain is above 0 dB.",
        ),
        ("h2", "Runs"),
        ("table", runs_table(runs)),
        ("h2", "Results"),
        ("table", results_table(runs)),
        *_rt60_blocks(runs),
        *_dnsmos_blocks(runs),
        *_guard_blocks(runs),
        ("h2", "Costs per mode"),
        (
            "p",
            "Per-user means and run totals from users.csv (every message charged by the ledger); audio exposed = "
            "seconds of a user's raw audio that left the device.",
        ),
        ("table", costs_table(runs)),
        ("h2", "Per-user gain"),
        ("list", [_improved_line(run) for run in runs]),
        ("figure", "gain_distribution", FIGURES["gain_distribution"][1]),
        (
            "h3",
            f"Worst users (lowest gain, up to {WORST_USERS} per run; runs where every gain is 0 left out)",
        ),
        ("table", worst_users_table(runs)),
    ]
    unscored = unscored_users_table(runs)
    if unscored is not None:
        blocks += [("h3", "Users without a final score or not ok"), ("table", unscored)]
    blocks += [
        ("h2", "Gain vs adaptation minutes"),
        ("figure", "gain_vs_minutes", FIGURES["gain_vs_minutes"][1]),
        _fold_if_long("Mean gain per round", rounds_table(runs)),
        ("h2", "Teacher–student gap closure"),
        ("figure", "gap_closure", FIGURES["gap_closure"][1]),
        ("h2", "Trade-offs: privacy, download, device compute"),
        ("figure", "tradeoffs", FIGURES["tradeoffs"][1]),
        ("p", "On the Pareto front (lowest cost for its gain; reference modes excluded):"),
        ("list", pareto_lines(runs)),
    ]
    extra = extra_summary_table(runs)
    if extra is not None:
        blocks += [("h2", "Other summary fields"), ("table", extra)]
    blocks.append(
        ("details", "Per-user results (every user of every run)", [("table", per_user_table(runs))])
    )
    return blocks


def _section(title: str, text: str, table: Table | None) -> list[Block]:
    """A heading, a paragraph and ``table``; nothing when there is no table (no run has what it shows)."""
    return [] if table is None else [("h3", title), ("p", text), ("table", table)]


def _rt60_blocks(runs: Sequence[Run]) -> list[Block]:
    """Gains per reverberation-time bin, for runs whose users are in rooms (nothing otherwise)."""
    return _section(
        "By room reverberation time (RT60)",
        "Users binned by the RT60 their room was drawn with (world.room.rt60_s); scores against the run's clean "
        "reference (world.room.target: dry speech or early reverberation). Mean gain = personalized − generic; "
        "teacher lead = teacher − generic; gap closure = mean gain / mean teacher lead.",
        rt60_table(runs),
    )


def _dnsmos_blocks(runs: Sequence[Run]) -> list[Block]:
    """The DNSMOS table, for runs scored with ``scoring.dnsmos`` (nothing otherwise)."""
    return _section(
        "DNSMOS P.835 (non-intrusive)",
        "Mean over scored users of DNSMOS OVR / SIG / BAK (MOS, 1–5) on the same held-out test mixtures, from the "
        "models' outputs alone (no clean reference); OVR gain = personalized − generic.",
        dnsmos_table(runs),
    )


def _guard_blocks(runs: Sequence[Run]) -> list[Block]:
    """The personalization guard's decisions, for runs with ``adapt.guard`` on (nothing otherwise)."""
    table = guard_table(runs)
    if table is None:
        return []
    text = (
        "Users whose fine-tuned student the guard turned down (kept generic) or adopted in their last round, and the "
        "gain over the generic student with the guard and without it (every fine-tuned student adopted). Guard "
        "scores: SI-SDR on probe mixtures (dB), or 10 × DNSMOS OVR; teacher lead = teacher − generic."
    )
    return [
        *_section("Personalization guard", text, table),
        _fold_if_long("The guard's decision per user", guard_users_table(runs)),
    ]


def _fold_if_long(title: str, table: Table, rows: int = 12) -> Block:
    return ("table", table) if len(table.rows) <= rows else ("details", title, [("table", table)])


def _improved_line(run: Run) -> str:
    stats = gain_stats(run)
    if not stats.scored:
        return f"{run.label}: no scored users"
    return (
        f"{run.label}: {stats.improved} of {stats.scored} users improved ({stats.improved_percent:.0f} %), "
        f"mean gain {number_cell(stats.mean, signed=True)} dB, median {number_cell(stats.median, signed=True)} dB"
    )


def pareto_lines(runs: Sequence[Run]) -> list[str]:
    lines = []
    for cost, _, title, _ in TRADEOFFS:
        costs, _, front = tradeoff_points(runs, cost)
        names = ", ".join(runs[i].label for i in sorted(front, key=lambda i: costs[i])) or "–"
        lines.append(f"{title}: {names}")
    return lines
