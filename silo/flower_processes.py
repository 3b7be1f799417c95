"""Flower's processes as Silo starts them: the `flower-superlink`, `flower-supernode` and site-node
command lines, their environment, their ports, the SuperLink's health, and stopping what they started.

Secure by default: with a key directory from `silo keys` (layout: common/pki.py) the SuperLink serves TLS
and admits only SuperNodes whose public key was registered with it (`flwr supernode register`);
each SuperNode checks the SuperLink's certificate and signs its requests with its site's key.
Plain-text mode exists for tests and only when asked for (`keys=None`, `--insecure`).

The SuperLink listens on loopback only: it serves Flower's unauthenticated Control API on the same
port as the Fleet API. Sites reach it through the nginx Fleet proxy (silo/proxy.py); a SuperLink on
another interface needs `expose_control_plane=True`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import ssl
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from common.errors import ConfigError, FederationFailed
from common.keys import refuse_readable_by_others
from common.pki import KeyLayout, SiteKit
from silo import proxy

BIN = Path(sys.executable).parent
# A site's Runtime API (SuperNode <-> executor) never leaves the machine.
RUNTIME_HOST = "127.0.0.1"


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
        *("--ssl-ca-certfile", str(keys.ca_cert.resolve())),
        *("--ssl-certfile", str(keys.superlink_cert.resolve())),
        *("--ssl-keyfile", str(keys.superlink_key.resolve())),
        # Only SuperNodes whose public key the operator registered may join (TLS alone admits anyone).
        "--enable-supernode-auth",
    ]


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
    argv = [str(BIN / "flower-supernode"), "--superlink", superlink, "--port", str(port), "--host", RUNTIME_HOST]
    argv += ["--isolation", "process", "--node-config", f"site-config='{Path(site_config).resolve()}'"]
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
