"""The auditor's report of a finished (or failed) run: what was trained, with how much privacy, from
what the coordinator recorded and what the sites' exported ledgers say.

Read-only by design: it reads `RUN/manifest.json`, the round adapters' hashes, and the JSONL ledgers
that `silo ledger export` writes. Nothing secret, no records, no model weights are needed.

    build_report(run_dir, ledgers)  -> plain data (the JSON twin)
    write_report(run_dir, out_dir)  -> report.html, report.json, summary.md

This module gathers the report; `server.audit_render` renders it (HTML page, Markdown summary) and
`server.audit_figures` draws its plots.

The manifest is read through its one schema (common/manifest.py); the ledgers arrive as
`server.audit_ledgers.LedgerFile`s, read by the site's own reader (the `silo` command hands them in).
Findings come first: ledger entries whose ε claim is void because their noise was not fresh, and
sites whose ledger went backwards (the coordinator's warning in the manifest). Chains, signatures
and every ε are checked by `server.audit_verify`, not here.
"""

from __future__ import annotations

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
from server.audit_ledgers import LedgerFile, ledger_restarts, void_epsilon_entries
from server.audit_render import render_html, render_markdown
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
            site["rounds"].append(
                {
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
                }
            )
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
        if ledger:
            _total_after_run(site, ledger, run_id)
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
            _total_after_run(sites[ledger.site_id], ledger, run_id)

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
        ],
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
        ],
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
        row.update(
            {
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
            }
        )
    site["rounds"] = [rows[n] for n in sorted(rows)]


def _total_after_run(site: dict[str, Any], ledger: LedgerFile, run_id: str | None) -> None:
    """The site's total ε after its last ledger entry of this run, whatever its kind: the evaluation
    answers a site gives after its last training round are spent too (a round's own figure would leave
    the final evaluation out and show more budget left than the ledger does)."""
    spent = [e for e in ledger.entries if e.get("run_id") == run_id and e.get("epsilon_total") is not None]
    if spent:
        site["epsilon_total"] = spent[-1]["epsilon_total"]
        site["budget_epsilon"] = spent[-1].get("budget_epsilon", site.get("budget_epsilon"))


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
        ),
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
