"""`silo site start`'s foreground: the site's node as a child, its output in a log file, and on the
operator's screen only what matters to them.

The node (Silo's executor with `flower-supernode` as its child, silo/flower_processes.py `site_node_argv`) writes
Flower's INFO lines, retries and library warnings; all of them go to the log file. The operator sees:

- one line when the SuperNode has connected, with the site id, the SuperNode's node id, the
  fingerprint of the authentication key it connected with and the time;
- Silo's own lines (`[silo] ...`: refused runs, a round's outcome), as they come;
- a give-up with the reason when the node has not connected within `connect_timeout`: the name does
  not resolve (DNS), nothing listens (refused), no answer, the certificate does not verify (TLS), or
  the coordinator has not registered this site's key. The SuperNode itself only logs "Connection
  attempt failed, retrying" forever, so the reason comes from a probe of the address made here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from common.errors import FederationFailed

# What flower-supernode 1.41 logs once it is connected and activated, and when the SuperLink refused its key.
CONNECTED_MARK = "SuperNode ID: "
UNREGISTERED_MARK = "Failed to activate SuperNode"
SILO_MARK = "[silo]"
# Seconds a probe waits for a TCP connection or a TLS handshake before calling the address silent.
PROBE_TIMEOUT_S = 5.0
# Seconds between looks at the node while it starts; the give-up is checked at this rate.
WATCH_S = 0.5
# Seconds between probes of the coordinator while not connected; a changed reason is shown at once.
PROBE_EVERY_S = 10.0
# Seconds the node has to stop after the operator's Ctrl-C before it is killed.
STOP_GRACE_S = 30.0


def split_address(address: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) into its parts; FederationFailed names a malformed one."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise FederationFailed(f"--superlink {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def probe_superlink(address: str, ca_cert: Path | None) -> str | None:
    """Why `address` cannot be reached (DNS, refused, silent, TLS), or None when a TCP connection (and,
    with `ca_cert`, a TLS handshake verifying the coordinator's certificate) succeeds."""
    host, port = split_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        return f"DNS: cannot resolve {host!r} ({err.strerror}); check the host name in --superlink"
    try:
        sock = socket.create_connection((str(infos[0][4][0]), port), timeout=PROBE_TIMEOUT_S)
    except ConnectionRefusedError:
        return f"refused: nothing listens on {address} (is the coordinator started, and is {port} its --fleet-port?)"
    except TimeoutError:
        return f"no answer from {address} within {PROBE_TIMEOUT_S:.0f} s (a firewall, or the wrong address)"
    except OSError as err:
        return f"cannot connect to {address}: {err.strerror or err}"
    with sock:
        if ca_cert is None:
            return None
        context = ssl.create_default_context(cafile=str(ca_cert))
        try:
            with context.wrap_socket(sock, server_hostname=host):
                return None
        except ssl.SSLCertVerificationError as err:
            return (
                f"TLS: the certificate of {address} does not verify against {ca_cert} ({err.verify_message}): "
                "a kit from another federation, or a host name the certificate lacks (`silo keys --superlink-host`)"
            )
        except (ssl.SSLError, OSError) as err:
            return f"TLS: handshake with {address} failed ({getattr(err, 'reason', None) or err}): is it the TLS Fleet port?"


def key_fingerprint(public_key: Path | None) -> str:
    """A short, stable name for the key a SuperNode authenticates with (sha256 of its public key file)."""
    if public_key is None or not public_key.is_file():
        return "no authentication key"
    return "key sha256:" + hashlib.sha256(public_key.read_bytes().strip()).hexdigest()[:16]


@dataclass
class NodeWatch:
    """What the node's output has said so far; filled by `relay` in a thread of its own."""

    node_id: str | None = None
    unregistered: bool = False
    lines: list[str] = field(default_factory=list)  # the last few, for a failure's message
    lock: threading.Lock = field(default_factory=threading.Lock)

    def relay(self, stream: IO[bytes], log: IO[bytes], show: Callable[[str], None]) -> None:
        """Every line to the log file; Silo's own lines to the operator too."""
        for raw in iter(stream.readline, b""):
            log.write(raw)
            log.flush()
            line = raw.decode(errors="replace").rstrip()
            with self.lock:
                self.lines = [*self.lines[-19:], line]
                if CONNECTED_MARK in line and self.node_id is None:
                    self.node_id = line.split(CONNECTED_MARK, 1)[1].strip()
                if UNREGISTERED_MARK in line:
                    self.unregistered = True
            if SILO_MARK in line:
                show(line[line.index(SILO_MARK) + len(SILO_MARK) :].strip())


@dataclass(frozen=True)
class SiteNode:
    """How to start and watch one site's node."""

    site_id: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    superlink: str
    ca_cert: Path | None
    auth_public_key: Path | None
    connect_timeout: float  # seconds; 0 waits for ever


def _say(text: str) -> None:
    print(f"silo: {text}", file=sys.stderr, flush=True)


def run_site_node(node: SiteNode) -> int:
    """Run the node in the foreground until it exits or the operator stops it (exit 130)."""
    node.log.parent.mkdir(parents=True, exist_ok=True)
    watch = NodeWatch()
    stopping: list[int] = []
    with node.log.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 (the site's own node command)
            node.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=node.env, start_new_session=True
        )
        assert proc.stdout is not None  # stdout=PIPE
        reader = threading.Thread(target=watch.relay, args=(proc.stdout, log, _say), daemon=True)
        reader.start()

        def stop(signum: int, _frame: object) -> None:
            stopping.append(signum)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        _say(f"site {node.site_id}: node starting, connecting to {node.superlink}; Flower's log: {node.log}")
        try:
            code = _watch(node, proc, watch, stopping)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            reader.join(timeout=5)
    if stopping:
        _say(f"site {node.site_id}: stopped (node exit code {proc.returncode}); log {node.log}")
        return 130
    return code


def _watch(node: SiteNode, proc: subprocess.Popen[bytes], watch: NodeWatch, stopping: list[int]) -> int:
    started = time.monotonic()
    connected = False
    last_probe, last_reason = started, None
    while not stopping:
        code = proc.poll()
        with watch.lock:
            node_id, unregistered, tail = watch.node_id, watch.unregistered, list(watch.lines)
        if unregistered:
            raise FederationFailed(
                f"site {node.site_id}: the coordinator at {node.superlink} refused this SuperNode "
                f"({key_fingerprint(node.auth_public_key)}): its key is not registered there (the federation "
                f"operator adds it with `silo keys --add-sites` and restarts `silo coordinator start`); log {node.log}"
            )
        if node_id is not None and not connected:
            connected = True
            _say(
                f"site {node.site_id}: connected to {node.superlink} at {datetime.now():%H:%M:%S} as SuperNode "
                f"{node_id} ({key_fingerprint(node.auth_public_key)}); waiting for runs"
            )
        if code is not None:
            if connected and code == 0:
                return 0
            last = "\n".join(tail[-5:])
            raise FederationFailed(f"site {node.site_id}: the node exited with code {code}; log {node.log}:\n{last}")
        waited = time.monotonic() - started
        if not connected and time.monotonic() - last_probe > PROBE_EVERY_S:
            last_probe = time.monotonic()
            reason = probe_superlink(node.superlink, node.ca_cert)
            if reason is not None and reason != last_reason:
                limit = f"giving up after {node.connect_timeout:.0f} s" if node.connect_timeout else "retrying"
                _say(f"site {node.site_id}: not connected yet ({waited:.0f} s): {reason}; {limit}")
            last_reason = reason
        if not connected and node.connect_timeout and waited > node.connect_timeout:
            reason = probe_superlink(node.superlink, node.ca_cert) or (
                f"{node.superlink} answers (TLS verified), but the SuperNode did not connect; see {node.log}"
            )
            raise FederationFailed(
                f"site {node.site_id}: not connected after {node.connect_timeout:.0f} s, giving up: {reason}"
            )
        time.sleep(WATCH_S)
    return 130
