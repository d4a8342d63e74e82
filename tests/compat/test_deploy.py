"""Schema validation of the deployment files (deploy/README.md).

- docker-compose.yml against the Compose Specification's JSON schema, as vendored by
  check-jsonschema (pinned in requirements.txt; its `vendor.compose-spec` schema);
- every manifest under deploy/kubernetes against the Kubernetes JSON schemas bundled by
  kubernetes-validate (pinned), in strict mode (unknown fields are errors), for the oldest
  and the newest Kubernetes minor version we claim;
- kustomization.yaml lists exactly the manifests of the directory.

Nothing is fetched at test time: both packages carry their schemas. The cross-checks of
commands, ports and config files against the real CLI are Rust tests
(crates/cli/src/deploy_check.rs).
"""

import copy
import json
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "kubernetes"
# grpc probes are GA since 1.27; the manifests are checked against both ends of what we claim.
KUBERNETES_VERSIONS = ("1.30.0", "1.35.0")


def compose_schema() -> dict:
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text(encoding="utf-8")
    )
    return json.loads(text)


def compose_errors(document: dict) -> list:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))


def k8s_documents():
    """(file name, document) for every manifest, kustomization.yaml excluded."""
    out = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                out.append((path.name, doc))
    return out


def k8s_validate(doc: dict, version: str) -> None:
    # Raises ValidationError on a schema violation and SchemaNotFoundError for a kind or
    # apiVersion the release does not have (a removed beta API, a typo): both fail.
    kubernetes_validate.validate(doc, version, strict=True)


def test_compose_file_matches_the_compose_specification():
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    errors = compose_errors(document)
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_compose_validation_rejects_a_misspelt_key():
    # The schema check has teeth: a typo in a healthcheck and a bad depends_on condition.
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    broken = copy.deepcopy(document)
    broken["services"]["online"]["healthcheck"]["tset"] = ["CMD", "true"]
    assert compose_errors(broken)
    broken = copy.deepcopy(document)
    broken["services"]["online"]["depends_on"]["registry"]["condition"] = "service_ready"
    assert compose_errors(broken)


def test_compose_long_running_services_have_health_checks():
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"setup"}
    for name, service in services.items():
        if name in one_shot:
            continue
        assert "healthcheck" in service, f"{name} has no healthcheck"
        for dep, how in (service.get("depends_on") or {}).items():
            expected = (
                "service_completed_successfully" if dep in one_shot else "service_healthy"
            )
            assert how["condition"] == expected, f"{name} -> {dep}: {how}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_the_api_schemas(version):
    docs = k8s_documents()
    kinds = {doc["kind"] for _, doc in docs}
    assert {
        "Namespace", "ConfigMap", "Secret", "ServiceAccount", "ClusterRole",
        "ClusterRoleBinding", "Deployment", "Service", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "PersistentVolumeClaim", "Job",
    } <= kinds, kinds
    failures = []
    for name, doc in docs:
        try:
            k8s_validate(doc, version)
        except Exception as e:  # noqa: BLE001 - every kind of failure is reported
            failures.append(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {e}")
    assert not failures, "\n".join(failures)


def test_kubernetes_validation_rejects_a_misspelt_field():
    deployment = next(
        doc for _, doc in k8s_documents()
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "feast-rs-online"
    )
    broken = copy.deepcopy(deployment)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessprobe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(broken, KUBERNETES_VERSIONS[-1])
    broken = copy.deepcopy(deployment)
    broken["apiVersion"] = "apps/v1beta1"
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        k8s_validate(broken, KUBERNETES_VERSIONS[-1])


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), listed
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def test_kubernetes_objects_are_namespaced_consistently():
    namespace = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())["namespace"]
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for name, doc in k8s_documents():
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in doc["metadata"], f"{name}: {doc['kind']}"
        else:
            assert doc["metadata"].get("namespace") == namespace, f"{name}: {doc['kind']}"
