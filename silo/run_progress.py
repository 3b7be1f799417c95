"""A run's progress as the operator follows it: one line per evaluated round from the run's manifest,
each site's state, and the run's outcome (`flwr run` exits 0 even when the run failed, so the
outcome is read from `flwr ls` and from the manifest).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from common.errors import FederationFailed
from silo.flower_connection import FlowerConnection

# Seconds between asks for Flower's status of a run whose own files have not said it ended.
FALLBACK_STATUS_EVERY_S = 30.0


class RoundProgress:
    """Prints one line per evaluated round, read from the run's manifest as the run goes, and once
    which Silo run this Flower run is (`flower_run_id`)."""

    def __init__(self, run_dir: Path, log: Any, flower_run_id: int | None = None) -> None:
        self.manifest = Path(run_dir) / "manifest.json"
        self.log = log
        self.shown = -1
        self.t0 = time.monotonic()
        self.flower_run_id = flower_run_id

    def __call__(self) -> None:
        try:
            manifest = json.loads(self.manifest.read_text())
        except (OSError, json.JSONDecodeError):
            return
        if self.flower_run_id is not None and self.flower_run_id in manifest.get("flower_run_ids", []):
            line = f"Silo run {manifest['run_id']} in {self.manifest.parent} is Flower run {self.flower_run_id}"
            print(f"[{time.monotonic() - self.t0:6.1f}s] {line}", file=self.log, flush=True)
            self.flower_run_id = None
        planned = manifest.get("rounds_planned", "?")
        for entry in manifest.get("rounds", []):
            n = entry["round"]
            # A round is shown once its hold-out answers are in: with the same train replies as the next
            # round's training, or one round later from sites that answer after replying (client/answer_later.py).
            if n <= self.shown or not (entry.get("eval") or {}).get("sites"):
                continue
            self.shown = n
            ev = entry["eval"].get("eval_loss", float("nan"))
            # Sites answer with DP releases: the mean of their error bars says how much of a change is noise.
            noise = entry["eval"].get("eval_loss_noise_std")
            held_out = f"held-out loss {ev:.4f}" + (f" (DP, ±{noise:.2f} per site)" if noise else "")
            if n == 0:
                line = f"round 0/{planned}  {held_out}  (initial adapter)"
            else:
                line = (
                    f"round {n}/{planned}  sites {len(entry.get('sites', []))}  {held_out}  "
                    f"rejected {len(entry.get('rejected', []))}"
                )
            print(f"[{time.monotonic() - self.t0:6.1f}s] {line}", file=self.log, flush=True)


def follow_run(connection: FlowerConnection, run_id: int, run_dir: Path, *, timeout: float, log: Any) -> dict[str, Any]:
    """Wait for `run_id`, showing each site's state as it changes and each round as it completes;
    return the manifest, or raise unless it really completed."""
    from silo.live_screen import LiveScreen

    progress = RoundProgress(run_dir, log, flower_run_id=run_id)
    live = LiveScreen(Path(run_dir), log, t0=progress.t0)

    def poll() -> None:
        live()
        progress()

    def ended() -> bool:
        try:
            return json.loads(manifest_path.read_text()).get("status") in ("completed", "failed")
        except (OSError, ValueError):
            return False

    manifest_path = Path(run_dir) / "manifest.json"
    # The run's own files say when it ends; Flower's status (a `flwr ls` process, about a CPU-second that
    # the sites and the coordinator would otherwise have) is asked then, and now and then for a run that
    # died without saying so.
    status = connection.wait(run_id, timeout=timeout, poll=poll, ended=ended, status_every=FALLBACK_STATUS_EVERY_S)
    live()
    progress()
    path = Path(run_dir) / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    if status.get("status") != "finished:completed" or manifest.get("status") != "completed":
        reason = manifest.get("failure") or f"Flower reports {status.get('status')!r}"
        raise FederationFailed(f"run {run_id} failed: {reason}")
    return manifest
