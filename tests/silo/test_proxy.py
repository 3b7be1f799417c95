"""The Fleet proxy's configuration (silo/proxy.py) and the loopback rule for the SuperLink (silo/flower_processes.py)."""

from __future__ import annotations

import inspect
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from flwr.supernode import fleet_http_client

from common.errors import ConfigError
from common.pki import KeyLayout
from silo import proxy
from silo.flower_processes import is_loopback, prepare_database, superlink_argv, superlink_env
from silo.keygen import create_keys


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyLayout:
    return create_keys(tmp_path_factory.mktemp("keys"), ["a"])


def _settings(keys: KeyLayout, state: Path) -> proxy.ProxySettings:
    return proxy.ProxySettings.for_keys(
        keys, state_dir=state, listen_host="127.0.0.1", listen_port=9092, superlink_port=9093
    )


def test_proxy_forwards_exactly_the_paths_the_supernode_calls() -> None:
    # The SuperNode's own client is the other side of the contract: every path it posts to, and no other.
    client_paths = set(re.findall(r'path="(/v1/[^"]+)"', inspect.getsource(fleet_http_client)))
    assert len(client_paths) == 12
    assert set(proxy.fleet_paths()) == client_paths


def test_proxy_config_names_no_other_api_and_checks_the_superlink_certificate(keys: KeyLayout, tmp_path: Path) -> None:
    conf = proxy.nginx_config(_settings(keys, tmp_path / "proxy"))
    directives = "\n".join(line for line in conf.splitlines() if not line.lstrip().startswith("#"))
    assert re.findall(r"/v1/(\w+)/", directives) == ["fleet"] * 12
    assert "/health" not in directives and "/docs" not in directives
    assert re.findall(r"proxy_pass (\S+);", conf) == ["https://superlink"]  # one forwarding rule, behind the check
    assert "server 127.0.0.1:9093;" in conf
    assert "return 403;" in conf
    assert f"ssl_certificate_key {keys.superlink_key.resolve()};" in conf
    assert "proxy_ssl_verify on;" in conf
    assert f"proxy_ssl_trusted_certificate {keys.ca_cert.resolve()};" in conf


def test_proxy_config_is_accepted_by_nginx_and_written_owner_only(keys: KeyLayout, tmp_path: Path) -> None:
    conf = proxy.write_config(_settings(keys, tmp_path / "state" / "proxy"))
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert stat.S_IMODE(conf.parent.stat().st_mode) == 0o700
    proxy.check_config(proxy.find_nginx(), conf)  # real nginx -t


def test_proxy_refuses_a_world_readable_superlink_key(tmp_path: Path) -> None:
    layout = create_keys(tmp_path / "keys", ["a"])
    layout.superlink_key.chmod(0o640)
    with pytest.raises(ConfigError, match=rf"chmod 600 {re.escape(str(layout.superlink_key.resolve()))}$"):
        proxy.write_config(_settings(layout, tmp_path / "proxy"))


def test_proxy_state_dir_open_to_others_is_refused(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    with pytest.raises(ConfigError, match=r"chmod 700 .*open$"):
        proxy.make_private_dir(tmp_path / "open")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("coord.example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "coord.example"])
def test_superlink_argv_refuses_a_non_loopback_host_unless_exposed_on_purpose(host: str, keys: KeyLayout) -> None:
    with pytest.raises(ConfigError, match="--expose-control-plane"):
        superlink_argv(host=host, port=9093, keys=keys)
    argv = superlink_argv(host=host, port=9093, keys=keys, expose_control_plane=True)
    assert argv[argv.index("--host") + 1] == host


def test_superlink_env_drops_the_legacy_grpc_switches() -> None:
    env = superlink_env({"FLWR_INTERNAL_GRPC_CONTROL_API": "1", "FLWR_INTERNAL_GRPC_FLEET_API": "1", "A": "b"})
    assert env == {"A": "b"}


def test_superlink_database_is_created_owner_only_in_an_owner_only_dir(tmp_path: Path) -> None:
    db = prepare_database(tmp_path / "state" / "superlink.db")
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    db.chmod(0o644)
    with pytest.raises(ConfigError, match=rf"chmod 600 {re.escape(str(db))}$"):
        prepare_database(db)


def test_coordinator_proxy_config_command_prints_what_start_generates(keys: KeyLayout, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "silo", "coordinator", "proxy-config", "--keys", str(keys.coordinator)]
    argv += ["--state-dir", str(tmp_path / "proxy"), "--fleet-host", "127.0.0.1"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout == proxy.nginx_config(_settings(keys, tmp_path / "proxy"))
