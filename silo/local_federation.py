"""A whole Flower federation on this machine: one SuperLink (and optionally the Fleet proxy) and one
site node per site TOML, each a separate process talking over sockets, for `silo demo`, the
benchmarks and the integration tests. Every process started here is stopped on exit, with the
processes it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import encryption
from common.config import load_site_config
from common.errors import ConfigError
from common.pki import KeyLayout, SiteKit
from silo import proxy
from silo.flower_connection import FlowerConnection, register_sites
from silo.flower_processes import (
    free_port,
    kill_children_of,
    kit_coordinator_key,
    site_node_argv,
    superlink_argv,
    superlink_env,
    supernode_argv,
    wait_healthy,
)
from silo.interrupts import signals_ignored, terminate_as_interrupt
from silo.keygen import add_sites, create_keys


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
    """A SuperLink and one SuperNode per site TOML on loopback, until `stop()` or `with` exit.

    `keys` is a `silo keys` directory holding every site's kit (sites/<site id>/); without one, a
    fresh one is made under `workdir/keys`. The SuperLink registers the SuperNode keys found in
    `keys/coordinator/supernodes/`: a site whose key is not there cannot join. `insecure=True`
    runs without TLS or authentication (tests of the plain-text path only). `at_rest_key_file`
    is handed to the coordinator as SILO_AT_REST_KEY_FILE, encrypting its checkpoints.
    `fleet_proxy=True` starts the nginx Fleet proxy (silo/proxy.py) on loopback as `silo coordinator
    start` does, and the SuperNodes connect through it; otherwise they reach the SuperLink directly,
    all on loopback (the demo). The SuperLink keeps its state in memory unless `superlink_database`
    (then in `workdir/superlink-state/superlink.db`, as `silo coordinator start --database` keeps it)."""

    workdir: Path
    site_configs: list[Path]
    keys: Path | None = None
    insecure: bool = False
    at_rest_key_file: Path | None = None
    fleet_proxy: bool = False
    superlink_database: bool = False
    superlink_port: int = 0
    proxy_port: int = 0
    procs: list[Proc] = field(default_factory=list)
    site_ports: dict[int, int] = field(default_factory=dict)
    registered: dict[str, str] = field(default_factory=dict)
    _signals: ExitStack = field(default_factory=ExitStack, init=False, repr=False)

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
            # State in memory, Flower's default: the database's SQL costs about half a second of every round's
            # messaging (bench/federation_cost.py), and no message in transit is written to disk. After a
            # restart start_superlink registers the sites' keys again and each site's node starts a fresh
            # SuperNode, which joins again (client/runtime/node.py); the run resumes from its run directory.
            database=self.workdir / "superlink-state" / "superlink.db" if self.superlink_database else None,
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
            from client.site_state import install_kit_signing_key  # torch and Flower: only when a site starts

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
        # SIGTERM (a service manager, `timeout`, `kill`) stops the federation as Ctrl-C does: its processes
        # are in their own process groups and would otherwise go on training, and spending ε, without us.
        self._signals.enter_context(terminate_as_interrupt())
        try:
            return self.start()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            with signals_ignored():
                self.stop()
        finally:
            self._signals.close()

    def submit(self, run_config: dict[str, str]) -> int:
        return self.connection.submit(run_config)

    def wait(self, run_id: int, *, timeout: float, poll: Callable[[], None] | None = None) -> dict[str, Any]:
        return self.connection.wait(run_id, timeout=timeout, poll=poll, status_every=5.0)
