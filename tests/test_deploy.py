"""What the Dockerfile and the Kubernetes manifests promise, checked without a Docker engine or cluster."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
K8S_VERSION = "1.31"
DOCKERFILE = (ROOT / "Dockerfile").read_text()
DOCKERIGNORE = (ROOT / ".dockerignore").read_text().split()


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def test_dockerfile_is_multi_stage_with_a_slim_base() -> None:
    froms = [arg for op, arg in instructions() if op == "FROM"]
    assert len(froms) >= 2
    assert "slim" in DOCKERFILE.split("PYTHON_IMAGE=", 1)[1].split()[0]


def test_final_stage_runs_as_non_root_without_compilers() -> None:
    stage = final_stage()
    users = [arg for op, arg in stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    runs = " ".join(arg for op, arg in stage if op == "RUN")
    assert "libopus0" in runs
    for compiler in ("gcc", "build-essential", "g++", "clang"):
        assert compiler not in runs


def test_no_key_material_in_the_image() -> None:
    for op, arg in instructions():
        if op in ("COPY", "ADD"):
            assert "certs" not in arg and ".key" not in arg and ".pem" not in arg, arg
    for pattern in ("certs/", ".venv/", "**/*.key", "**/*.pem", ".env"):
        assert pattern in DOCKERIGNORE, pattern


def test_dependencies_layer_comes_before_the_source() -> None:
    copies = [arg for op, arg in instructions() if op == "COPY"]
    assert copies.index("pyproject.toml README.md ./") < copies.index("src ./src")


def test_entrypoint_passes_arguments_through_and_ports_are_exposed() -> None:
    stage = final_stage()
    (entrypoint,) = [arg for op, arg in stage if op == "ENTRYPOINT"]
    assert json.loads(entrypoint) == [
        "audio-server"
    ]  # exec form: `docker run IMAGE --flag` reaches the server
    exposed = {port for op, arg in stage if op == "EXPOSE" for port in arg.split()}
    assert {"50051", "8081", "9464"} <= exposed


def test_the_image_install_steps_work_in_a_clean_venv(tmp_path: Path) -> None:
    """The Dockerfile builds a wheel of the project and installs it: do the same here."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in (
        "comms/gen/comms_pb2.py",
        "comms/gen/session_pb2.py",
        "auth/tokens.py",
        "server/app.py",
        "device/client.py",
        "comms/gen/admin_pb2.py",
        "admin/cli.py",
        "server/operator/console/templates/fleet.html",  # the console's templates and static files ship too
        "server/operator/console/static/console.js",
        "server/operator/console/static/console.css",
    ):
        assert package in names, package
    assert not [n for n in names if n.endswith((".key", ".pem"))]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    base = [r for r in requires if "extra ==" not in r]
    assert not [r for r in base if r.startswith(("gpiozero", "colorzero", "sounddevice", "lgpio"))], base
    assert any(r.startswith("gpiozero") and 'extra == "pi"' in r for r in requires)  # pip install '.[pi]'
    clean = tmp_path / "venv"
    venv.create(clean, with_pip=True)
    python = clean / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    # Dependencies come from this environment (no network in tests); the project itself from the wheel.
    site = next((clean / "lib").glob("python3*/site-packages"))
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    (site / "deps.pth").write_text(deps + "\n")
    result = subprocess.run([clean / "bin" / "audio-server", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--pki-dir" in result.stdout
    admin = subprocess.run([clean / "bin" / "audio-admin", "--help"], capture_output=True, text=True)
    assert admin.returncode == 0 and "console" in admin.stdout
    imported = subprocess.run(
        [python, "-c", "import server.app, sys; print(server.app.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(clean) in imported.stdout  # the installed copy, not the source tree


# --- Kubernetes ---------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in manifests() if d["kind"] == kind]
    return doc


REDIS_COMPONENT = K8S / "components" / "redis"


def component_manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((REDIS_COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    return [
        d
        for name in kustomization["resources"]
        for d in yaml.safe_load_all((REDIS_COMPONENT / name).read_text())
    ]


@pytest.mark.parametrize(
    "doc", component_manifests(), ids=lambda d: f"redis:{d['kind']}/{d['metadata']['name']}"
)
def test_redis_component_is_schema_valid(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_redis_component_is_restricted_and_only_servers_reach_it() -> None:
    docs = {d["kind"]: d for d in component_manifests()}
    pod = docs["StatefulSet"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert (
        "requirepass" not in " ".join(container.get("args", [])) and "env" not in container
    )  # password: a file
    assert docs["StatefulSet"]["spec"]["volumeClaimTemplates"]  # its data survives restarts
    (rule,) = docs["NetworkPolicy"]["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "audio-server"}}}]
    overlay = yaml.safe_load((K8S / "overlays" / "with-redis" / "kustomization.yaml").read_text())
    assert overlay["components"] == ["../../components/redis"] and overlay["namespace"] == "audio"


def test_several_replicas_roll_without_dropping_the_fleet() -> None:
    deployment = by_kind("Deployment")["spec"]
    assert deployment["replicas"] >= 2
    assert deployment["strategy"]["type"] == "RollingUpdate"
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["template"]["spec"]
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert by_kind("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    config = by_kind("ConfigMap")["data"]
    assert config["AUDIO_SERVER_STATE_BACKEND"] == "redis" and config["AUDIO_SERVER_REDIS_URL"].startswith(
        "redis"
    )
    (container,) = pod["containers"]
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]  # no per-pod state any more


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["namespace"] == "audio"


@pytest.mark.parametrize("doc", manifests(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_schema_valid(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_no_secret_is_committed() -> None:
    assert all(d["kind"] != "Secret" for d in manifests())


def test_pod_security() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_probes_use_the_plaintext_health_port() -> None:
    (container,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    health_port = int(by_kind("ConfigMap")["data"]["AUDIO_SERVER_HEALTH_BIND"].rsplit(":", 1)[1])
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == health_port


def test_liveness_never_follows_the_store() -> None:
    """Startup and liveness ask the liveness name (a Redis outage must not restart every pod);
    readiness asks the overall status, which does follow the store."""
    from server.runtime.probes import HEALTH_SERVICE_NAMES, LIVENESS_SERVICE

    (container,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["startupProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    assert container["readinessProbe"]["grpc"].get("service", "") == ""
    assert LIVENESS_SERVICE not in HEALTH_SERVICE_NAMES


def test_secrets_are_read_only_files_not_env() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert set(secret_volumes.values()) == {
        "audio-server-tls",
        "audio-fleet-ca",
        "audio-signing-keys",
        "audio-redis",
        "audio-issuing-ca",
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    for name in secret_volumes:
        assert mounts[name]["readOnly"] is True
    for env in container.get("env", []):
        assert "secretKeyRef" not in env.get("valueFrom", {})
    assert all("secretRef" not in source for source in container.get("envFrom", []))


def test_termination_grace_exceeds_the_drain() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    config = by_kind("ConfigMap")["data"]
    drain = float(config["AUDIO_SERVER_DRAIN_DELAY_S"]) + float(config["AUDIO_SERVER_SHUTDOWN_GRACE_S"])
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain


def test_config_map_settings_exist() -> None:
    from server.runtime.settings import ServerSettings

    for key in by_kind("ConfigMap")["data"]:
        assert key.removeprefix("AUDIO_SERVER_").lower() in ServerSettings.model_fields, key


def test_pdb_and_network_policy() -> None:
    assert by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    ingress = by_kind("NetworkPolicy")["spec"]["ingress"]
    by_port = {p["port"]: rule for rule in ingress for p in rule["ports"]}
    assert set(by_port) == {
        50051,
        9464,
    }  # health (8081): no pod may reach it; kubelet probes come from the node
    assert "from" not in by_port[50051]  # devices: from anywhere (through the load balancer)
    (peer,) = by_port[9464]["from"]  # metrics: only the monitoring namespace
    assert peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def services() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == "Service"}


def test_devices_reach_only_the_grpc_port_through_a_load_balancer() -> None:
    devices = services()["audio-devices"]
    assert devices["spec"]["type"] == "LoadBalancer"
    assert [(p["port"], p["protocol"]) for p in devices["spec"]["ports"]] == [(50051, "TCP")]
    metrics = services()["audio-server-metrics"]
    assert metrics["spec"]["type"] == "ClusterIP" and [p["port"] for p in metrics["spec"]["ports"]] == [9464]
    assert not any(p["port"] == 8081 for svc in services().values() for p in svc["spec"]["ports"])


def test_k8s_secrets_from_a_pki(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "gen_certs.py"
    subprocess.run([sys.executable, script, "dev", "--out", tmp_path], check=True, capture_output=True)
    subprocess.run(
        [sys.executable, script, "revoke", "--out", tmp_path, "--tenant", "acme", "--device", "dev-2"],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [sys.executable, script, "k8s-secrets", "--out", tmp_path], check=True, capture_output=True, text=True
    ).stdout
    items = {item["metadata"]["name"]: item for item in json.loads(out)["items"]}
    for item in items.values():
        kubernetes_validate.validate(item, K8S_VERSION, strict=True)
    assert items["audio-server-tls"]["type"] == "kubernetes.io/tls"
    assert set(items["audio-server-tls"]["data"]) == {"tls.crt", "tls.key"}
    assert set(items["audio-fleet-ca"]["data"]) == {"ca.crt", "crl.pem"}
    assert len(items["audio-signing-keys"]["data"]) == 1
    import base64

    assert base64.b64encode((tmp_path / "ca.key").read_bytes()).decode() not in out  # the CA key stays out
    assert not list(Path.cwd().glob("*secret*"))  # printed, not written


def test_the_documented_secrets_flow_keeps_no_key_copy_in_an_annotation(tmp_path: Path) -> None:
    """Plain `kubectl apply` copies each Secret (keys included) into last-applied-configuration;
    every place that tells an operator how to apply the Secrets uses server-side apply instead."""
    script = ROOT / "scripts" / "gen_certs.py"
    places = {  # each of these must show the command
        "docs/operate/kubernetes.md": (ROOT / "docs" / "operate" / "kubernetes.md").read_text(),
        "k8s/kustomization.yaml": (K8S / "kustomization.yaml").read_text(),
        "gen_certs.py": script.read_text(),
    }
    docs = [ROOT / "README.md", ROOT / "SECURITY.md", *(ROOT / "docs").rglob("*.md")]
    for where, text in {**{str(p.relative_to(ROOT)): p.read_text() for p in docs}, **places}.items():
        # the pipe may end a line (`| \` and kubectl on the next), as in a shell block
        commands = re.findall(r"k8s-secrets[^`]*?\|\s*(?:\\\s*)?(kubectl [^\n`]+)", text)
        assert commands or where not in places, where
        for command in commands:
            words = command.split()
            assert words[:2] == ["kubectl", "apply"] and "--server-side" in words, (where, command)
            assert "-f" in words and words[words.index("-f") + 1] == "-", (where, command)
    subprocess.run([sys.executable, script, "dev", "--out", tmp_path], check=True, capture_output=True)
    out = subprocess.run(
        [sys.executable, script, "k8s-secrets", "--out", tmp_path], check=True, capture_output=True, text=True
    ).stdout
    for item in json.loads(out)["items"]:
        assert "kubectl.kubernetes.io/last-applied-configuration" not in item["metadata"].get(
            "annotations", {}
        )
