"""The only door sites get to the coordinator: nginx in front of the SuperLink, Fleet API only.

Flower 1.41's SuperLink serves every API on one HTTP/1.1 port (uvicorn, protobuf bodies over
POST): the Fleet API SuperNodes use (`/v1/fleet/*`), the Control API behind `flwr run/ls/stop`
and `flwr supernode register` (`/v1/control/*`), the Runtime API its ServerApp uses
(`/v1/runtime/*`), `/health` and `/docs`. The open-source SuperLink authenticates no user on
the Control API, so whoever reaches that port with the CA certificate can start runs (code at
every site) and register nodes. Silo therefore keeps the SuperLink on loopback and puts nginx on
the address sites use: it terminates TLS with the coordinator's certificate and forwards exactly
the Fleet calls, `POST` to the paths Flower's own Fleet router declares, matched byte for byte
against the raw request line (no decoding or dot-segment games can turn one into another path);
everything else is answered 403 by nginx itself and never reaches the SuperLink.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError, FederationFailed
from common.files import write_atomic
from common.keys import refuse_readable_by_others
from common.pki import KeyLayout

# Where SuperNodes connect (Flower's historical Fleet API port); the SuperLink itself keeps 9093,
# the Control API port, on loopback.
DEFAULT_FLEET_PORT = 9092
DEFAULT_FLEET_HOST = "0.0.0.0"  # noqa: S104 (the proxy is the part meant to be reachable)
# Flower splits arrays into 5 MiB chunks (FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE), one object a request:
# 64 MiB leaves room for the message envelope while bounding what a stranger can make nginx read.
MAX_BODY = "64m"
# A heartbeat or pull waits at most this long on the SuperLink before nginx gives up on it.
UPSTREAM_TIMEOUT_S = 300
# The name nginx checks in the SuperLink's certificate: `silo keys` always adds it (DEFAULT_HOSTS).
UPSTREAM_TLS_NAME = "localhost"
SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/sbin")  # Debian's nginx is in /usr/sbin, often off a user's PATH


def fleet_paths() -> tuple[str, ...]:
    """The Fleet API's paths, read from the installed Flower's own router (all are POST)."""
    from fastapi.routing import APIRoute
    from flwr.superlink.routers.fleet.router import router  # the coordinator's Flower, the one it serves

    paths = []
    for route in router.routes:
        if not isinstance(route, APIRoute) or route.methods != {"POST"}:
            raise ConfigError(f"Flower's Fleet route {route} is not a POST-only API route; update silo/proxy.py")
        paths.append(route.path)
    return tuple(sorted(paths))


@dataclass(frozen=True)
class ProxySettings:
    """Everything the nginx configuration depends on."""

    listen_host: str
    listen_port: int
    superlink_port: int
    certificate: Path
    private_key: Path
    ca_certificate: Path
    state_dir: Path
    # None: logs to the process's stderr/stdout (containers); else error.log and access.log here.
    log_dir: Path | None = None

    @classmethod
    def for_keys(
        cls,
        keys: KeyLayout,
        *,
        state_dir: Path,
        listen_host: str = DEFAULT_FLEET_HOST,
        listen_port: int = DEFAULT_FLEET_PORT,
        superlink_port: int,
        log_dir: Path | None = None,
    ) -> ProxySettings:
        return cls(
            listen_host=listen_host,
            listen_port=listen_port,
            superlink_port=superlink_port,
            # nginx resolves relative paths against its prefix (the state dir), not our working directory.
            certificate=keys.superlink_cert.resolve(),
            private_key=keys.superlink_key.resolve(),
            ca_certificate=keys.ca_cert.resolve(),
            state_dir=Path(state_dir).resolve(),
            log_dir=None if log_dir is None else Path(log_dir).resolve(),
        )

    @property
    def address(self) -> str:
        """host:port a client on this machine uses to reach the proxy."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.listen_host, self.listen_host)  # noqa: S104
        return f"[{host}]:{self.listen_port}" if ":" in host else f"{host}:{self.listen_port}"


def nginx_config(settings: ProxySettings) -> str:
    """The nginx.conf for `settings`: TLS with the SuperLink's certificate, Fleet calls only."""
    s = settings
    listen = f"[{s.listen_host}]:{s.listen_port}" if ":" in s.listen_host else f"{s.listen_host}:{s.listen_port}"
    logs = [f"error_log {s.log_dir / 'error.log'} notice;"] if s.log_dir is not None else ["error_log stderr notice;"]
    access = f"access_log {s.log_dir / 'access.log'};" if s.log_dir is not None else "access_log /dev/stdout;"
    # A regex, because nginx matches map strings case-insensitively; `~` regexes are case-sensitive.
    allowed = "|".join(re.escape(path) for path in fleet_paths())
    lines = [
        "# Generated by Silo (silo/proxy.py); regenerate with `silo coordinator proxy-config`, do not edit.",
        "# SuperNodes reach the SuperLink's Fleet API through here; the Control API (flwr run/ls/stop,",
        "# flwr supernode register), the Runtime API, /health and /docs are answered 403 and never forwarded.",
        "daemon off;",
        "worker_processes 1;",
        f"pid {s.state_dir / 'nginx.pid'};",
        *logs,
        "events {",
        "    worker_connections 1024;",
        "}",
        "http {",
        f"    {access}",
        "    server_tokens off;",
        f"    client_body_temp_path {s.state_dir / 'client_body'};",
        f"    proxy_temp_path {s.state_dir / 'proxy'};",
        f"    fastcgi_temp_path {s.state_dir / 'fastcgi'};",
        f"    uwsgi_temp_path {s.state_dir / 'uwsgi'};",
        f"    scgi_temp_path {s.state_dir / 'scgi'};",
        "    # The exact request line, undecoded and case-sensitive: anything but these Fleet calls is refused.",
        '    map "$request_method $request_uri" $silo_fleet_call {',
        "        default 0;",
        f'        "~^POST ({allowed})$" 1;',
        "    }",
        "    upstream superlink {",
        f"        server 127.0.0.1:{s.superlink_port};",
        "        keepalive 16;",
        "    }",
        "    server {",
        f"        listen {listen} ssl;",
        f"        ssl_certificate {s.certificate};",
        f"        ssl_certificate_key {s.private_key};",
        "        ssl_protocols TLSv1.2 TLSv1.3;",
        f"        client_max_body_size {MAX_BODY};",
        "        location / {",
        "            if ($silo_fleet_call = 0) {",
        "                return 403;",
        "            }",
        "            proxy_pass https://superlink;",
        "            proxy_http_version 1.1;",
        '            proxy_set_header Connection "";',
        "            proxy_ssl_verify on;",
        f"            proxy_ssl_trusted_certificate {s.ca_certificate};",
        f"            proxy_ssl_name {UPSTREAM_TLS_NAME};",
        "            proxy_request_buffering off;",
        "            proxy_buffering off;",
        "            proxy_max_temp_file_size 0;",
        f"            proxy_read_timeout {UPSTREAM_TIMEOUT_S}s;",
        f"            proxy_send_timeout {UPSTREAM_TIMEOUT_S}s;",
        "        }",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def find_nginx(explicit: Path | None = None) -> Path:
    if explicit is not None:
        if not Path(explicit).is_file():
            raise ConfigError(f"--nginx {explicit}: no such file")
        return Path(explicit)
    found = shutil.which("nginx") or shutil.which("nginx", path=os.pathsep.join(SEARCH_PATH))
    if found is None:
        raise ConfigError(
            "nginx is not installed: the coordinator exposes the Fleet API only through it "
            "(Debian: apt-get install nginx; or pass --nginx PATH)"
        )
    return Path(found)


def write_config(settings: ProxySettings) -> Path:
    """Write `state_dir/nginx.conf` (state dir 0700, file 0600) after checking the key material."""
    for path in (settings.certificate, settings.private_key, settings.ca_certificate):
        if not path.is_file():
            raise ConfigError(f"{path} is missing: give the coordinator/ directory made by `silo keys`")
    refuse_readable_by_others(settings.private_key)
    make_private_dir(settings.state_dir)
    if settings.log_dir is not None:
        make_private_dir(settings.log_dir)
    conf = settings.state_dir / "nginx.conf"
    write_atomic(conf, nginx_config(settings).encode(), mode=0o600)
    return conf


def make_private_dir(path: Path) -> None:
    """Create `path` 0700; an existing one readable by group or others is refused (chmod 700 fixes it)."""
    path = Path(path)
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)  # the umask may have narrowed the mode at creation; set it exactly
        return
    if not path.is_dir():
        raise ConfigError(f"{path} is not a directory")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ConfigError(
            f"{path} is open to group or others (mode {stat.S_IMODE(path.stat().st_mode):o}); fix: chmod 700 {path}"
        )


def nginx_argv(nginx: Path, conf: Path) -> list[str]:
    """nginx in the foreground on `conf`, its prefix and start-up log in the state directory."""
    return [str(nginx), "-p", str(conf.parent), "-c", str(conf), "-e", "stderr"]


def check_config(nginx: Path, conf: Path) -> None:
    """`nginx -t`: a configuration nginx rejects is a clear error before anything listens."""
    out = subprocess.run(
        [*nginx_argv(nginx, conf), "-t", "-q"], capture_output=True, text=True, timeout=30, check=False
    )
    if out.returncode != 0:
        lines = (out.stderr + out.stdout).strip().splitlines() or ["(no output)"]
        reason = next((line for line in lines if "[emerg]" in line), lines[0])
        raise ConfigError(f"nginx rejected {conf}: {reason.split('] ', 1)[-1]}")


def wait_ready(address: str, *, ca_cert: Path, alive: Callable[[], bool], log: Path, timeout: float = 30.0) -> None:
    """Until the proxy answers TLS on `address` with its own 403 for a non-Fleet path."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    # The chain is still checked; the name need not be `address` (sites use a DNS name in the certificate).
    context.check_hostname = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
            raise FederationFailed(f"the Fleet proxy (nginx) exited at start (log {log}):\n{tail}")
        try:
            urllib.request.urlopen(f"https://{address}/health", timeout=1, context=context)  # noqa: S310
        except urllib.error.HTTPError as err:
            if err.code == 403:
                return
            raise FederationFailed(f"the Fleet proxy on {address} answered {err.code} where it must refuse") from None
        except OSError:
            time.sleep(0.2)
            continue
        raise FederationFailed(f"the Fleet proxy on {address} forwarded /health: it must forward Fleet calls only")
    raise FederationFailed(f"the Fleet proxy did not answer on {address} within {timeout:.0f}s (log {log})")
