"""The audit report rendered for people: one self-contained HTML page (inline CSS, figures as data:
URIs, no script, nothing fetched) and a short Markdown summary, both from `build_report`'s plain data."""

from __future__ import annotations

import html
import json
import math
from typing import Any

from server.audit_figures import build_figures, num
from server.audit_ledgers import VOID_EPSILON

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
        return (
            f'<figure id="fig-{name}"><img class="plot" alt="{e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{e(caption)}</figcaption></figure>"
        )

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
        # What the coordinator's ServerApp recorded: run from its app bundle, it has no git commit to add.
        ("Code version (the run's ServerApp)", run["code_version"]),
        ("Config hash", run["config_hash"]),
        ("Base model", run["base_model"]),
        ("Base model sha256", run["base_model_sha256"] or "not recorded (a run from before the pin)"),
        ("Flower run ids", ", ".join(map(str, run["flower_run_ids"])) or "not recorded"),
    ]
    site_rows = [
        [
            sid,
            s.get("epsilon_before_run"),
            s.get("epsilon_total"),
            s.get("budget_epsilon"),
            _remaining(s),
            s.get("ledger") or "not given (manifest declaration only)",
        ]
        for sid, s in report["sites"].items()
    ]
    privacy_rows = [
        [
            sid,
            row["round"],
            row.get("noise_multiplier"),
            row.get("sample_rate"),
            row.get("steps"),
            row.get("max_grad_norm"),
            row.get("delta"),
            row.get("epsilon_round"),
            row.get("epsilon_total"),
            row.get("trust_model", "local"),
            row.get("epsilon_total_sum"),
            row.get("epsilon_total_own"),
            row.get("source"),
        ]
        for sid, s in report["sites"].items()
        for row in s["rounds"]
    ]
    round_rows = [
        [
            r["round"],
            r["kind"],
            ", ".join(r["sites"]) or "-",
            r["rejected"],
            r["train_loss"],
            r["eval_loss"],
            _Markup(f'<span class="hash">{e(str(r["adapter_sha256"]))}</span>'),
        ]
        for r in report["rounds"]
    ]
    rejected = report["rejected"]
    rejected_html = (
        table(
            ["round", "site", "node", "reason"],
            [[x["round"], x["site_id"] or "?", x["node_id"], x["reason"]] for x in rejected],
        )
        if rejected
        else '<p class="ok">No update was rejected.</p>'
    )
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
Generated {e(report["generated_at"])} by silo {e(report["generated_by"])} (this report's generator; the run's own
code version is under Method) from the run directory and
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
        lines.append(
            f"| {sid} | {_text(s.get('epsilon_total'))} | {_text(s.get('budget_epsilon'))} | "
            f"{_text(_remaining(s))} | {source} |"
        )
    lines += ["", "| round | adapter sha256 |", "|---|---|"]
    lines += [f"| {r['round']} | `{r['adapter_sha256']}` |" for r in report["rounds"]]
    return "\n".join(lines) + "\n"


def _remaining(site: dict[str, Any]) -> Any:
    budget, total = site.get("budget_epsilon"), site.get("epsilon_total")
    if budget is None or total is None:
        return None
    if budget == "inf":
        return "inf"
    return -math.inf if total == "inf" else num(budget) - num(total)


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
