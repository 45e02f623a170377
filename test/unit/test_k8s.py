"""The Kubernetes manifests (deploy/k8s), checked offline: no cluster can run here.

The example overlay is rendered with ``kubectl kustomize`` as an operator would apply it; core
kinds are validated with kubernetes-validate's strict schemas (unknown fields are errors), the
KEDA ScaledObject against the JSON schema in KEDA's own CRD (closed the same way); then what the
schemas cannot know: probes, grace periods, selectors, ports and settings that fit together.
"""

from __future__ import annotations

import copy
import math
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ocr_common.blobs import S3Store, open_store
from ocr_common.browsers import BrowserGuard
from ocr_common.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
OVERLAY = K8S_DIR / "overlays" / "example"
# The oldest Kubernetes the manifests claim to work on, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# KEDA's CRD for ScaledObject, carried in the repository with its licence (deploy/k8s/schemas).
KEDA_CRD = K8S_DIR / "schemas" / "keda.sh_scaledobjects.yaml"
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication"}
# What KEDA's MySQL scaler reads from a trigger's metadata (keda.sh/docs/latest/scalers/mysql).
KEDA_MYSQL_METADATA = {
    "query",
    "queryValue",
    "activationQueryValue",
    "connectionStringFromEnv",
    "host",
    "hostFromEnv",
    "port",
    "portFromEnv",
    "username",
    "usernameFromEnv",
    "dbName",
    "dbNameFromEnv",
    "passwordFromEnv",
}
# The preStop pause before SIGTERM (lifecycle.preStop: sleep 5) eats into the grace period.
PRE_STOP_S = 5


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not installed: the manifests are rendered with `kubectl kustomize` "
            "(kubectl 1.27 or newer, kustomize v5)"
        )
    return path


@cache
def render(folder: Path = OVERLAY) -> tuple[dict[str, Any], ...]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {folder} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def find(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for doc in render()
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(name: str) -> dict[str, Any]:
    """The only container of the Deployment ``name`` (or of the Job ocr-migrate)."""
    kind = "Job" if name == "ocr-migrate" else "Deployment"
    [only] = find(kind, name)["spec"]["template"]["spec"]["containers"]
    return only


@cache
def keda_schema() -> dict[str, Any]:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return closed(version["schema"]["openAPIV3Schema"])


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with every object closed to fields it does not name, as kubectl's strict
    field validation treats a CRD (its structural schema prunes them silently otherwise)."""
    schema = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


def validate(doc: dict[str, Any]) -> None:
    """Raise if ``doc`` does not validate against its kind's schema (core or KEDA)."""
    if doc["kind"] == "ScaledObject":
        jsonschema.validate(doc, keda_schema())
    elif doc["kind"] == "TriggerAuthentication":
        check_trigger_authentication(doc)
    else:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def check_trigger_authentication(doc: dict[str, Any]) -> None:
    """No schema of it is at hand: its fields by hand, and the Secret keys it names exist."""
    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    assert set(doc["spec"]) == {"secretTargetRef"}
    for ref in doc["spec"]["secretTargetRef"]:
        assert set(ref) == {"parameter", "name", "key"}
        secret = find("Secret", ref["name"])
        assert ref["key"] in secret.get("stringData", {}) | secret.get("data", {})


def env_of(name: str) -> dict[str, str]:
    """The environment the container gets from its ConfigMap, Secret and literals."""
    spec = container(name)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        env |= find("ConfigMap", source["configMapRef"]["name"])["data"]
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = find("Secret", ref["name"])["stringData"][ref["key"]]
    return env


def settings_of(name: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for var in [var for var in Settings.model_fields]:
        monkeypatch.delenv(f"OCR_{var.upper()}", raising=False)
    for key, value in env_of(name).items():
        monkeypatch.setenv(key, value)
    return load_settings()


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pod_labels(deployment: str) -> dict[str, str]:
    labels: dict[str, str] = find("Deployment", deployment)["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


def cpu_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


# -- rendering and schemas --------------------------------------------------------------------


def test_base_and_overlay_render_with_kubectl_kustomize() -> None:
    kinds = sorted(doc["kind"] for doc in render())
    assert kinds == sorted(kind for kind, _ in MANIFESTS)
    assert all(
        doc["metadata"].get("namespace") == "ocr" for doc in render() if doc["kind"] != "Namespace"
    )
    # The base alone renders too (it leaves the Secret and the namespace to an overlay).
    assert {doc["kind"] for doc in render(K8S_DIR / "base")} == set(kinds) - {"Namespace", "Secret"}


MANIFESTS = [
    ("Namespace", "ocr"),
    ("ConfigMap", None),
    ("Secret", "ocr-secrets"),
    ("Deployment", "ocr-api"),
    ("Deployment", "ocr-server"),
    ("Service", "ocr-api"),
    ("Service", "ocr-server"),
    ("HorizontalPodAutoscaler", "ocr-api"),
    ("PodDisruptionBudget", "ocr-api"),
    ("PodDisruptionBudget", "ocr-server"),
    ("NetworkPolicy", "ocr-server"),
    ("Job", "ocr-migrate"),
    ("ScaledObject", "ocr-server"),
    ("TriggerAuthentication", "ocr-keda-mysql"),
]


@pytest.mark.parametrize(("kind", "name"), MANIFESTS)
def test_every_manifest_validates_strictly(kind: str, name: str | None) -> None:
    validate(find(kind, name))


@pytest.mark.parametrize(
    ("kind", "name", "path", "typo"),
    [
        ("Deployment", "ocr-server", ("spec",), "replica"),
        ("Deployment", "ocr-api", ("spec", "template", "spec", "containers", 0), "readinesProbe"),
        ("ScaledObject", "ocr-server", ("spec",), "minReplicas"),
        ("ScaledObject", "ocr-server", ("spec", "triggers", 0), "metaData"),
    ],
)
def test_the_validation_catches_a_misspelt_field(
    kind: str, name: str, path: tuple[str | int, ...], typo: str
) -> None:
    doc = copy.deepcopy(find(kind, name))
    node: Any = doc
    for step in path:
        node = node[step]
    node[typo] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_the_images_come_from_the_overlay() -> None:
    images = {name: container(name)["image"] for name in ("ocr-api", "ocr-server", "ocr-migrate")}
    assert images == {
        "ocr-api": "registry.example.com/ocr/ocr-api:0.1.0",
        "ocr-server": "registry.example.com/ocr/ocr-server:0.1.0",
        "ocr-migrate": "registry.example.com/ocr/ocr-api:0.1.0",
    }


# -- how the pieces fit -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "command"), [("ocr-api", "ocr-api"), ("ocr-server", "ocr-server")]
)
def test_each_deployment_probes_readyz_and_healthz_on_its_port(name: str, command: str) -> None:
    spec = container(name)
    assert spec["args"] == [command]
    [port] = spec["ports"]
    # The API's readiness is its own: plain /readyz is a 503 while no OCR server is alive, and
    # would take every API pod out of its Service whenever the OCR servers are scaled to zero.
    readyz = "/readyz?exclude=ocr_servers" if name == "ocr-api" else "/readyz"
    assert spec["readinessProbe"]["httpGet"] == {"path": readyz, "port": port["name"]}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert spec["startupProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    bind = find("ConfigMap")["data"]["OCR_API_BIND" if name == "ocr-api" else "OCR_SERVER_BIND"]
    assert bind == f"0.0.0.0:{port['containerPort']}"
    for kind in ("requests", "limits"):
        assert set(spec["resources"][kind]) == {"cpu", "memory"}, f"{name}: {kind}"


@pytest.mark.parametrize("name", ["ocr-api", "ocr-server"])
def test_the_grace_period_outlasts_the_page_timeout_and_the_shutdown_grace(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(name, monkeypatch)
    pod = find("Deployment", name)["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == [
        "sleep",
        str(PRE_STOP_S),
    ]
    needed = settings.page_timeout_s + settings.shutdown_grace_s + PRE_STOP_S
    assert pod["terminationGracePeriodSeconds"] > needed


@pytest.mark.parametrize("name", ["ocr-api", "ocr-server", "ocr-migrate"])
def test_the_settings_each_container_gets_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(name, monkeypatch)
    assert settings.database_url.startswith("mysql+pymysql://")
    names = {f"OCR_{field.upper()}" for field in Settings.model_fields}
    unknown = {key for key in env_of(name) if key.startswith("OCR_")} - names
    assert not unknown, f"{name}: settings the code does not read: {unknown}"
    if name != "ocr-migrate":
        assert settings.internal_token_value, "the API and the OCR server share the token"
    if name == "ocr-api":
        assert settings.api_key_owners, "the example runs with API keys"
        assert settings.server_url == "http://ocr-server:5001"


def test_each_service_answers_to_the_names_it_is_called_by(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Host the service does not answer to is a 421: the API calls the OCR server by
    # OCR_SERVER_URL's name, clients in the cluster call each by its Service's name, kubelets
    # probe a pod's IP address; any other name is refused (DNS rebinding).
    api = BrowserGuard.from_settings(settings_of("ocr-api", monkeypatch))
    ocr = BrowserGuard.from_settings(settings_of("ocr-server", monkeypatch))
    server = urlsplit(settings_of("ocr-api", monkeypatch).server_url)
    assert ocr.allows_host(server.netloc), server.netloc
    for guard, service in ((api, "ocr-api"), (ocr, "ocr-server")):
        assert guard.allows_host(find("Service", service)["metadata"]["name"]), service
        assert guard.allows_host("10.244.3.17:5000")
        assert not guard.allows_host("rebind.evil.example")
    # The example's Ingress host, which the overlay lists.
    assert api.allows_host("ocr.example.com")


def test_ocr_workers_match_the_cores_the_ocr_pod_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    resources = container("ocr-server")["resources"]
    workers = settings_of("ocr-server", monkeypatch).workers
    assert cpu_cores(resources["requests"]["cpu"]) == workers
    assert math.ceil(cpu_cores(resources["limits"]["cpu"])) == workers


def test_the_engines_memory_ceilings_fit_the_ocr_pods_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_of("ocr-server", monkeypatch)
    limit = container("ocr-server")["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") or limit.endswith("Gi"), limit
    limit_mib = int(limit[:-2]) * (1024 if limit.endswith("Gi") else 1)
    # Every engine at its ceiling, and the server itself (about 100 MB), inside the limit: the
    # kernel fails one page, rather than the OOM killer the whole pod.
    assert settings.workers * settings.engine_max_memory_mb + 256 <= limit_mib


@pytest.mark.parametrize("name", ["ocr-api", "ocr-server"])
def test_service_and_disruption_budget_select_their_deployment(name: str) -> None:
    labels = pod_labels(name)
    service = find("Service", name)
    assert labels_match(service["spec"]["selector"], labels)
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == container(name)["ports"][0]["name"]
    budget = find("PodDisruptionBudget", name)
    assert labels_match(budget["spec"]["selector"]["matchLabels"], labels)
    other = pod_labels("ocr-server" if name == "ocr-api" else "ocr-api")
    assert not labels_match(service["spec"]["selector"], other)


def test_only_the_api_reaches_the_ocr_server() -> None:
    policy = find("NetworkPolicy")["spec"]
    assert labels_match(policy["podSelector"]["matchLabels"], pod_labels("ocr-server"))
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    [source] = rule["from"]
    assert set(source) == {"podSelector"}, "no namespaceSelector or ipBlock: pods of this namespace"
    assert labels_match(source["podSelector"]["matchLabels"], pod_labels("ocr-api"))
    assert not labels_match(source["podSelector"]["matchLabels"], pod_labels("ocr-server"))
    assert rule["ports"] == [
        {"protocol": "TCP", "port": container("ocr-server")["ports"][0]["containerPort"]}
    ]
    # The API itself (the public surface) is not under this policy.
    assert not labels_match(policy["podSelector"]["matchLabels"], pod_labels("ocr-api"))


@pytest.mark.parametrize("name", ["ocr-api", "ocr-server"])
def test_the_autoscalers_alone_set_the_replicas(name: str) -> None:
    # A replica count in the Deployment would undo the autoscaler's at every kubectl apply.
    assert "replicas" not in find("Deployment", name)["spec"]


def test_the_api_scales_on_cpu() -> None:
    hpa = find("HorizontalPodAutoscaler", "ocr-api")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ocr-api",
    }
    [metric] = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]


def test_keda_scales_the_ocr_server_on_the_queue_with_a_mysql_trigger() -> None:
    scaled = find("ScaledObject", "ocr-server")["spec"]
    target = find("Deployment", scaled["scaleTargetRef"]["name"])
    assert target["metadata"]["name"] == "ocr-server"
    # /image-sync goes to the OCR server directly: never scale it to zero.
    assert scaled["minReplicaCount"] >= 1
    assert scaled["maxReplicaCount"] > scaled["minReplicaCount"]
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "mysql"
    assert set(trigger["metadata"]) <= KEDA_MYSQL_METADATA
    assert float(trigger["metadata"]["queryValue"]) > 0
    query = " ".join(trigger["metadata"]["query"].split())
    assert "FROM jobs" in query and "pages_total" in query and "'queued'" in query
    check_trigger_authentication(
        find("TriggerAuthentication", trigger["authenticationRef"]["name"])
    )


def test_the_migration_job_runs_ocr_migrate_on_the_same_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = find("Job", "ocr-migrate")
    assert container("ocr-migrate")["args"] == ["ocr-migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    database = settings_of("ocr-migrate", monkeypatch).database_url
    assert database == settings_of("ocr-server", monkeypatch).database_url


@pytest.mark.parametrize("name", ["ocr-api", "ocr-server"])
def test_documents_are_in_an_s3_bucket_with_keys_from_the_secret(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pods share no disk: the API writes documents where every OCR server's pod reads them.
    settings = settings_of(name, monkeypatch)
    store = open_store(settings.blob_url)
    assert isinstance(store, S3Store) and store.bucket == "ocr-example-documents"
    env = env_of(name)
    # The endpoint and region are settings (the ConfigMap), the keys secrets.
    config = find("ConfigMap", container(name)["envFrom"][0]["configMapRef"]["name"])["data"]
    assert config["AWS_ENDPOINT_URL"].startswith("http") and config["AWS_REGION"]
    secret_refs = {
        var["name"]: var["valueFrom"]["secretKeyRef"]
        for var in container(name)["env"]
        if "valueFrom" in var
    }
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert secret_refs[key]["name"] == "ocr-secrets" and env[key]
        assert key not in config
