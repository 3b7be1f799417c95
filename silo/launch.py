"""Start a real Flower federation on this machine: one SuperLink and one SuperNode per site, each a
separate process talking over loopback sockets, then submit Silo's app with `flwr run`.

`flwr run` exits 0 even when the run failed, so the outcome is read from `flwr ls` and from the
run's manifest. Every process started here is stopped on exit, with its children.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import FederationFailed

BIN = Path(sys.executable).parent
# Flower's run states that mean the run is over.
FINISHED_STATUSES = ("finished",)
APP_DIR = Path(__file__).resolve().parent.parent  # the project root holds the Flower app's pyproject


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flower_env(flwr_home: Path, *, threads: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        # Never let Flower `uv sync` the app's dependencies (with torch listed: GBs of CUDA wheels).
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
        "PYTHONUNBUFFERED": "1",
        # The SuperLink and SuperNodes start `flower-superexec` and app processes by name.
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        sig = signal.SIGKILL if kill else signal.SIGTERM
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=timeout)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class LocalFederation:
    """A SuperLink and one SuperNode per site TOML, on loopback, until `stop()` or `with` exit."""

    workdir: Path
    site_configs: list[Path]
    insecure: bool = True
    superlink_port: int = 0
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.logs = self.workdir / "logs"
        self.flwr_home = self.workdir / "flwr-home"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.superlink_port = self.superlink_port or free_port()
        self.env = flower_env(self.flwr_home)
        self._write_flwr_config()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.superlink_port}"

    def _write_flwr_config(self) -> None:
        (self.flwr_home / "config.toml").write_text(
            '[superlink]\ndefault = "silo"\n\n[superlink.silo]\n'
            f'address = "{self.address}"\ninsecure = {"true" if self.insecure else "false"}\n'
        )

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        log = self.logs / f"{name}.log"
        fh = log.open("ab")
        popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=self.env,
                                 cwd=self.workdir, start_new_session=True)
        fh.close()
        proc = Proc(name, popen, log)
        self.procs = [p for p in self.procs if p.name != name] + [proc]
        return proc

    def start_superlink(self, *, database: Path | None = None) -> Proc:
        argv = [str(BIN / "flower-superlink"), "--host", "127.0.0.1", "--port", str(self.superlink_port),
                "--disable-runtime-dependency-installation"]
        if self.insecure:
            argv.append("--insecure")
        if database is not None:
            argv += ["--database", str(database)]
        proc = self._spawn("superlink", argv)
        self._wait_superlink(proc)
        return proc

    def _wait_superlink(self, proc: Proc, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise FederationFailed(f"SuperLink exited at start (log {proc.log}):\n{proc.tail()}")
            try:
                scheme = "http" if self.insecure else "https"
                urllib.request.urlopen(f"{scheme}://{self.address}/health", timeout=1)  # noqa: S310
                return
            except OSError:
                time.sleep(0.3)
        raise FederationFailed(f"SuperLink not healthy after {timeout:.0f}s (log {proc.log})")

    def start_site(self, index: int) -> Proc:
        cfg = Path(self.site_configs[index]).resolve()
        argv = [str(BIN / "flower-supernode"), "--superlink", self.address, "--port", str(free_port()),
                "--node-config", f"site-config='{cfg}'"]
        if self.insecure:
            argv.append("--insecure")
        return self._spawn(f"site-{index}", argv)

    def start(self) -> LocalFederation:
        self.start_superlink()
        for i in range(len(self.site_configs)):
            self.start_site(i)
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- runs ------------------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "flwr"), *args], capture_output=True, text=True, env=self.env,
                              cwd=self.workdir, timeout=timeout, check=False)

    def submit(self, run_config: dict[str, str], app_dir: Path = APP_DIR) -> int:
        overrides = " ".join(f"{k}={json.dumps(str(v))}" for k, v in run_config.items())
        out = self.flwr("run", str(app_dir), "silo", "--run-config", overrides, "--format", "json")
        try:
            payload = json.loads(out.stdout)
        except json.JSONDecodeError:
            payload = {}
        if out.returncode != 0 or not payload.get("success", False) or "run-id" not in payload:
            raise FederationFailed(f"`flwr run` could not submit the run: {(out.stdout + out.stderr).strip()[-2000:]}")
        return int(payload["run-id"])

    def run_status(self, run_id: int) -> dict[str, Any]:
        out = self.flwr("ls", "--run-id", str(run_id), "--format", "json", timeout=30)
        try:
            runs = json.loads(out.stdout).get("runs", [])
        except json.JSONDecodeError:
            return {}
        return runs[0] if runs else {}

    def wait(self, run_id: int, *, timeout: float, poll: Callable[[], None] | None = None,
             interval: float = 1.0) -> dict[str, Any]:
        """Block until the run is finished (any sub-status); `poll` is called every `interval`."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if poll is not None:
                poll()
            status = self.run_status(run_id)
            if str(status.get("status", "")).startswith(FINISHED_STATUSES):
                return status
            superlink = next((p for p in self.procs if p.name == "superlink"), None)
            if superlink is not None and not superlink.alive():
                raise FederationFailed(f"the SuperLink died during run {run_id} (log {superlink.log}):\n{superlink.tail()}")
            time.sleep(interval)
        raise FederationFailed(f"run {run_id} did not finish within {timeout:.0f}s (last status {status.get('status')!r})")
