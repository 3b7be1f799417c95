"""The auditor's report of a finished (or failed) run: what was trained, with how much privacy, from
what the coordinator recorded and what the sites' exported ledgers say.

Read-only by design: it reads `RUN/manifest.json`, the round adapters' hashes, and the JSONL ledgers
that `silo ledger export` writes. Nothing secret, no records, no model weights are needed.

    build_report(run_dir, ledgers)  -> plain data (the JSON twin)
    render_html(report)             -> one self-contained HTML page, plots as base64 PNG
    render_markdown(report)         -> a short summary

The manifest is read through its one schema (common/manifest.py); the ledgers arrive as
`server.audit_ledgers.LedgerFile`s, read by the site's own reader (the `silo` command hands them in).
Findings come first: ledger entries whose ε claim is void because their noise was not fresh, and
sites whose ledger went backwards (the coordinator's warning in the manifest). Chains, signatures
and every ε are checked by `server.audit_verify`, not here.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.declaration import sum_scrub_reports
from common.manifest import Manifest, read_manifest
from common.schema import strict_json
from common.version import CODE_VERSION
from server.audit_ledgers import VOID_EPSILON, LedgerFile, ledger_restarts, void_epsilon_entries
from server.report_verdict import Verdict, not_verified

NO_KEYS = (
    "no site public keys were given (`silo audit report --public-key`, or `silo audit verify`); the figures below "
    "are as the coordinator and the ledgers record them"
)

REPORT_SCHEMA = 1
"""Version of the JSON twin's layout."""

ADAPTER_FILE = "adapter_model.safetensors"  # server.checkpoint.ADAPTER_FILE, the file each round hash covers

SAMPLING_ASSUMPTION = "poisson"
"""Opacus' RDP/PRV accountants are exact for Poisson subsampling; a ledger says which sampling it used."""

FIGURE_DPI = 110  # crisp on a laptop screen, ~30-60 KB per PNG
FIGURE_WIDTH_IN = 9.0  # 990 px at FIGURE_DPI: fits the report's 1100 px column


# ---- the report as data -------------------------------------------------------------------------


def build_report(
    run_dir: str | Path, ledgers: list[LedgerFile] | None = None, verdict: Verdict | None = None
) -> dict[str, Any]:
    """Everything the report shows, as strict-JSON-ready plain data (ε = inf as the string "inf").
    `verdict`: the outcome of `server.audit_verify` for this run (None: not verified)."""
    run_dir = Path(run_dir)
    typed = read_manifest(run_dir)
    manifest = typed.to_dict()
    ledgers = ledgers or []
    config = manifest.get("config") or {}
    rounds = sorted(manifest.get("rounds", []), key=lambda r: r["round"])
    train_rounds = [r for r in rounds if r.get("kind") == "train"]
    by_site = {ledger.site_id: ledger for ledger in ledgers if ledger.site_id}

    sites: dict[str, dict[str, Any]] = {}
    for r in train_rounds:
        for s in r.get("sites", []):
            site = sites.setdefault(s["site_id"], {"site_id": s["site_id"], "rounds": [], "scrub": None})
            privacy = s.get("privacy") or {}
            site["rounds"].append({
                "round": r["round"],
                "epsilon_round": _float_or_inf(privacy.get("epsilon_round")),
                "epsilon_total": _float_or_inf(privacy.get("epsilon_total")),
                "budget_epsilon": _float_or_inf(privacy.get("budget_epsilon")),
                "noise_multiplier": privacy.get("noise_multiplier"),
                "sample_rate": privacy.get("sample_rate"),
                "steps": privacy.get("steps"),
                "max_grad_norm": privacy.get("max_grad_norm"),
                "delta": privacy.get("delta"),
                "accountant": privacy.get("accountant"),
                "conversion": privacy.get("conversion"),
                "dp_enabled": privacy.get("dp_enabled"),
                "update_sha256": s.get("update_sha256"),
                "num_examples": s.get("num_examples"),
                **_trust_model(privacy.get("distributed")),
                "source": "manifest (declared by the site)",
            })  # fmt: skip
            if s.get("scrub"):
                site["scrub"] = s["scrub"]  # every round re-scrubs the same records: keep the latest
    run_id = manifest.get("run_id")
    for site_id, site in sites.items():
        ledger = by_site.get(site_id)
        site["ledger"] = str(ledger.path) if ledger else None
        site["epsilon_before_run"] = _epsilon_before_run(ledger, run_id) if ledger else None
        if ledger:
            _overlay_ledger(site, ledger, run_id)
        last = site["rounds"][-1] if site["rounds"] else {}
        site["epsilon_total"] = last.get("epsilon_total")
        site["budget_epsilon"] = last.get("budget_epsilon")
    for ledger in ledgers:  # a ledger whose site never reached the manifest (all updates rejected)
        if ledger.site_id and ledger.site_id not in sites:
            sites[ledger.site_id] = {
                "site_id": ledger.site_id,
                "rounds": [],
                "scrub": None,
                "ledger": str(ledger.path),
                "epsilon_before_run": _epsilon_before_run(ledger, run_id),
            }
            _overlay_ledger(sites[ledger.site_id], ledger, run_id)
            last = sites[ledger.site_id]["rounds"][-1] if sites[ledger.site_id]["rounds"] else {}
            sites[ledger.site_id]["epsilon_total"] = last.get("epsilon_total")
            sites[ledger.site_id]["budget_epsilon"] = last.get("budget_epsilon")

    # A failed run's last round has no entry (nothing was aggregated); its rejections are kept beside.
    failed_round = manifest.get("failed_round")
    rejected = [
        {"round": r["round"], "node_id": x.get("node_id"), "site_id": x.get("site_id"), "reason": x.get("reason")}
        for r in [*train_rounds, *([failed_round] if failed_round else [])]
        for x in r.get("rejected", [])
    ]
    report = {
        "schema": REPORT_SCHEMA,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "generated_by": CODE_VERSION,
        "verification": (verdict or not_verified(NO_KEYS)).to_dict(),
        "run": {
            "run_dir": str(run_dir),
            "run_id": run_id,
            "status": manifest.get("status"),
            "failure": manifest.get("failure"),
            "created": manifest.get("created"),
            "finished": manifest.get("finished"),
            "code_version": manifest.get("code_version"),
            "config_hash": manifest.get("config_hash"),
            "base_model": manifest.get("base_model"),
            "base_model_sha256": manifest.get("base_model_sha256"),
            "flower_run_ids": manifest.get("flower_run_ids", []),
            "failed_round": failed_round["round"] if failed_round else None,
            "strategy": (config.get("federation") or {}).get("strategy"),
            "rounds_planned": manifest.get("rounds_planned"),
            "completed_rounds": manifest.get("completed_rounds"),
        },
        "method": _method(manifest, sites, ledgers),
        "rounds": [
            {
                "round": r["round"],
                "kind": r.get("kind"),
                "adapter_sha256": r.get("adapter_sha256"),
                "adapter_file": str(Path("rounds") / str(r["round"]) / ADAPTER_FILE),
                "sites": [s["site_id"] for s in r.get("sites", [])],
                "rejected": len(r.get("rejected", [])),
                "train_loss": _finite_or_none((r.get("train") or {}).get("train_loss")),
                "eval_loss": _finite_or_none((r.get("eval") or {}).get("eval_loss")),
            }
            for r in rounds
        ],  # fmt: skip
        "sites": dict(sorted(sites.items())),
        "scrub_totals": _scrub_totals(sites),
        "rejected": rejected,
        "findings": _findings(typed, ledgers),
        "ledgers": [
            {
                "path": str(x.path),
                "site_id": x.site_id,
                "entries": len(x.entries),
                "public_key_sha256": _key_fingerprint(x.public_key_hex),
            }
            for x in ledgers
        ],  # fmt: skip
    }
    return strict_json(report)


def _findings(manifest: Manifest, ledgers: list[LedgerFile]) -> dict[str, Any]:
    """What an auditor must not miss: ε claims that do not hold, ledgers that went backwards."""
    return {
        "void_epsilon": [asdict(v) | {"describe": v.describe()} for v in void_epsilon_entries(ledgers)],
        "ledger_regressions": [
            {"round": n, **g.to_dict(), "message": g.message()} for n, g in manifest.ledger_regressions
        ],
        "ledger_restarts": ledger_restarts(ledgers),
    }


def _trust_model(distributed: dict[str, Any] | None) -> dict[str, Any]:
    """Who a round's noise was added by: "local" (all at the site), or "distributed (t = n)" with both ε
    totals (against the SecAgg sum of t honest shares; on the site's own share alone)."""
    if not distributed:
        return {"trust_model": "local", "epsilon_total_sum": None, "epsilon_total_own": None}
    return {
        "trust_model": f"distributed (t = {distributed.get('min_honest')}, budget on {distributed.get('budget_figure')})",
        "epsilon_total_sum": _float_or_inf(distributed.get("epsilon_total_sum")),
        "epsilon_total_own": _float_or_inf(distributed.get("epsilon_total_own")),
    }


def _overlay_ledger(site: dict[str, Any], ledger: LedgerFile, run_id: str | None) -> None:
    """Where the site's ledger is given, its signed `round` entries are the ε source of record."""
    recorded = {e["round"]: e for e in ledger.entries if e.get("kind") == "round" and e.get("run_id") == run_id}
    rows = {row["round"]: row for row in site["rounds"]}
    for n, entry in sorted(recorded.items()):
        row = rows.setdefault(n, {"round": n, "update_sha256": None, "num_examples": entry.get("dataset_size")})
        row.update({
            "epsilon_round": entry["epsilon_round"],
            "epsilon_total": entry["epsilon_total"],
            "budget_epsilon": entry["budget_epsilon"],
            "noise_multiplier": entry["noise_multiplier"],
            "sample_rate": entry["sample_rate"],
            "steps": entry["steps"],
            "max_grad_norm": entry["max_grad_norm"],
            "delta": entry["delta"],
            "accountant": entry["accountant"],
            "conversion": entry["epsilon_conversion"],
            "dp_enabled": entry["dp_enabled"],
            "sampling": entry["sampling"],
            "ledger_update_sha256": entry["update_sha256"],
            "ledger_index": entry["index"],
            **_trust_model(entry.get("distributed")),
            "source": "ledger",
        })  # fmt: skip
    site["rounds"] = [rows[n] for n in sorted(rows)]


def _epsilon_before_run(ledger: LedgerFile, run_id: str | None) -> float:
    """The site's total ε before this run's first reservation (earlier runs spend the same budget)."""
    total = 0.0
    for entry in ledger.entries:
        if entry.get("run_id") == run_id:
            break
        total = entry.get("epsilon_total", total)
    return total


def _method(manifest: dict[str, Any], sites: dict[str, Any], ledgers: list[LedgerFile]) -> dict[str, Any]:
    """How every ε was computed, and which protections were on."""
    rows = [row for site in sites.values() for row in site["rounds"]]
    config = manifest.get("config") or {}

    def distinct(name: str) -> list[Any]:
        return sorted({row.get(name) for row in rows if row.get(name) is not None}, key=str)

    sampling = sorted({e["sampling"] for x in ledgers for e in x.entries if e.get("sampling")})
    central = manifest.get("central_dp") or config.get("central_dp") or {}
    secagg = manifest.get(
        "secagg", (config.get("security") or {}).get("secagg", (config.get("federation") or {}).get("secagg"))
    )
    return {
        "accountant": distinct("accountant"),
        "epsilon_conversion": distinct("conversion"),
        "delta": distinct("delta"),
        "sampling": sampling or [f"{SAMPLING_ASSUMPTION} (assumed; no ledger given to confirm)"],
        "neighbouring_relation": "add-or-remove-one record (Opacus' and dp-accounting's default)",
        "secagg": _on_off(secagg),
        "central_dp": (
            {"enabled": True, **{k: v for k, v in central.items() if k != "enabled"}}
            if central.get("enabled")
            else "off"
        ),  # fmt: skip
        "epsilon_source": "ledger entries where a site's ledger is given, else the site's declaration in the manifest",
    }


def _on_off(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("enabled")
    return "on" if value is True or value == "on" else "off"


def _scrub_totals(sites: dict[str, Any]) -> dict[str, Any]:
    scrubs = (site.get("scrub") or {} for site in sites.values())
    totals = sum_scrub_reports(scrubs, numbers=("records_in", "quarantined"), tallies=("entities",))
    return totals | {"entities": dict(Counter(totals["entities"]).most_common())}


def _key_fingerprint(public_hex: str | None) -> str | None:
    import hashlib

    return hashlib.sha256(bytes.fromhex(public_hex)).hexdigest()[:16] if public_hex else None


def _float_or_inf(value: Any) -> Any:
    if value == "inf":
        return math.inf
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _finite_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _num(value: Any) -> float:
    """A report number back to float for plotting ("inf" -> inf, None -> nan)."""
    if value is None:
        return math.nan
    return math.inf if value == "inf" else float(value)


# ---- figures ------------------------------------------------------------------------------------


def build_figures(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """name -> (caption, base64 PNG). Matplotlib's object API (no pyplot state, no display needed)."""
    figures = {
        "epsilon": ("Cumulative ε per site over rounds (solid) against the site's budget (dashed).", _fig_epsilon(report)),
        "dp_parameters": ("DP-SGD settings per site and round: noise multiplier σ, sampling rate q, clipping norm C.",
                          _fig_dp_parameters(report)),
        "sites_per_round": ("Sites per round: updates aggregated and updates rejected.", _fig_sites_per_round(report)),
        "scrub": ("PII found and replaced before training, by entity type and site (latest round's scrub).",
                  _fig_scrub(report)),
    }  # fmt: skip
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
    return {site: {"color": color, "marker": markers[i % len(markers)], "linewidth": 1.2 + 1.6 * (n - 1 - i),
                   "markersize": 5 + 3 * (n - 1 - i)}
            for i, (site, color) in enumerate(_colors(report).items())}  # fmt: skip


def _fig_epsilon(report: dict[str, Any]) -> Any:
    fig, ax = _figure(3.6)
    colors = _colors(report)
    styles = _styles(report)
    finite_max = 0.0
    for site_id, site in report["sites"].items():
        start = site.get("epsilon_before_run")
        xs = ([0] if start is not None else []) + [row["round"] for row in site["rounds"]]
        ys = ([_num(start)] if start is not None else []) + [_num(row["epsilon_total"]) for row in site["rounds"]]
        shown = [min(y, 1e6) for y in ys]  # ε = inf (a round without DP) drawn off the top
        ax.plot(xs, shown, label=f"{site_id} ε", **styles[site_id])
        budget = _num(site.get("budget_epsilon"))
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


def _fig_dp_parameters(report: dict[str, Any]) -> Any:
    fig, axes = _figure(2.8, ncols=3)
    styles = _styles(report)
    ticks = sorted({r["round"] for r in report["rounds"] if r["kind"] == "train"})
    for ax, (name, label) in zip(axes, (("noise_multiplier", "noise multiplier σ"), ("sample_rate", "sampling rate q"),
                                        ("max_grad_norm", "clipping norm C")), strict=True):  # fmt: skip
        for site_id, site in report["sites"].items():
            xs = [row["round"] for row in site["rounds"]]
            ys = [_num(row.get(name)) for row in site["rounds"]]
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


# ---- HTML and Markdown --------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;
color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em;margin-bottom:0}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.sub{color:#555;margin-top:4px}
table{border-collapse:collapse;font-size:0.86em;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}code,.hash{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.92em}
dl.method{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dl.method dt{font-weight:600}
dl.method dd{margin:0}figure{margin:12px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:0.9em}.bad{color:#b00020;font-weight:600}.ok{color:#1b7f3b;font-weight:600}
"""


PRIVACY_HEADERS = [
    *("site", "round", "σ", "q", "steps", "C", "δ", "ε round", "ε total", "noise added by"),
    *("ε total vs the sum (t honest)", "ε total, own noise alone", "source"),
]
"""The per-round DP table's columns; the two distributed figures are empty for local noise."""


def render_html(report: dict[str, Any], figures: dict[str, tuple[str, str]] | None = None) -> str:
    """One self-contained page: inline CSS, plots as data: URIs, no script, nothing fetched."""
    figures = figures if figures is not None else build_figures(report)
    run, method = report["run"], report["method"]
    e = html.escape

    def fig(name: str) -> str:
        caption, data = figures[name]
        return (f'<figure id="fig-{name}"><img class="plot" alt="{e(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(caption)}</figcaption></figure>")  # fmt: skip

    def table(headers: list[str], rows: list[list[Any]]) -> str:
        head = "".join(f"<th>{e(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    method_rows = [
        ("Accountant", ", ".join(method["accountant"]) or "n/a"),
        ("ε conversion", ", ".join(str(c) for c in method["epsilon_conversion"]) or "n/a (PRV has none)"),
        ("δ", ", ".join(f"{d:g}" for d in method["delta"]) or "n/a"),
        ("Sampling assumption", ", ".join(method["sampling"])),
        ("Neighbouring relation", method["neighbouring_relation"]),
        ("Secure aggregation (SecAgg)", method["secagg"]),
        ("Central DP", "off" if method["central_dp"] == "off" else json.dumps(method["central_dp"])),
        ("ε source", method["epsilon_source"]),
        ("Code version", run["code_version"]),
        ("Config hash", run["config_hash"]),
        ("Base model", run["base_model"]),
        ("Base model sha256", run["base_model_sha256"] or "not recorded (a run from before the pin)"),
        ("Flower run ids", ", ".join(map(str, run["flower_run_ids"])) or "not recorded"),
    ]
    site_rows = [[sid, s.get("epsilon_before_run"), s.get("epsilon_total"), s.get("budget_epsilon"),
                  _remaining(s), s.get("ledger") or "not given (manifest declaration only)"]
                 for sid, s in report["sites"].items()]  # fmt: skip
    privacy_rows = [[sid, row["round"], row.get("noise_multiplier"), row.get("sample_rate"), row.get("steps"),
                     row.get("max_grad_norm"), row.get("delta"), row.get("epsilon_round"), row.get("epsilon_total"),
                     row.get("trust_model", "local"), row.get("epsilon_total_sum"), row.get("epsilon_total_own"),
                     row.get("source")] for sid, s in report["sites"].items() for row in s["rounds"]]  # fmt: skip
    round_rows = [[r["round"], r["kind"], ", ".join(r["sites"]) or "-", r["rejected"], r["train_loss"], r["eval_loss"],
                   _Markup(f'<span class="hash">{e(str(r["adapter_sha256"]))}</span>')] for r in report["rounds"]]  # fmt: skip
    rejected = report["rejected"]
    rejected_html = (table(["round", "site", "node", "reason"],
                           [[x["round"], x["site_id"] or "?", x["node_id"], x["reason"]] for x in rejected])
                     if rejected else '<p class="ok">No update was rejected.</p>')  # fmt: skip
    scrub = report["scrub_totals"]
    scrub_rows = [[t, n] for t, n in scrub["entities"].items()]
    findings_html = _findings_html(report["findings"], table)
    status_class = "ok" if run["status"] == "completed" else "bad"
    verification = report["verification"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Silo audit report: run {e(str(run["run_id"]))}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<p id="verdict" class="{"ok" if verification["status"] == "verified" else "bad"}">{e(verification["line"])}</p>
<h1>Silo audit report</h1>
{_failure_html(run)}
<p class="sub">Run <code>{e(str(run["run_id"]))}</code>, status <span class="{status_class}">{e(str(run["status"]))}</span>,
{e(str(run["completed_rounds"]))} of {e(str(run["rounds_planned"]))} rounds, strategy {e(str(run["strategy"]))}.
Generated {e(report["generated_at"])} by silo {e(report["generated_by"])} from the run directory and
{len(report["ledgers"])} exported ledger(s); nothing secret and no records were read.</p>
<h2>Findings</h2>
{findings_html}
<h2>Method</h2>
<dl class="method">{"".join(f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in method_rows)}</dl>
<h2>Privacy spent</h2>
{fig("epsilon")}
{table(["site", "ε before run", "ε total", "budget ε", "remaining", "ledger"], site_rows)}
{fig("dp_parameters")}
<details><summary>Per-round DP events</summary>
{table(PRIVACY_HEADERS, privacy_rows)}</details>
<h2>Participation</h2>
{fig("sites_per_round")}
<h2>Rejected updates</h2>
{rejected_html}
<h2>PII scrubbing</h2>
<p>{scrub["records_in"]} records scrubbed at the sites (latest round), {scrub["quarantined"]} quarantined.</p>
{fig("scrub")}
{table(["entity type", "replaced"], scrub_rows)}
<h2>Rounds and adapter hashes</h2>
{table(["round", "kind", "sites", "rejected", "train loss", "eval loss", "adapter sha256"], round_rows)}
<p class="sub">Check these with <code>silo audit verify</code>: it recomputes every ε with an independent
accountant, checks each ledger's hash chain and signatures, each adapter file's sha256, and that each
site's ledger records the same update hash as this manifest.</p>
</body></html>
"""


def _failure_html(run: dict[str, Any]) -> str:
    if run["status"] != "failed":
        return ""
    where = f" in round {run['failed_round']}" if run.get("failed_round") is not None else ""
    why = run.get("failure") or "no reason recorded"
    return f'<p class="bad" id="failure">The run failed{where}: {html.escape(why)}</p>'


def _findings_html(findings: dict[str, Any], table: Any) -> str:
    e = html.escape
    void, regressions = findings["void_epsilon"], findings["ledger_regressions"]
    parts = []
    if void:
        rows = [[v["site_id"] or "?", v["index"], v["run_id"], v["round"], v["reason"]] for v in void]
        count = f"{len(void)} ledger entr{'y' if len(void) == 1 else 'ies'}"
        parts.append(f'<p class="bad" id="void-epsilon">{e(VOID_EPSILON)}: {count}.</p>')
        parts.append(table(["site", "ledger entry", "run", "round", "why"], rows))
    if regressions:
        parts.append(
            f'<p class="bad" id="ledger-regressions">Ledger head went backwards ({len(regressions)} warning(s) '
            "the coordinator recorded): the budget those ledgers enforce was reset.</p>"
        )
        items = "".join(f"<li>round {g['round']}: {e(g['message'])}</li>" for g in regressions)
        parts.append(f"<ul>{items}</ul>")
    restarts = findings.get("ledger_restarts", [])
    if restarts:
        parts.append('<p class="bad" id="ledger-restarts">Ledger restarted by its operator:</p>')
        parts.append("<ul>" + "".join(f"<li>{e(r)}</li>" for r in restarts) + "</ul>")
    if not parts:
        parts.append('<p class="ok">No void ε claim in the ledgers given, and no ledger that went backwards.</p>')
    return "\n".join(parts)


def render_markdown(report: dict[str, Any]) -> str:
    run, method, findings = report["run"], report["method"], report["findings"]
    lines = [report["verification"]["line"], "", f"# Silo audit summary: run {run['run_id']}", ""]
    if run["status"] == "failed":
        where = f" in round {run['failed_round']}" if run.get("failed_round") is not None else ""
        lines.append(f"- **the run failed{where}:** {run.get('failure') or 'no reason recorded'}")
    if findings.get("ledger_restarts"):
        lines.append(f"- **ledger restarted:** {'; '.join(findings['ledger_restarts'])}")
    if findings["ledger_regressions"]:
        warnings = "; ".join(f"round {g['round']}: {g['message']}" for g in findings["ledger_regressions"])
        lines.append(f"- **ledger head went backwards:** {warnings}")
    if findings["void_epsilon"]:
        lines.append(f"- **{VOID_EPSILON}:** " + "; ".join(v["describe"] for v in findings["void_epsilon"]))
    lines += [
        f"- status **{run['status']}**, {run['completed_rounds']} of {run['rounds_planned']} rounds, "
        f"strategy {run['strategy']}; code {run['code_version']}, config hash `{run['config_hash']}`",
        f"- accountant {', '.join(method['accountant']) or 'n/a'}, conversion "
        f"{', '.join(str(c) for c in method['epsilon_conversion']) or 'n/a'}, δ "
        f"{', '.join(f'{d:g}' for d in method['delta']) or 'n/a'}, sampling {', '.join(method['sampling'])}",
        f"- SecAgg {method['secagg']}; central DP {'off' if method['central_dp'] == 'off' else 'on'}",
        f"- base model {run['base_model']}, sha256 `{run['base_model_sha256'] or 'not recorded'}`; Flower run id(s) "
        f"{', '.join(map(str, run['flower_run_ids'])) or 'not recorded'}",
        f"- updates rejected: {len(report['rejected'])}; PII entities replaced: "
        f"{sum(report['scrub_totals']['entities'].values())} in {report['scrub_totals']['records_in']} records",
        *(
            f"  - round {x['round']}, site {x['site_id'] or '?'} (node {x['node_id']}): {x['reason']}"
            for x in report["rejected"]
        ),
        "",
        "| site | ε total | budget ε | remaining | source |",
        "|---|---|---|---|---|",
    ]
    for sid, s in report["sites"].items():
        source = "ledger" if s.get("ledger") else "manifest"
        lines.append(f"| {sid} | {_text(s.get('epsilon_total'))} | {_text(s.get('budget_epsilon'))} | "
                     f"{_text(_remaining(s))} | {source} |")  # fmt: skip
    lines += ["", "| round | adapter sha256 |", "|---|---|"]
    lines += [f"| {r['round']} | `{r['adapter_sha256']}` |" for r in report["rounds"]]
    return "\n".join(lines) + "\n"


def write_report(
    run_dir: str | Path, out_dir: str | Path, ledgers: list[LedgerFile] | None = None, verdict: Verdict | None = None
) -> dict[str, Path]:
    """report.html, report.json and summary.md in `out_dir`; returns their paths."""
    report = build_report(run_dir, ledgers, verdict)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"html": out / "report.html", "json": out / "report.json", "markdown": out / "summary.md"}
    paths["html"].write_text(render_html(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    return paths


def _remaining(site: dict[str, Any]) -> Any:
    budget, total = site.get("budget_epsilon"), site.get("epsilon_total")
    if budget is None or total is None:
        return None
    if budget == "inf":
        return "inf"
    return -math.inf if total == "inf" else _num(budget) - _num(total)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    return str(value)


class _Markup(str):
    """HTML built (and escaped) by this module; every other cell value is escaped."""


def _cell(value: Any) -> str:
    return value if isinstance(value, _Markup) else html.escape(_text(value))
