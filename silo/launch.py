"""Start and drive a real Flower federation: one SuperLink and one SuperNode per site, each a
separate process talking over sockets, and Silo's app submitted with `flwr run`.

Secure by default: with a key directory from `silo keys` (common/pki.py) the SuperLink serves TLS
and admits only SuperNodes whose public key was registered with it (`flwr supernode register`);
each SuperNode checks the SuperLink's certificate and signs its requests with its site's key.
Plain-text mode exists for tests and only when asked for (`insecure=True`).

The SuperLink listens on loopback only: it serves Flower's unauthenticated Control API on the same
port as the Fleet API. Sites reach it through the nginx Fleet proxy (silo/proxy.py); a SuperLink on
another interface needs `expose_control_plane=True`.

`flwr run` exits 0 even when the run failed, so the outcome is read from `flwr ls` and from the
run's manifest. Every process started here is stopped on exit, with the processes it started.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import encryption
from common.config import load_site_config
from common.errors import ConfigError, FederationFailed
from common.keys import refuse_readable_by_others
from common.pki import KeyLayout, SiteKit, add_sites, create_keys
from silo import proxy

BIN = Path(sys.executable).parent
APP_DIR = Path(__file__).resolve().parent.parent  # the project root holds the Flower app's pyproject
# A site's Runtime API (SuperNode <-> executor) never leaves the machine.
RUNTIME_HOST = "127.0.0.1"
# Seconds between `flwr ls` status calls while following a run (each is a Python process: ~1 CPU-second,
# which a 2-core site machine would otherwise take from training every second).
STATUS_EVERY_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(host: str, port: int, *, flag: str) -> None:
    """ConfigError naming `flag` when `host:port` is taken: Flower would fail later with a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no clash
        try:
            s.bind((host, port))
        except OSError as err:
            raise ConfigError(
                f"{host}:{port} is already in use ({err.strerror}): another SuperLink, site or program holds it; "
                f"choose a free port with {flag}"
            ) from None


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
            # The SuperLink starts `flower-superexec` and the ServerApp process by name.
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def kill_children_of(port: int) -> None:
    """SIGKILL the processes serving the Flower process listening on `port`: the SuperLink's SuperExec
    and ServerApp, or a site's executor (client/runtime/node.py), which its SuperNode dies with.

    The SuperLink's detach into sessions of their own, so killing its process group misses them; each
    carries `--runtime-api-address 127.0.0.1:<the port>`, which is how they are found."""
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


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def superlink_env(env: dict[str, str]) -> dict[str, str]:
    """The SuperLink's environment without the switches that start Flower's legacy gRPC Control and
    Fleet servers: they bind 0.0.0.0 by default, around both the loopback rule and the proxy."""
    return {k: v for k, v in env.items() if k not in ("FLWR_INTERNAL_GRPC_CONTROL_API", "FLWR_INTERNAL_GRPC_FLEET_API")}


def prepare_database(database: Path) -> Path:
    """The SuperLink's database file: 0600 (SQLite gives its journals the same mode) in a 0700 directory.

    It holds runs, registered node keys and every message in transit, and is not encrypted at rest."""
    database = Path(database).resolve()
    proxy.make_private_dir(database.parent)
    if database.exists():
        refuse_readable_by_others(database)
    else:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.chmod(database, 0o600)  # the umask may have narrowed the mode at creation; set it exactly
    return database


def superlink_argv(
    *,
    host: str,
    port: int,
    keys: KeyLayout | None,
    database: Path | None = None,
    expose_control_plane: bool = False,
) -> list[str]:
    """`flower-superlink` with Silo's settings: TLS and SuperNode authentication unless `keys` is None.

    `host` must be loopback unless `expose_control_plane`: the port also serves the Control API,
    which authenticates nobody (see silo/proxy.py)."""
    if not is_loopback(host) and not expose_control_plane:
        raise ConfigError(
            f"refusing to listen on {host}: the SuperLink's port also serves Flower's Control API, which "
            "authenticates nobody (anyone reaching it can start runs at every site); keep it on 127.0.0.1 and "
            "let sites in through the Fleet proxy, or pass --expose-control-plane if you really mean it"
        )
    if keys is not None:
        keys.check_coordinator()  # before anything is created on disk
    argv = [
        str(BIN / "flower-superlink"),
        "--host",
        host,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    if database is not None:
        # State on disk, as a production coordinator keeps it: a restarted SuperLink still knows its
        # SuperNodes (and their registered keys), which then reconnect by themselves.
        argv += ["--database", str(prepare_database(database))]
    if keys is None:
        return [*argv, "--insecure"]
    return [
        *argv,
        "--ssl-ca-certfile", str(keys.ca_cert.resolve()),
        "--ssl-certfile", str(keys.superlink_cert.resolve()),
        "--ssl-keyfile", str(keys.superlink_key.resolve()),
        # Only SuperNodes whose public key the operator registered may join (TLS alone admits anyone).
        "--enable-supernode-auth",
    ]  # fmt: skip


def supernode_argv(
    *,
    superlink: str,
    port: int,
    site_config: Path,
    kit: SiteKit | None = None,
    ca_cert: Path | None = None,
    auth_key: Path | None = None,
) -> list[str]:
    """`flower-supernode` for one site: checks the SuperLink's certificate against the CA and signs
    its requests with the site's SuperNode key (from `kit`, or given one by one); neither: plain text.

    `--isolation process`: the SuperNode starts no app process and installs no app bundle; Silo's
    executor serves it (`site_node_argv`). Its Runtime API listens on loopback `port` only."""
    argv = [
        str(BIN / "flower-supernode"), "--superlink", superlink, "--port", str(port), "--host", RUNTIME_HOST,
        "--isolation", "process", "--node-config", f"site-config='{Path(site_config).resolve()}'",
    ]  # fmt: skip
    if kit is not None:
        kit.check()
        ca_cert, auth_key = kit.ca_cert, kit.auth_key
    if ca_cert is None and auth_key is None:
        return [*argv, "--insecure"]
    if ca_cert is None or auth_key is None or not Path(ca_cert).is_file() or not Path(auth_key).is_file():
        missing = next(p for p in (ca_cert, auth_key) if p is None or not Path(p).is_file())
        raise ConfigError(f"a SuperNode needs both the CA certificate and its authentication key; missing {missing}")
    refuse_readable_by_others(auth_key)  # `--auth-key` without a kit too
    tls = ["--root-certificates", str(Path(ca_cert).resolve())]
    return [*argv, *tls, "--auth-supernode-private-key", str(Path(auth_key).resolve())]


def kit_coordinator_key(kit: SiteKit) -> Path:
    """The coordinator's run-request public key in a site's kit; ConfigError for a kit made before it existed."""
    key = kit.coordinator_public_key
    if not key.is_file():
        raise ConfigError(
            f"{kit.root} has no {key.name}: the site could not tell its coordinator's runs from anyone else's; "
            "add it with `silo keys --out DIR --add-coordinator-key` and copy it into the kit"
        )
    return key


def site_node_argv(supernode: list[str], *, site_config: Path, port: int, coordinator_key: Path | None) -> list[str]:
    """One site's node: Silo's executor (client/runtime/node.py) with `supernode` (`supernode_argv`,
    Runtime API on `port`) as its child. The executor trusts run requests signed with `coordinator_key`;
    without one, only in plain-text mode, it accepts unsigned ones and says so in its log."""
    if coordinator_key is None and "--insecure" not in supernode:
        raise ConfigError("a site needs its coordinator's run-request key (--coordinator-key, or --keys with a kit)")
    key_args = (
        ["--coordinator-key", str(Path(coordinator_key).resolve())] if coordinator_key else ["--no-coordinator-key"]
    )
    node = [sys.executable, "-m", "client.runtime", "--site-config", str(Path(site_config).resolve())]
    node += ["--runtime-api-address", f"{RUNTIME_HOST}:{port}", *key_args]
    return [*node, "--", *supernode]


def wait_healthy(
    address: str, *, ca_cert: Path | None, alive: Callable[[], bool], log: Path, timeout: float = 60.0
) -> None:
    """Poll the SuperLink's `/health` (over TLS, trusting only `ca_cert`, when given) until it answers."""
    deadline = time.monotonic() + timeout
    context = ssl.create_default_context(cafile=str(ca_cert)) if ca_cert is not None else None
    url = f"{'https' if ca_cert is not None else 'http'}://{address}/health"
    while time.monotonic() < deadline:
        if not alive():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
            raise FederationFailed(f"SuperLink exited at start (log {log}):\n{tail}")
        try:
            urllib.request.urlopen(url, timeout=1, context=context)  # noqa: S310 (our own SuperLink)
            return
        except OSError:
            time.sleep(0.3)
    raise FederationFailed(f"SuperLink not healthy after {timeout:.0f}s (log {log})")


def register_sites(connection: FlowerConnection, keys: KeyLayout) -> dict[str, str]:
    """Register every site's SuperNode key in `keys` (coordinator/supernodes/<id>.pub) with the SuperLink."""
    pubs = keys.supernode_public_keys()
    # One `flwr` process each (~1.3 s of start-up apiece): run them side by side.
    with ThreadPoolExecutor(max_workers=min(8, len(pubs) or 1)) as pool:
        outcomes = list(pool.map(connection.register_supernode, pubs))
    return {pub.stem: outcome for pub, outcome in zip(pubs, outcomes, strict=True)}


@dataclass
class LocalFederation:
    """A SuperLink and one SuperNode per site TOML on loopback, until `stop()` or `with` exit.

    `keys` is a `silo keys` directory holding every site's kit (sites/<site id>/); without one, a
    fresh one is made under `workdir/keys`. The SuperLink registers the SuperNode keys found in
    `keys/coordinator/supernodes/`: a site whose key is not there cannot join. `insecure=True`
    runs without TLS or authentication (tests of the plain-text path only). `at_rest_key_file`
    is handed to the coordinator as SILO_AT_REST_KEY_FILE, encrypting its checkpoints.
    `fleet_proxy=True` starts the nginx Fleet proxy (silo/proxy.py) on loopback as `silo coordinator
    start` does, and the SuperNodes connect through it; otherwise they reach the SuperLink directly,
    all on loopback (the demo)."""

    workdir: Path
    site_configs: list[Path]
    keys: Path | None = None
    insecure: bool = False
    at_rest_key_file: Path | None = None
    fleet_proxy: bool = False
    superlink_port: int = 0
    proxy_port: int = 0
    procs: list[Proc] = field(default_factory=list)
    site_ports: dict[int, int] = field(default_factory=dict)
    registered: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.superlink_port = self.superlink_port or free_port()
        self.proxy_port = self.proxy_port or (free_port() if self.fleet_proxy else 0)
        if self.fleet_proxy and self.insecure:
            raise ConfigError("the Fleet proxy serves TLS with the federation's keys: it cannot run with insecure=True")
        self.site_ids = [load_site_config(c).site.id for c in self.site_configs]
        self.key_layout: KeyLayout | None = None
        if not self.insecure:
            if self.keys is None:
                self.keys = self._own_keys()
            self.key_layout = KeyLayout(Path(self.keys).resolve())
        ca = self.key_layout.ca_cert if self.key_layout else None
        self.connection = FlowerConnection(
            self.workdir / "flwr-home", self.address, insecure=self.insecure, root_certificates=ca
        )
        self.connection.superlink_alive = lambda: all(p.alive() for p in self.procs if p.name == "superlink")

    @property
    def address(self) -> str:
        """The SuperLink's own (loopback) address: the operator's `flwr` connection."""
        return f"127.0.0.1:{self.superlink_port}"

    @property
    def fleet_address(self) -> str:
        """Where SuperNodes connect: the Fleet proxy when there is one, else the SuperLink."""
        return f"127.0.0.1:{self.proxy_port}" if self.fleet_proxy else self.address

    def _own_keys(self) -> Path:
        """Keys under `workdir/keys`: made on first use, reused (and extended) when the workdir is reused."""
        own = KeyLayout(self.workdir / "keys")
        if not own.registry.exists():
            return create_keys(own.root, self.site_ids).root
        missing = [s for s in self.site_ids if s not in own.site_ids()]
        return add_sites(own.root, missing).root if missing else own.root

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.logs / f"{name}.log"
        with log.open("ab") as fh:
            popen = subprocess.Popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env or self.connection.env,
                cwd=self.workdir,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs = [p for p in self.procs if p.name != name] + [proc]
        return proc

    def start_superlink(self) -> Proc:
        argv = superlink_argv(
            host="127.0.0.1",
            port=self.superlink_port,
            keys=self.key_layout,
            database=self.workdir / "superlink-state" / "superlink.db",
        )
        env = superlink_env(self.connection.env)
        if self.at_rest_key_file is not None:
            # The ServerApp inherits the SuperLink's environment; only the coordinator gets the key.
            env[encryption.ENV_KEY_FILE] = str(Path(self.at_rest_key_file).resolve())
        proc = self._spawn("superlink", argv, env)
        ca = self.key_layout.ca_cert if self.key_layout else None
        wait_healthy(self.address, ca_cert=ca, alive=proc.alive, log=proc.log)
        if self.key_layout is not None:
            self.registered = register_sites(self.connection, self.key_layout)
        if self.fleet_proxy and not any(p.name == "proxy" and p.alive() for p in self.procs):
            self.start_proxy()
        return proc

    def start_proxy(self) -> Proc:
        """nginx on 127.0.0.1:`proxy_port`, forwarding Fleet calls only to the SuperLink."""
        assert self.key_layout is not None  # __post_init__ refuses a proxy without keys
        settings = proxy.ProxySettings.for_keys(
            self.key_layout,
            state_dir=self.workdir / "proxy",
            listen_host="127.0.0.1",
            listen_port=self.proxy_port,
            superlink_port=self.superlink_port,
        )
        nginx = proxy.find_nginx()
        conf = proxy.write_config(settings)
        proxy.check_config(nginx, conf)
        proc = self._spawn("proxy", proxy.nginx_argv(nginx, conf))
        proxy.wait_ready(settings.address, ca_cert=self.key_layout.ca_cert, alive=proc.alive, log=proc.log)
        return proc

    def site_kit(self, index: int) -> SiteKit | None:
        return self.key_layout.site(self.site_ids[index]) if self.key_layout else None

    def start_site(self, index: int) -> Proc:
        cfg = Path(self.site_configs[index]).resolve()
        port = self.site_ports.setdefault(index, free_port())
        kit = self.site_kit(index)
        if kit is not None:
            from client.site import install_kit_signing_key  # torch and Flower: only when a site starts

            install_kit_signing_key(kit, load_site_config(cfg))
        supernode = supernode_argv(superlink=self.fleet_address, port=port, site_config=cfg, kit=kit)
        key = kit_coordinator_key(kit) if kit is not None else None
        return self._spawn(f"site-{index}", site_node_argv(supernode, site_config=cfg, port=port, coordinator_key=key))

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
        return self.connection.wait(run_id, timeout=timeout, poll=poll, status_every=5.0)


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
            if n <= self.shown or "eval" not in entry:
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
    status = connection.wait(run_id, timeout=timeout, poll=poll, ended=ended)
    live()
    progress()
    path = Path(run_dir) / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    if status.get("status") != "finished:completed" or manifest.get("status") != "completed":
        reason = manifest.get("failure") or f"Flower reports {status.get('status')!r}"
        raise FederationFailed(f"run {run_id} failed: {reason}")
    return manifest
