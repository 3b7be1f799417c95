"""Start and drive a real Flower federation: one SuperLink and one SuperNode per site, each a
separate process talking over sockets, and Silo's app submitted with `flwr run`.

`flwr run` exits 0 even when the run failed, so the outcome is read from `flwr ls` and from the
run's manifest. Every process started here is stopped on exit, with the processes it started.
"""

from __future__ import annotations

import contextlib
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
APP_DIR = Path(__file__).resolve().parent.parent  # the project root holds the Flower app's pyproject


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flower_env(flwr_home: Path, *, threads: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            # Never let Flower `uv sync` the app's dependencies (with torch listed: GBs of CUDA wheels).
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            # Several sites share a small machine: one intra-op thread each (12-23 s a round without).
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
            "PYTHONUNBUFFERED": "1",
            # The SuperLink and SuperNodes start `flower-superexec` and the app processes by name.
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def kill_children_of(port: int) -> None:
    """SIGKILL the SuperExec and app processes serving the Flower process listening on `port`.

    They detach into sessions of their own, so killing the parent's process group misses them; each
    carries `--runtime-api-address 127.0.0.1:<parent's port>`, which is how they are found."""
    needle = f"--runtime-api-address 127.0.0.1:{port} "
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


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

    def run_status(self, run_id: int) -> dict[str, Any]:
        out = self.flwr("ls", "--run-id", str(run_id), "--format", "json", timeout=30)
        try:
            runs = json.loads(out.stdout).get("runs", [])
        except json.JSONDecodeError:
            return {}
        return runs[0] if runs else {}

    def wait(
        self, run_id: int, *, timeout: float, poll: Callable[[], None] | None = None, interval: float = 1.0
    ) -> dict[str, Any]:
        """Block until the run is finished (any sub-status); `poll` is called every `interval`."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if poll is not None:
                poll()
            status = self.run_status(run_id)
            if str(status.get("status", "")).startswith("finished"):
                return status
            if not self.superlink_alive():
                raise FederationFailed(f"the SuperLink died during run {run_id}")
            time.sleep(interval)
        raise FederationFailed(f"run {run_id} did not finish within {timeout:.0f}s (last status {status.get('status')!r})")


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
        try:
            os.killpg(self.popen.pid, signal.SIGKILL if kill else signal.SIGTERM)
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
    """A SuperLink and one SuperNode per site TOML on loopback, until `stop()` or `with` exit."""

    workdir: Path
    site_configs: list[Path]
    insecure: bool = True
    superlink_port: int = 0
    procs: list[Proc] = field(default_factory=list)
    site_ports: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.superlink_port = self.superlink_port or free_port()
        self.connection = FlowerConnection(self.workdir / "flwr-home", self.address, insecure=self.insecure)
        self.connection.superlink_alive = lambda: all(p.alive() for p in self.procs if p.name == "superlink")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.superlink_port}"

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        log = self.logs / f"{name}.log"
        with log.open("ab") as fh:
            popen = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, env=self.connection.env, cwd=self.workdir,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs = [p for p in self.procs if p.name != name] + [proc]
        return proc

    def start_superlink(self) -> Proc:
        argv = [
            str(BIN / "flower-superlink"), "--host", "127.0.0.1", "--port", str(self.superlink_port),
            "--disable-runtime-dependency-installation",
            # State on disk, as a production coordinator keeps it: a restarted SuperLink still knows
            # its SuperNodes, which then reconnect by themselves.
            "--database", str(self.workdir / "superlink.db"),
        ]
        if self.insecure:
            argv.append("--insecure")
        proc = self._spawn("superlink", argv)
        self._wait_healthy(proc)
        return proc

    def _wait_healthy(self, proc: Proc, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        scheme = "http" if self.insecure else "https"
        while time.monotonic() < deadline:
            if not proc.alive():
                raise FederationFailed(f"SuperLink exited at start (log {proc.log}):\n{proc.tail()}")
            try:
                urllib.request.urlopen(f"{scheme}://{self.address}/health", timeout=1)  # noqa: S310 (loopback)
                return
            except OSError:
                time.sleep(0.3)
        raise FederationFailed(f"SuperLink not healthy after {timeout:.0f}s (log {proc.log})")

    def start_site(self, index: int) -> Proc:
        cfg = Path(self.site_configs[index]).resolve()
        port = self.site_ports.setdefault(index, free_port())
        argv = [
            str(BIN / "flower-supernode"), "--superlink", self.address, "--port", str(port),
            "--node-config", f"site-config='{cfg}'",
        ]
        if self.insecure:
            argv.append("--insecure")
        return self._spawn(f"site-{index}", argv)

    def start(self) -> LocalFederation:
        self.start_superlink()
        for i in range(len(self.site_configs)):
            self.start_site(i)
        return self

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def kill_coordinator(self) -> None:
        """SIGKILL the SuperLink and the ServerApp it runs: a coordinator crash, for tests and drills."""
        self.proc("superlink").stop(kill=True)
        kill_children_of(self.superlink_port)

    def kill_site(self, index: int) -> None:
        self.proc(f"site-{index}").stop(kill=True)
        kill_children_of(self.site_ports[index])

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        kill_children_of(self.superlink_port)
        for port in self.site_ports.values():
            kill_children_of(port)

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(self, run_config: dict[str, str]) -> int:
        return self.connection.submit(run_config)

    def wait(self, run_id: int, *, timeout: float, poll: Callable[[], None] | None = None) -> dict[str, Any]:
        return self.connection.wait(run_id, timeout=timeout, poll=poll)


class RoundProgress:
    """Prints one line per evaluated round, read from the run's manifest as the run goes."""

    def __init__(self, run_dir: Path, log: Any) -> None:
        self.manifest = Path(run_dir) / "manifest.json"
        self.log = log
        self.shown = -1
        self.t0 = time.monotonic()

    def __call__(self) -> None:
        try:
            manifest = json.loads(self.manifest.read_text())
        except (OSError, json.JSONDecodeError):
            return
        planned = manifest.get("rounds_planned", "?")
        for entry in manifest.get("rounds", []):
            n = entry["round"]
            if n <= self.shown or "eval" not in entry:
                continue
            self.shown = n
            ev = entry["eval"].get("eval_loss", float("nan"))
            if n == 0:
                line = f"round 0/{planned}  held-out loss {ev:.4f}  (initial adapter)"
            else:
                tr = entry.get("train", {}).get("train_loss", float("nan"))
                line = (
                    f"round {n}/{planned}  sites {len(entry.get('sites', []))}  train loss {tr:.4f}  "
                    f"held-out loss {ev:.4f}  rejected {len(entry.get('rejected', []))}"
                )
            print(f"[{time.monotonic() - self.t0:6.1f}s] {line}", file=self.log, flush=True)


def follow_run(connection: FlowerConnection, run_id: int, run_dir: Path, *, timeout: float, log: Any) -> dict[str, Any]:
    """Wait for `run_id`, showing progress; return the manifest, or raise unless it really completed."""
    progress = RoundProgress(run_dir, log)
    status = connection.wait(run_id, timeout=timeout, poll=progress)
    progress()
    path = Path(run_dir) / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    if status.get("status") != "finished:completed" or manifest.get("status") != "completed":
        reason = manifest.get("failure") or f"Flower reports {status.get('status')!r}"
        raise FederationFailed(f"run {run_id} failed: {reason}")
    return manifest
