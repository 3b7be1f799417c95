"""The audit report's figures: matplotlib plots of the report's plain data (ε per site over rounds,
DP-SGD settings, sites per round, PII scrubbed), each a base64 PNG for the HTML page to inline.
Matplotlib's object API and a lazy import: no pyplot state, no display, nothing loaded until drawn."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

FIGURE_DPI = 110  # crisp on a laptop screen, ~30-60 KB per PNG
FIGURE_WIDTH_IN = 9.0  # 990 px at FIGURE_DPI: fits the report's 1100 px column


def num(value: Any) -> float:
    """A report number back to float for plotting ("inf" -> inf, None -> nan)."""
    if value is None:
        return math.nan
    return math.inf if value == "inf" else float(value)


def build_figures(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """name -> (caption, base64 PNG). Matplotlib's object API (no pyplot state, no display needed)."""
    figures = {
        "epsilon": (
            "Cumulative ε per site over rounds (solid) against the site's budget (dashed).",
            _fig_epsilon(report),
        ),
        "dp_parameters": (
            "DP-SGD settings per site and round: noise multiplier σ, sampling rate q, clipping norm C.",
            _fig_dp_parameters(report),
        ),
        "sites_per_round": ("Sites per round: updates aggregated and updates rejected.", _fig_sites_per_round(report)),
        "scrub": (
            "PII found and replaced before training, by entity type and site (latest round's scrub).",
            _fig_scrub(report),
        ),
    }
    return {name: (caption, _png(fig)) for name, (caption, fig) in figures.items()}


def _figure(height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(FIGURE_WIDTH_IN, height), dpi=FIGURE_DPI, layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _colors(report: dict[str, Any]) -> dict[str, str]:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    return {site: palette[i % len(palette)] for i, site in enumerate(report["sites"])}


def _styles(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per site: colour, marker, and a line that thins site by site, so that sites with identical
    values (the same DP settings) stay visible on top of one another instead of hiding each other."""
    markers = "osD^vP*X"
    n = len(report["sites"])
    return {
        site: {
            "color": color,
            "marker": markers[i % len(markers)],
            "linewidth": 1.2 + 1.6 * (n - 1 - i),
            "markersize": 5 + 3 * (n - 1 - i),
        }
        for i, (site, color) in enumerate(_colors(report).items())
    }


def _fig_epsilon(report: dict[str, Any]) -> Any:
    fig, ax = _figure(3.6)
    colors = _colors(report)
    styles = _styles(report)
    finite_max = 0.0
    for site_id, site in report["sites"].items():
        start = site.get("epsilon_before_run")
        xs = ([0] if start is not None else []) + [row["round"] for row in site["rounds"]]
        ys = ([num(start)] if start is not None else []) + [num(row["epsilon_total"]) for row in site["rounds"]]
        shown = [min(y, 1e6) for y in ys]  # ε = inf (a round without DP) drawn off the top
        ax.plot(xs, shown, label=f"{site_id} ε", **styles[site_id])
        budget = num(site.get("budget_epsilon"))
        if math.isfinite(budget):
            ax.axhline(budget, linestyle="--", color=colors[site_id], alpha=0.7, label=f"{site_id} budget")
            finite_max = max(finite_max, budget)
        finite_max = max([finite_max, *[y for y in ys if math.isfinite(y)]])
    ax.set_ylim(0, max(finite_max * 1.15, 1.0))
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative ε")
    ax.set_xticks(sorted({r["round"] for r in report["rounds"]}))
    ax.grid(alpha=0.3)
    if report["sites"]:
        ax.legend(fontsize=8, ncols=2, loc="best")
    else:
        ax.text(0.5, 0.5, "no site reported privacy", ha="center", va="center", transform=ax.transAxes)
    return fig


# The DP-SGD settings plotted side by side: (key in a site's round row, axis label).
_DP_PARAMETERS = (
    ("noise_multiplier", "noise multiplier σ"),
    ("sample_rate", "sampling rate q"),
    ("max_grad_norm", "clipping norm C"),
)


def _fig_dp_parameters(report: dict[str, Any]) -> Any:
    fig, axes = _figure(2.8, ncols=3)
    styles = _styles(report)
    ticks = sorted({r["round"] for r in report["rounds"] if r["kind"] == "train"})
    for ax, (name, label) in zip(axes, _DP_PARAMETERS, strict=True):
        for site_id, site in report["sites"].items():
            xs = [row["round"] for row in site["rounds"]]
            ys = [num(row.get(name)) for row in site["rounds"]]
            ax.plot(xs, ys, label=site_id, **styles[site_id])
        ax.set_title(label, fontsize=10)
        ax.set_xticks(ticks)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    if report["sites"]:
        axes[0].legend(fontsize=8)
    return fig


def _fig_sites_per_round(report: dict[str, Any]) -> Any:
    fig, ax = _figure(2.8)
    rounds = [r for r in report["rounds"] if r["kind"] == "train"]
    xs = [r["round"] for r in rounds]
    accepted = [len(r["sites"]) for r in rounds]
    rejected = [r["rejected"] for r in rounds]
    ax.bar(xs, accepted, color="#2ca02c", label="aggregated")
    ax.bar(xs, rejected, bottom=accepted, color="#d62728", label="rejected")
    ax.set_xlabel("round")
    ax.set_ylabel("sites")
    ax.set_xticks(xs)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig


def _fig_scrub(report: dict[str, Any]) -> Any:
    types = list(report["scrub_totals"]["entities"])
    fig, ax = _figure(max(2.4, 0.32 * len(types) + 1.0))
    colors = _colors(report)
    left = [0] * len(types)
    for site_id, site in report["sites"].items():
        counts = (site.get("scrub") or {}).get("entities") or {}
        values = [int(counts.get(t, 0)) for t in types]
        ax.barh(types, values, left=left, color=colors[site_id], label=site_id)
        left = [a + b for a, b in zip(left, values, strict=True)]
    if not types:
        ax.text(0.5, 0.5, "no scrub counts recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.invert_yaxis()
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("entities replaced")
    ax.grid(alpha=0.3, axis="x")
    return fig
