"""deploy/: every kit parses, is structurally what the README says, and runs `silo` commands that
the real CLI accepts, with TLS and authentication on (no Docker, kubectl or systemd here)."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from common.config import load_federation_config, load_site_config
from common.pki import KeyLayout
from silo import proxy
from silo.flower_processes import is_loopback
from tests.fixtures import cli

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCKER = DEPLOY / "docker"
SITES = ("hospital-a", "hospital-b", "bank-c")


def _parse_silo(args: list[str]) -> SimpleNamespace:
    """The arguments as `silo` would parse them (click.UsageError on an unknown flag or command)."""
    return cli.parse(args)


def _secure(args: list[str]) -> None:
    assert "--insecure" not in args
    assert "--keys" in args, args


def _coordinator_behind_the_proxy(args: SimpleNamespace) -> None:
    """The SuperLink on loopback, never exposed; the Fleet proxy is how sites get in."""
    assert is_loopback(args.host) and not args.expose_control_plane
    assert args.port == 9093


def _pinned_nginx(image: str) -> None:
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+(-alpine)?(@sha256:[0-9a-f]{64})?", image), image


def _kit_proxy_config(text: str) -> None:
    """A kit's nginx.conf is exactly what `silo coordinator proxy-config` makes for the container's paths."""
    settings = proxy.ProxySettings.for_keys(
        KeyLayout.for_coordinator("/keys/coordinator"), state_dir=Path("/tmp/silo-proxy"), superlink_port=9093
    )
    assert text == proxy.nginx_config(settings)


def _yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# ---- Docker ------------------------------------------------------------------------------
def _dockerfile(name: str) -> tuple[list[str], str]:
    text = (DOCKER / name).read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    return froms, text


def test_coordinator_image_is_python_slim_with_the_cpu_torch_pinned():
    froms, text = _dockerfile("Dockerfile.coordinator")
    assert froms == ["python:3.11-slim"]
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in text
    assert text.index("torch==2.13.0") < text.index("pip install -e .")  # torch before anything can pull another
    assert "USER silo" in text


def test_site_image_is_cuda_with_the_cuda_torch_of_the_same_version():
    froms, text = _dockerfile("Dockerfile.site")
    assert froms == ["${CUDA_IMAGE}"]
    default = re.search(r"^ARG CUDA_IMAGE=(\S+)", text, flags=re.M).group(1)
    assert default.startswith("nvidia/cuda:") and "runtime" in default
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)", default).groups()
    torch_cuda = re.search(r"^ARG TORCH_CUDA=cu(\d+)", text, flags=re.M).group(1)
    assert torch_cuda == "".join(cuda), "the image's CUDA and the torch wheel's CUDA must match"
    assert "whl/${TORCH_CUDA} torch==2.13.0" in text
    assert "python3.11" in text and "USER silo" in text


@pytest.mark.parametrize("name", ["Dockerfile.coordinator", "Dockerfile.site"])
def test_docker_build_context_excludes_keys_and_data(name):
    ignore = (DOCKER / f"{name}.dockerignore").read_text().split()
    assert ignore[ignore.index("**") if "**" in ignore else 0] == "**"  # deny by default
    assert not any(line.startswith("!keys") or line.startswith("!data") for line in ignore)


def test_compose_runs_a_coordinator_and_three_sites_with_tls_and_authentication():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"coordinator", "fleet-proxy", *SITES}
    coord = services["coordinator"]
    _secure(coord["command"])
    args = _parse_silo(coord["command"])
    assert (args.command, args.action) == ("coordinator", "start")
    _coordinator_behind_the_proxy(args)
    assert args.no_fleet_proxy  # the fleet-proxy service is the proxy
    assert coord["ports"] == ["9092:9092"]  # the proxy's port only; 9093 is never published
    fleet = services["fleet-proxy"]
    _pinned_nginx(fleet["image"])
    assert fleet["network_mode"] == "service:coordinator"  # reaches 127.0.0.1:9093 inside the coordinator
    assert fleet["command"] == ["nginx", "-c", "/etc/silo-proxy/nginx.conf", "-e", "stderr"]
    assert "./proxy/nginx.conf:/etc/silo-proxy/nginx.conf:ro" in fleet["volumes"]
    _kit_proxy_config((DOCKER / "proxy" / "nginx.conf").read_text())
    assert "./keys/coordinator:/keys/coordinator:ro" in coord["volumes"]
    assert str(args.keys) == "/keys/coordinator" and str(args.database).startswith("/state/")
    assert any(v.endswith(":/state") for v in coord["volumes"]) and any(v.endswith(":/runs") for v in coord["volumes"])
    assert coord["environment"]["SILO_AT_REST_KEY_FILE"] == "/run/secrets/silo_at_rest_key"
    assert "silo_at_rest_key" in compose["secrets"]
    for site in SITES:
        svc = services[site]
        _secure(svc["command"])
        args = _parse_silo(svc["command"])
        assert (args.command, args.action) == ("site", "start")
        assert args.superlink == "coordinator:9092"
        # Each site gets its own kit, read-only, and no other site's.
        kits = [v for v in svc["volumes"] if ":/keys/" in v]
        assert kits == [f"./keys/sites/{site}:/keys/site:ro"]
        assert f"./config/site-{site}.toml:/config/site.toml:ro" in svc["volumes"]
        assert f"./data/{site}:/data:ro" in svc["volumes"]
        assert any(v.endswith(":/state") for v in svc["volumes"])
        gpus = svc["deploy"]["resources"]["reservations"]["devices"]
        assert gpus[0]["driver"] == "nvidia" and "gpu" in gpus[0]["capabilities"]
        assert svc["depends_on"]["coordinator"]["condition"] == "service_healthy"
    assert all(
        v.split(":")[0].lstrip("./").split("/")[0] in {"keys", "config", "data", "models", "proxy"}
        for s in services.values()
        for v in s["volumes"]
        if v.startswith("./")
    )


def test_compose_configs_load_and_name_the_registry_and_the_gpu():
    fed = load_federation_config(DOCKER / "config" / "federation.toml")
    assert fed.security.registry == "/keys/coordinator/registry.json"
    for site in SITES:
        cfg = load_site_config(DOCKER / "config" / f"site-{site}.toml")
        assert cfg.site.id == site
        assert str(cfg.state_dir) == "/state" and str(cfg.data_dir) == "/data"
        assert cfg.training.device == "cuda" and cfg.training.precision == "bf16"
        assert cfg.privacy.planned_rounds == fed.federation.rounds


# ---- Kubernetes --------------------------------------------------------------------------
def _k8s(kind_dir: str) -> list[dict]:
    docs = []
    kustomization = yaml.safe_load((DEPLOY / "k8s" / kind_dir / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        docs += _yaml_docs(DEPLOY / "k8s" / kind_dir / resource)
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        assert doc["metadata"]["name"]
    return docs


def _deployment(docs: list[dict]) -> dict:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    return dep


def _mounts_resolve(dep: dict, docs: list[dict]) -> None:
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        for mount in container["volumeMounts"]:
            assert mount["name"] in volumes, mount
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for v in volumes.values():
        if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] != "silo-site-records":
            assert v["persistentVolumeClaim"]["claimName"] in claims


def test_k8s_coordinator_serves_tls_with_registered_sites_and_encrypted_checkpoints():
    docs = _k8s("coordinator")
    dep = _deployment(docs)
    _mounts_resolve(dep, docs)
    pod = dep["spec"]["template"]["spec"]
    container, fleet = pod["containers"]
    _secure(container["args"])
    args = _parse_silo(container["args"])
    assert (args.command, args.action, str(args.keys)) == ("coordinator", "start", "/keys/coordinator")
    _coordinator_behind_the_proxy(args)
    assert args.no_fleet_proxy and "ports" not in container  # the SuperLink's port is not even named
    assert {e["name"]: e["value"] for e in container["env"]}["SILO_AT_REST_KEY_FILE"].startswith("/secrets/")
    keys = next(v for v in pod["volumes"] if v["name"] == "keys-in")
    paths = [i["path"] for s in keys["projected"]["sources"] for i in s.get("configMap", {}).get("items", [])]
    assert paths == [f"supernodes/{s}.pub" for s in SITES]
    # The keys reach both containers owner-only (0600), copied out of the group-readable Secret volume.
    (init,) = pod["initContainers"]
    assert "install -D -m 600" in init["args"][0] and "superlink.key" in init["args"][0]
    assert next(v for v in pod["volumes"] if v["name"] == "keys")["emptyDir"]["medium"] == "Memory"
    # The sidecar proxy: pinned nginx, the generated config, the only port anything listens on for the Service.
    _pinned_nginx(fleet["image"])
    assert [p["containerPort"] for p in fleet["ports"]] == [9092]
    _kit_proxy_config((DEPLOY / "k8s" / "coordinator" / "nginx.conf").read_text())
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(9092, "fleet")]
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "coordinator" / "kustomization.yaml").read_text())
    tls = next(s for s in kustomization["secretGenerator"] if s["name"] == "silo-coordinator-tls")
    assert "keys/coordinator/ca.key" not in tls["files"]  # the CA key never goes to the cluster
    # The run-request key beside the registry: without it the sites refuse every run.
    assert "keys/coordinator/coordinator_signing.key" in tls["files"]
    assert load_federation_config(DEPLOY / "k8s" / "coordinator" / "federation.toml").security.registry


def test_k8s_site_runs_one_authenticated_supernode_on_a_gpu():
    docs = _k8s("site")
    dep = _deployment(docs)
    _mounts_resolve(dep, docs)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    _secure(container["args"])
    args = _parse_silo(container["args"])
    assert (args.command, args.action, str(args.keys)) == ("site", "start", "/keys/site")
    assert args.superlink.endswith(":9092")  # the coordinator's Fleet proxy
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    assert "install -m 600" in init["args"][0]  # the kit, owner-only, out of the group-readable Secret volume
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "site" / "kustomization.yaml").read_text())
    (kit,) = kustomization["secretGenerator"]
    assert sorted(Path(f).name for f in kit["files"]) == sorted(
        [
            "ca.pem",
            "supernode_auth.key",
            "supernode_auth.pub",
            "site_signing.key",
            "site_signing.pub",
            "coordinator_signing.pub",
        ]
    )
    assert load_site_config(DEPLOY / "k8s" / "site" / "site.toml").training.device == "cuda"


# ---- systemd -----------------------------------------------------------------------------
def _unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string((DEPLOY / "systemd" / name).read_text())
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    return unit


def _exec_start(unit: configparser.ConfigParser, env_file: str, instance: str = "") -> list[str]:
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "systemd" / env_file).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    argv = shlex.split(unit["Service"]["ExecStart"].replace("%i", instance))
    argv = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], a) for a in argv]
    assert argv[0] == "/opt/silo/.venv/bin/silo"
    return argv[1:]


def test_systemd_coordinator_unit_is_secure_and_hardened():
    unit = _unit("silo-coordinator.service")
    args = _exec_start(unit, "coordinator.env")
    _secure(args)
    parsed = _parse_silo(args)
    assert (parsed.command, parsed.action) == ("coordinator", "start")
    _coordinator_behind_the_proxy(parsed)
    assert not parsed.no_fleet_proxy and parsed.fleet_port == 9092  # silo starts Debian's nginx itself
    service = unit["Service"]
    assert service["User"] == "silo" and service["NoNewPrivileges"] == "true" and service["ProtectSystem"] == "strict"
    assert service["LoadCredential"].startswith("at_rest.key:")
    assert "SILO_AT_REST_KEY_FILE=%d/at_rest.key" in (DEPLOY / "systemd" / "silo-coordinator.service").read_text()


def test_systemd_site_template_unit_uses_the_instance_kit():
    unit = _unit("silo-site@.service")
    args = _exec_start(unit, "site.env", instance="hospital-a")
    _secure(args)
    parsed = _parse_silo(args)
    assert (parsed.command, parsed.action) == ("site", "start")
    assert str(parsed.keys) == "/etc/silo/keys/sites/hospital-a"
    assert str(parsed.config) == "/etc/silo/site-hospital-a.toml"
    assert parsed.superlink.endswith(":9092")
    assert unit["Service"]["User"] == "silo"


def test_deploy_docs_exist_and_cover_gpus_and_threats():
    readme = (DEPLOY / "README.md").read_text()
    for needle in (
        "silo keys",
        "compose.yaml",
        "kubectl apply -k",
        "systemctl",
        "[training] device",
        "precision",
        "bitsandbytes",
        "SILO_AT_REST_KEY_FILE",
        "THREAT_MODEL.md",
    ):
        assert needle in readme, needle
    threats = (DEPLOY / "THREAT_MODEL.md").read_text()
    for needle in ("honest-but-curious", "malicious site", "network attacker", "TLS", "SecAgg", "ledger"):
        assert needle.lower() in threats.lower(), needle


# ---- Schemas, where the validators are installed (pip install kubernetes-validate check-jsonschema) ----
def test_compose_file_matches_the_compose_spec_schema():
    tool = shutil.which("check-jsonschema")
    if tool is None:
        pytest.skip("check-jsonschema not installed")
    out = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(DOCKER / "compose.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("kind_dir", ["coordinator", "site"])
def test_k8s_manifests_match_the_kubernetes_schemas(kind_dir):
    tool = shutil.which("kubernetes-validate")
    if tool is None:
        pytest.skip("kubernetes-validate not installed")
    kustomization = yaml.safe_load((DEPLOY / "k8s" / kind_dir / "kustomization.yaml").read_text())
    files = [str(DEPLOY / "k8s" / kind_dir / r) for r in kustomization["resources"]]
    out = subprocess.run(
        [tool, "--strict", "-k", "1.31.0", *files], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
