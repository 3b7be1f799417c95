"""`silo site start`'s foreground (silo/site_watch.py): it says when the node connected and as whom,
gives up with the reason (DNS, refused, TLS, unregistered key) after its timeout, and keeps the
node's own output in the log file. Real sockets and a real TLS server; the node is a small stand-in
process that prints what flower-supernode prints."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import ConfigError, FederationFailed
from silo.cli import main
from silo.flower_processes import check_port_free, free_port
from silo.keygen import issue_server_certificate, make_ca, pem_certificate, pem_private_key
from silo.site_watch import SiteNode, probe_superlink, run_site_node


def _ca(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost signed by it: (ca.pem, server.pem, server.key)."""
    ca_key, ca_cert = make_ca(common_name=f"{name} CA")
    key, cert = issue_server_certificate(ca_key, ca_cert, ["localhost", "127.0.0.1"])
    paths = tmp_path / f"{name}-ca.pem", tmp_path / f"{name}-server.pem", tmp_path / f"{name}-server.key"
    paths[0].write_bytes(pem_certificate(ca_cert))
    paths[1].write_bytes(pem_certificate(cert))
    paths[2].write_bytes(pem_private_key(key))
    return paths


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A TLS server on loopback with a certificate of CA "ours": (its address, ours' ca.pem)."""
    ca, cert, key = _ca(tmp_path, "ours")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"localhost:{listener.getsockname()[1]}", ca
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_probe_names_dns_refused_and_tls_failures(tmp_path: Path, tls_server: tuple[str, Path]) -> None:
    address, ours = tls_server
    assert probe_superlink(address, ours) is None
    assert probe_superlink(address, None) is None  # plain TCP reaches it
    assert "DNS: cannot resolve 'coordinator.invalid'" in str(probe_superlink("coordinator.invalid:9092", ours))
    assert str(probe_superlink(f"127.0.0.1:{free_port()}", ours)).startswith("refused: nothing listens on")
    theirs, _, _ = _ca(tmp_path, "theirs")
    reason = str(probe_superlink(address, theirs))
    assert reason.startswith(f"TLS: the certificate of {address} does not verify against {theirs}"), reason


def _node(tmp_path: Path, script: str, *, timeout: float = 2.0, superlink: str = "") -> SiteNode:
    return SiteNode(
        site_id="hospital-a",
        argv=[sys.executable, "-u", "-c", script],
        env={"PATH": "/usr/bin:/bin"},
        log=tmp_path / "logs" / "node.log",
        superlink=superlink or f"127.0.0.1:{free_port()}",
        ca_cert=None,
        auth_public_key=None,
        connect_timeout=timeout,
    )


RETRYING = "import time\nwhile True:\n    print('WARNING : Connection attempt failed, retrying in 1.00 seconds')\n    time.sleep(0.2)"


def test_site_gives_up_with_the_reason_after_its_timeout(tmp_path: Path) -> None:
    node = _node(tmp_path, RETRYING, timeout=1.5)
    with pytest.raises(FederationFailed, match=r"not connected after 2 s, giving up: refused: nothing listens on"):
        run_site_node(node)
    assert "Connection attempt failed" in node.log.read_text()  # Flower's own lines: in the log, not on screen


def test_site_with_an_unregistered_key_stops_and_says_so(tmp_path: Path) -> None:
    script = "print('ERROR : Failed to activate SuperNode.'); import time; time.sleep(30)"
    with pytest.raises(
        FederationFailed, match=r"refused this SuperNode \(no authentication key\): its key is not registered there"
    ):
        run_site_node(_node(tmp_path, script, timeout=60))


def test_site_says_when_and_as_whom_it_connected_and_relays_silo_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = (
        "print('INFO : SuperNode ID: 4412'); print('INFO 12:00: [silo] round 1 of run r (...)'); print('INFO : noise')"
    )
    assert run_site_node(_node(tmp_path, script, timeout=60)) == 0
    err = capsys.readouterr().err
    assert (
        "silo: site hospital-a: connected to 127.0.0.1:" in err and "as SuperNode 4412 (no authentication key)" in err
    )
    assert "silo: round 1 of run r (...)" in err
    assert "noise" not in err and "noise" in (tmp_path / "logs" / "node.log").read_text()


def test_a_taken_port_is_refused_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port} is already in use .*choose a free port with --port"):
            check_port_free("127.0.0.1", port, flag="--port")
        code = main(["coordinator", "start", "--insecure", "--port", str(port), "--state-dir", str(tmp_path / "st")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port} is already in use" in err and "--port" in err and "Traceback" not in err


def test_site_start_survives_nothing_listening_only_until_its_timeout_end_to_end(tmp_path: Path) -> None:
    """The real command on a site whose coordinator is not there: exit 8 with the reason, in one line."""
    from silo.demo import DemoLayout, write_site

    site = write_site(DemoLayout(tmp_path), "site-a", [{"text": "hello"}] * 10, base_model="base", rounds=1)
    port = free_port()
    options = ["--config", str(site), "--superlink", f"127.0.0.1:{port}", "--insecure", "--connect-timeout", "3"]
    argv = [sys.executable, "-m", "silo", "site", "start", *options, "--port", str(free_port())]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 8, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("silo site: error: site site-a: not connected after 3 s, giving up: refused"), out.stderr
