"""The `flwr` CLI's connection to one SuperLink: submitting Silo's app (`flwr run`), registering
SuperNode keys (`flwr supernode register`) and following a run's status (`flwr ls`).

`flwr run` exits 0 even when the run failed, so the outcome is read from `flwr ls` (and, by
silo/run_progress.py, from the run's manifest).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common.errors import FederationFailed
from common.pki import KeyLayout
from silo.flower_processes import BIN, flower_env

APP_DIR = Path(__file__).resolve().parent.parent  # the project root holds the Flower app's pyproject
# Seconds between `flwr ls` status calls while following a run (each is a Python process: ~1 CPU-second,
# which a 2-core site machine would otherwise take from training every second).
STATUS_EVERY_S = 10.0


class FlowerConnection:
    """How the `flwr` CLI reaches one SuperLink: a private FLWR_HOME holding one connection."""

    def __init__(self, flwr_home: Path, address: str, *, insecure: bool, root_certificates: Path | None = None) -> None:
        self.flwr_home = Path(flwr_home).resolve()
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.address = address
        self.env = flower_env(self.flwr_home)
        self.superlink_alive: Callable[[], bool] = lambda: True
        lines = [
            "[superlink]",
            'default = "silo"',
            "",
            "[superlink.silo]",
            f'address = "{address}"',
            f"insecure = {'true' if insecure else 'false'}",
        ]
        if root_certificates is not None:
            lines.append(f'root-certificates = "{Path(root_certificates).resolve()}"')
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n")

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "flwr"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.flwr_home,
            timeout=timeout,
            check=False,
        )

    def submit(self, run_config: dict[str, str], app_dir: Path = APP_DIR) -> int:
        overrides = " ".join(f"{k}={json.dumps(str(v))}" for k, v in run_config.items())
        out = self.flwr("run", str(app_dir), "silo", "--run-config", overrides, "--format", "json")
        try:
            payload = json.loads(out.stdout)
        except json.JSONDecodeError:
            payload = {}
        if out.returncode != 0 or not payload.get("success", False) or "run-id" not in payload:
            detail = (out.stdout + out.stderr).strip()[-2000:]
            raise FederationFailed(f"`flwr run` could not submit the run to {self.address}: {detail}")
        return int(payload["run-id"])

    def register_supernode(self, public_key: Path) -> str:
        """Register a SuperNode's public key with the SuperLink; "registered" or "already registered".

        Registration is kept in the SuperLink's database, so after a restart the key is already known."""
        out = self.flwr(
            "supernode", "register", str(Path(public_key).resolve()), "silo", "--format", "json", timeout=60
        )
        try:
            payload = json.loads(out.stdout)
        except json.JSONDecodeError:
            payload = {}
        if payload.get("success"):
            return "registered"
        if "already in use" in str(payload.get("error-message", "")):
            return "already registered"
        detail = (out.stdout + out.stderr).strip()[-2000:]
        raise FederationFailed(f"could not register SuperNode key {public_key} with {self.address}: {detail}")

    def run_status(self, run_id: int) -> dict[str, Any]:
        """The run's status as `flwr ls` reports it; {} when unknown for now (the caller asks again): a
        status call that times out on a busy machine says nothing about the run itself."""
        try:
            out = self.flwr("ls", "--run-id", str(run_id), "--format", "json", timeout=30)
        except subprocess.TimeoutExpired:
            return {}
        try:
            runs = json.loads(out.stdout).get("runs", [])
        except json.JSONDecodeError:
            return {}
        return runs[0] if runs else {}

    def wait(
        self,
        run_id: int,
        *,
        timeout: float,
        poll: Callable[[], None] | None = None,
        interval: float = 1.0,
        status_every: float = STATUS_EVERY_S,
        ended: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Block until the run is finished (any sub-status); `poll` is called every `interval`. Flower's
        status (a `flwr ls` process: about a CPU-second each) is asked every `status_every` seconds, and at
        once when `ended()` says the run's own files show it over."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        asked = float("-inf")
        while time.monotonic() < deadline:
            if poll is not None:
                poll()
            if time.monotonic() - asked >= status_every or (ended is not None and ended()):
                asked = time.monotonic()
                status = self.run_status(run_id)
            if str(status.get("status", "")).startswith("finished"):
                return status
            if not self.superlink_alive():
                raise FederationFailed(f"the SuperLink died during run {run_id}")
            time.sleep(interval)
        raise FederationFailed(
            f"run {run_id} did not finish within {timeout:.0f}s (last status {status.get('status')!r})"
        )


def register_sites(connection: FlowerConnection, keys: KeyLayout) -> dict[str, str]:
    """Register every site's SuperNode key in `keys` (coordinator/supernodes/<id>.pub) with the SuperLink."""
    pubs = keys.supernode_public_keys()
    # One `flwr` process each (~1.3 s of start-up apiece): run them side by side.
    with ThreadPoolExecutor(max_workers=min(8, len(pubs) or 1)) as pool:
        outcomes = list(pool.map(connection.register_supernode, pubs))
    return {pub.stem: outcome for pub, outcome in zip(pubs, outcomes, strict=True)}
