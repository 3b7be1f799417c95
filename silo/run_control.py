"""Run control for the federation operator: `silo federation status | list | logs | stop`.

On top of Flower's Control API (`flwr ls`, `flwr log`, `flwr stop`), which the SuperLink serves on
its loopback port only (`silo coordinator start`; from elsewhere through an SSH tunnel). A run is
named by its run directory (`--run-dir`: Silo's run id and every Flower run id of it are in its
manifest) or by Flower's run id (`--run-id`). Both ids are shown side by side wherever a run is.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError, FederationFailed
from common.manifest import Manifest, read_manifest
from common.pki import KeyLayout
from silo.flower_connection import FlowerConnection

# Seconds one `flwr` call may take before the SuperLink is called unreachable.
FLWR_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SuperLinkAccess:
    """How to reach the SuperLink's Control API: its loopback address and its CA (or plain text)."""

    address: str
    root_certificates: Path | None
    insecure: bool

    @classmethod
    def from_args(
        cls, superlink: str, keys: Path | None, root_certificates: Path | None, insecure: bool
    ) -> SuperLinkAccess:
        if keys is not None and root_certificates is None:
            root_certificates = KeyLayout(keys).ca_cert if (keys / "coordinator").is_dir() else keys / "ca.pem"
        if not insecure and root_certificates is None:
            raise ConfigError(
                "give --keys (or --root-certificates) for a TLS SuperLink, or --insecure for a plain-text test setup"
            )
        return cls(superlink, root_certificates, insecure)

    @contextmanager
    def connect(self) -> Iterator[FlowerConnection]:
        with tempfile.TemporaryDirectory(prefix="silo-flwr-") as home:
            yield FlowerConnection(
                Path(home), self.address, insecure=self.insecure, root_certificates=self.root_certificates
            )


def flwr_json(conn: FlowerConnection, *args: str) -> dict[str, Any]:
    """A `flwr ... --format json` answer; FederationFailed with Flower's message when it failed."""
    out = conn.flwr(*args, "--format", "json", timeout=FLWR_TIMEOUT_S)
    try:
        payload = json.loads(out.stdout)
    except json.JSONDecodeError:
        payload = {}
    if out.returncode != 0 or not payload.get("success", False):
        detail = payload.get("error-message") or (out.stdout + out.stderr).strip()[-500:]
        raise FederationFailed(f"`flwr {args[0]}` against {conn.address} failed: {detail}")
    return payload


def flower_run_id(run_dir: Path | None, run_id: int | None) -> tuple[int, Manifest | None]:
    """Flower's id of the run to act on: `run_id`, or the latest submission recorded in `run_dir`."""
    if run_id is not None:
        return run_id, None
    if run_dir is None:
        raise ConfigError("name the run: --run-dir (the coordinator's run directory) or --run-id (Flower's run id)")
    manifest = read_manifest(run_dir)
    if not manifest.flower_run_ids:
        raise ConfigError(f"{run_dir} records no Flower run id (a run from before they were recorded): give --run-id")
    return manifest.flower_run_ids[-1], manifest


def silo_runs(runs: Path | None) -> dict[int, tuple[str, Path]]:
    """Flower run id -> (Silo run id, run directory), for every run directory directly under `runs`."""
    found: dict[int, tuple[str, Path]] = {}
    for manifest_path in sorted(runs.glob("*/manifest.json")) if runs is not None else []:
        try:
            manifest = read_manifest(manifest_path)
        except ConfigError:
            continue  # not a run directory of this schema: nothing to annotate with
        for fid in manifest.flower_run_ids:
            found[fid] = (manifest.run_id, manifest_path.parent)
    return found


def describe(run: dict[str, Any], silo: tuple[str, Path] | None) -> str:
    details = f" ({run['status-details']})" if run.get("status-details") else ""
    who = f"Silo run {silo[0]} in {silo[1]}" if silo else "no Silo run directory known"
    return f"Flower run {run['run-id']}: {run['status']}{details}, elapsed {_elapsed(run.get('elapsed'))}; {who}"


def _elapsed(value: Any) -> str:
    """Flower's elapsed seconds (a number, or its text) to the second; anything else as it came."""
    try:
        seconds = round(float(value))
    except (TypeError, ValueError, OverflowError):
        return "?" if value is None else str(value)
    minutes, secs = divmod(seconds, 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def list_runs(access: SuperLinkAccess, runs: Path | None) -> list[str]:
    with access.connect() as conn:
        payload = flwr_json(conn, "ls")
    known = silo_runs(runs)
    return [describe(r, known.get(int(r["run-id"]))) for r in payload.get("runs", [])]


def run_status(access: SuperLinkAccess, run_dir: Path | None, run_id: int | None) -> list[str]:
    fid, manifest = flower_run_id(run_dir, run_id)
    with access.connect() as conn:
        runs = flwr_json(conn, "ls", "--run-id", str(fid)).get("runs", [])
    if not runs:
        raise FederationFailed(f"the SuperLink at {access.address} knows no Flower run {fid}")
    lines = [describe(runs[0], (manifest.run_id, Path(str(run_dir))) if manifest else None)]
    if manifest is not None:
        lines.append(
            f"manifest: {manifest.status}, {max(manifest.completed_rounds, 0)} of {manifest.rounds_planned} rounds; "
            f"Flower run ids {', '.join(map(str, manifest.flower_run_ids))}"
            + (f"; failure: {manifest.failure}" if manifest.failure else "")
        )
    return lines


def run_logs(access: SuperLinkAccess, run_dir: Path | None, run_id: int | None) -> str:
    fid, _ = flower_run_id(run_dir, run_id)
    with access.connect() as conn:
        out = conn.flwr("log", str(fid), "--show", timeout=FLWR_TIMEOUT_S)
    if out.returncode != 0:
        raise FederationFailed(
            f"`flwr log {fid}` against {access.address} failed: {(out.stdout + out.stderr).strip()[-500:]}"
        )
    return out.stdout


def stop_run(access: SuperLinkAccess, fid: int) -> str:
    """Ask the SuperLink to stop Flower run `fid`; the line that says what happened."""
    with access.connect() as conn:
        flwr_json(conn, "stop", str(fid))
    return f"stopped Flower run {fid} at the SuperLink {access.address}: sites receive no further messages of it"
