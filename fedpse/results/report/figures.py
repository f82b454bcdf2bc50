"""The report's figures. Pure: runs in, PNG bytes out; ``FIGURES`` names each with its caption."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from fedpse.results.report.canvas import (
    nested_width,
    new_figure,
    png_bytes,
    say_no_data,
    style_axes,
    wrap_label,
)
from fedpse.results.report.runs import Run
from fedpse.results.report.stats import TRADEOFFS, adaptation_curve, gain_stats, tradeoff_points, unit_scale

FRONT_COLOR = "#f2b134"
MAX_POINT_LABELS = 6


def figure_gain_distribution(runs: Sequence[Run]) -> bytes:
    """Per-user gain: empirical CDF per run (left) and box plots with every user as a dot (right)."""
    fig = new_figure(12.5, 4.8)
    cdf_ax, box_ax = fig.subplots(1, 2, width_ratios=[1.6, min(1.4, 0.35 + 0.25 * len(runs))])
    fig.suptitle("Per-user SI-SDR gain, personalized − generic", fontweight="bold")
    rng = np.random.default_rng(0)
    any_scored = False
    for i, run in enumerate(runs):
        gains = run.gains()
        gains = np.sort(gains[np.isfinite(gains)])
        stats = gain_stats(run)
        if gains.size:
            any_scored = True
            steps = np.arange(1, gains.size + 1) / gains.size
            cdf_ax.step(
                np.r_[gains[0], gains],
                np.r_[0.0, steps],
                where="post",
                color=run.color,
                linewidth=nested_width(i, len(runs)),
                alpha=0.9,
                label=f"{run.label}: {stats.improved_percent:.0f} % improved",
            )
            box_ax.boxplot(
                [gains],
                positions=[i],
                widths=0.55,
                showfliers=False,
                medianprops={"color": run.color, "linewidth": 2},
                boxprops={"color": "#444444"},
                whiskerprops={"color": "#444444"},
                capprops={"color": "#444444"},
            )
            jitter = rng.uniform(-0.17, 0.17, gains.size)
            box_ax.scatter(i + jitter, gains, s=14, color=run.color, alpha=0.7, zorder=3, linewidths=0)
        else:
            box_ax.text(
                i,
                0.5,
                "no scored\nusers",
                ha="center",
                va="center",
                fontsize=8,
                color="#777777",
                transform=box_ax.get_xaxis_transform(),
            )
    for ax in (cdf_ax, box_ax):
        style_axes(ax)
    cdf_ax.axvline(0, color="black", linewidth=1)
    cdf_ax.set_xlabel("gain (dB)")
    cdf_ax.set_ylabel("fraction of users with gain ≤ x")
    cdf_ax.set_ylim(0, 1.02)
    cdf_ax.set_title("cumulative distribution", fontsize=10)
    if any_scored:
        fig.legend(loc="outside lower center", ncols=min(len(runs), 4), fontsize=9)
    else:
        say_no_data(cdf_ax, "no scored users")
    box_ax.axhline(0, color="black", linewidth=1)
    box_ax.set_xticks(range(len(runs)), [wrap_label(run.label) for run in runs], fontsize=8)
    box_ax.set_xlim(-0.6, len(runs) - 0.4)
    box_ax.set_ylabel("gain (dB)")
    box_ax.set_title("box: quartiles, whiskers 1.5 IQR; dots: users", fontsize=10)
    return png_bytes(fig)


def figure_gain_vs_minutes(runs: Sequence[Run]) -> bytes:
    """Mean gain after each round against the unlabeled audio the students have been fine-tuned on."""
    from matplotlib.lines import Line2D

    fig = new_figure(9.0, 5.0)
    ax = fig.subplots()
    style_axes(ax)
    drawn = 0
    labelled: set[tuple[float, float]] = set()
    for i, run in enumerate(runs):
        means, points = adaptation_curve(run)
        if not means:
            continue
        drawn += 1
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=10, color=run.color, alpha=0.25, linewidths=0)
        ax.plot(
            [0.0] + [m["minutes"] for m in means],
            [0.0] + [m["gain"] for m in means],
            color=run.color,
            linewidth=nested_width(i, len(runs)),
            alpha=0.9,
            marker=run.marker,
            markersize=5 + 2.5 * (len(runs) - 1 - i),
            markerfacecolor="none",
            markeredgewidth=1.5,
            label=run.label,
        )
        if len(means) <= 8:
            for m in means:
                spot = (round(m["minutes"], 2), round(m["gain"], 1))
                if m["minutes"] > 0 and spot not in labelled:
                    labelled.add(spot)
                    ax.annotate(
                        f"round {m['round']}",
                        (m["minutes"], m["gain"]),
                        textcoords="offset points",
                        xytext=(8, -14),
                        fontsize=7.5,
                        color="#444444",
                    )
    ax.axhline(0, color="black", linewidth=1)
    ax.set_xlabel("unlabeled audio fine-tuned on (minutes per user, cumulative)")
    ax.set_ylabel("SI-SDR gain (dB)")
    ax.set_title("Gain vs adaptation audio, round by round", fontweight="bold")
    ax.set_xlim(left=-0.02)
    if drawn:
        handles = [
            Line2D(
                [],
                [],
                color=run.color,
                linewidth=2,
                marker=run.marker,
                markerfacecolor="none",
                label=run.label,
            )
            for run in runs
        ]
        ax.legend(handles=handles, loc="upper left", fontsize=8)
    else:
        say_no_data(ax, "no per-round evaluations (evaluations.csv) in these runs")
    return png_bytes(fig)


def figure_gap_closure(runs: Sequence[Run], clip: tuple[float, float] = (-1.0, 2.0)) -> bytes:
    """Teacher–student gap per user: gain against the teacher's lead (left), gap closure per user (right)."""
    from matplotlib.lines import Line2D

    fig = new_figure(13.0, 5.4)
    gap_ax, user_ax = fig.subplots(1, 2, width_ratios=[1, 1.5])
    fig.suptitle(
        "Teacher–student gap closure: (personalized − generic) / (teacher − generic)", fontweight="bold"
    )
    for ax in (gap_ax, user_ax):
        style_axes(ax)
    users = sorted({u for run in runs for u in run.user_ids()})
    position = {u: k for k, u in enumerate(users)}
    dodge = min(0.6 / max(len(runs), 1), 0.2)
    closures_all = np.concatenate([run.gap_closures() for run in runs]) if runs else np.array([])
    finite_all = closures_all[np.isfinite(closures_all)]
    low = max(clip[0], min(-0.1, float(finite_all.min()) if finite_all.size else 0.0))
    high = min(clip[1], max(1.1, float(finite_all.max()) if finite_all.size else 1.0))
    bottom = low - 0.08 * (high - low)
    leads: list[float] = []
    undefined = 0
    for i, run in enumerate(runs):
        gaps, gains, closures = run.teacher_gaps(), run.gains(), run.gap_closures()
        ok = np.isfinite(gaps) & np.isfinite(gains)
        if ok.any():
            leads.extend(gaps[ok].tolist())
            gap_ax.scatter(
                gaps[ok],
                gains[ok],
                s=20 + 14 * (len(runs) - 1 - i),
                marker=run.marker,
                facecolors="none",
                edgecolors=run.color,
                linewidths=1.4,
            )
        xs = np.array([position[u] for u in run.user_ids()], dtype=float) + (i - (len(runs) - 1) / 2) * dodge
        finite = np.isfinite(closures)
        shown = np.clip(closures, low, high)
        inside = finite & (closures >= low) & (closures <= high)
        user_ax.scatter(xs[inside], shown[inside], s=26, marker=run.marker, color=run.color, zorder=3)
        for beyond, marker in ((finite & (closures > high), "^"), (finite & (closures < low), "v")):
            if beyond.any():
                user_ax.scatter(
                    xs[beyond],
                    shown[beyond],
                    s=44,
                    marker=marker,
                    color=run.color,
                    edgecolors="black",
                    linewidths=0.6,
                    zorder=4,
                )
        missing = ~finite & np.isfinite(gaps)
        undefined += int(missing.sum())
        user_ax.scatter(xs[missing], np.full(missing.sum(), bottom), s=22, marker="x", color="#888888")
    if leads:
        line = np.array([min(0.0, min(leads)), max(0.0, max(leads))]) * 1.05
        gap_ax.plot(line, line, color="black", linewidth=1)
        gap_ax.plot(line, line / 2, color="black", linewidth=1, linestyle=":")
        gap_ax.axhline(0, color="#555555", linewidth=0.8)
        gap_ax.axvline(0, color="#555555", linewidth=0.8)
    else:
        say_no_data(gap_ax, "no users with teacher and student scores")
    gap_ax.set_xlabel("teacher − generic (dB): the teacher's lead")
    gap_ax.set_ylabel("personalized − generic (dB): the gain")
    gap_ax.set_title("each marker a user", fontsize=10)
    user_ax.axhline(1, color="black", linewidth=1)
    user_ax.axhline(0, color="#555555", linewidth=0.8)
    user_ax.set_ylim(bottom - 0.06 * (high - low), high + 0.08 * (high - low))
    user_ax.set_ylabel("gap closure")
    user_ax.set_title(f"per user: 1 = reached the teacher; ▲/▼ beyond [{low:.2g}, {high:.2g}]", fontsize=10)
    if len(users) <= 60:
        rotation = 0 if len(users) <= 10 else 90
        user_ax.set_xticks(range(len(users)), users, rotation=rotation, fontsize=7 if len(users) > 20 else 8)
    else:
        user_ax.set_xticks([])
        user_ax.set_xlabel(f"{len(users)} users, by id")
    user_ax.set_xlim(-0.7, len(users) - 0.3)
    handles = [
        Line2D([], [], linestyle="none", marker=run.marker, color=run.color, label=run.label) for run in runs
    ]
    handles += [
        Line2D([], [], color="black", linewidth=1, label="left: gap closed (= teacher)"),
        Line2D([], [], color="black", linewidth=1, linestyle=":", label="left: half the gap"),
    ]
    if undefined:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="x",
                color="#888888",
                label="right: no closure (teacher ≤ generic)",
            )
        )
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=9)
    return png_bytes(fig)


def figure_tradeoffs(runs: Sequence[Run]) -> bytes:
    """Mean gain against each per-user cost, the Pareto front (lowest cost for the gain) highlighted."""
    from matplotlib.lines import Line2D

    fig = new_figure(4.6 * len(TRADEOFFS), 5.0)
    axes = fig.subplots(1, len(TRADEOFFS), sharey=True)
    fig.suptitle("Mean gain vs what it costs each user", fontweight="bold")
    for ax, (cost, kind, title, xlabel) in zip(axes, TRADEOFFS, strict=True):
        style_axes(ax)
        costs, gains, front = tradeoff_points(runs, cost)
        scale, unit = unit_scale(costs, kind)
        xs = [c / scale for c in costs]
        if len(front) > 1:
            order = sorted(front, key=lambda i: (xs[i], gains[i]))
            ax.step(
                [xs[i] for i in order],
                [gains[i] for i in order],
                where="post",
                color=FRONT_COLOR,
                linewidth=7,
                alpha=0.5,
                solid_capstyle="round",
                zorder=1,
            )
        for i, run in enumerate(runs):
            if not (math.isfinite(xs[i]) and math.isfinite(gains[i])):
                continue
            if i in front:
                ax.scatter(xs[i], gains[i], s=330, color=FRONT_COLOR, alpha=0.6, linewidths=0, zorder=2)
            ax.scatter(
                xs[i],
                gains[i],
                s=70,
                marker=run.marker,
                color="white" if run.reference else run.color,
                edgecolors=run.color,
                linewidths=2.0 if run.reference else 1.0,
                zorder=3,
            )
        if len(runs) <= MAX_POINT_LABELS:  # beyond that the labels pile up: the legend names every marker
            _annotate_groups(ax, xs, gains, runs)
        if not any(math.isfinite(g) for g in gains):
            say_no_data(ax, "no scored users")
            ax.set_ylim(-1, 1)
        ax.axhline(0, color="#555555", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{xlabel} ({unit})")
        ax.margins(y=0.15)
        right = max((x for x in xs if math.isfinite(x)), default=0.0) or 1.0
        ax.set_xlim(-0.06 * right, 1.15 * right)  # from zero: a cost axis that starts elsewhere misleads
    axes[0].set_ylabel("mean SI-SDR gain (dB)")
    handles = [
        Line2D(
            [],
            [],
            linestyle="none",
            marker=run.marker,
            markersize=8,
            color=run.color,
            markerfacecolor="white" if run.reference else run.color,
            label=run.label + (" (reference: kept off the front)" if run.reference else ""),
        )
        for run in runs
    ]
    handles.append(
        Line2D(
            [], [], color=FRONT_COLOR, linewidth=7, alpha=0.5, marker="o", markersize=14, label="Pareto front"
        )
    )
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=9)
    return png_bytes(fig)


def _annotate_groups(ax, xs: list[float], ys: list[float], runs: Sequence[Run]) -> None:
    """Name the points; runs at the same spot share one label instead of printing over each other."""
    finite = [i for i in range(len(runs)) if math.isfinite(xs[i]) and math.isfinite(ys[i])]
    if not finite:
        return
    span_x = (max(xs[i] for i in finite) - min(xs[i] for i in finite)) or 1.0
    span_y = (max(ys[i] for i in finite) - min(ys[i] for i in finite)) or 1.0
    groups: list[list[int]] = []
    for i in finite:
        for group in groups:
            j = group[0]
            if abs(xs[i] - xs[j]) < 0.03 * span_x and abs(ys[i] - ys[j]) < 0.05 * span_y:
                group.append(i)
                break
        else:
            groups.append([i])
    for group in groups:
        j = group[0]
        on_right = xs[j] > min(xs[i] for i in finite) + 0.6 * span_x
        ax.annotate(
            "\n".join(runs[i].label for i in group),
            (xs[j], ys[j]),
            textcoords="offset points",
            xytext=(-9, 8) if on_right else (9, 8),
            ha="right" if on_right else "left",
            fontsize=7.5,
            color="#333333",
            zorder=4,
        )


FIGURES: dict[str, tuple[Callable[[Sequence[Run]], bytes], str]] = {
    "gain_distribution": (
        figure_gain_distribution,
        "Per-user SI-SDR gain (personalized − generic): cumulative distribution and box plot, per run.",
    ),
    "gain_vs_minutes": (
        figure_gain_vs_minutes,
        "Mean gain after each round against the unlabeled audio each student has been fine-tuned on; "
        "faint dots are individual users.",
    ),
    "gap_closure": (
        figure_gap_closure,
        "Teacher–student gap closure per user: the gain against the teacher's lead over the generic student "
        "(on the solid line a user reached the teacher), and each user's closure. Closure is undefined (–, ×) for "
        "users whose teacher is not better than their generic student.",
    ),
    "tradeoffs": (
        figure_tradeoffs,
        "Mean gain against raw audio uploaded, bytes downloaded and device compute per user; the shaded step is "
        "the Pareto front (no other run gains more for less). Reference modes (oracle_clean: clean targets, "
        "simulation only) are hollow and kept off the front.",
    ),
}
