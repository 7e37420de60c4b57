"""Every consumer spec has a compose service, a Kubernetes Deployment and a scrape target."""

from __future__ import annotations

from pathlib import Path

import yaml

from tombstone.spec import ConsumerSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted((ROOT / "consumers").glob("*.toml"))


def _specs() -> list[tuple[Path, ConsumerSpec]]:
    return [(path, load_spec(path)) for path in SPEC_FILES]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _k8s_documents() -> list[dict]:
    documents = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return documents


def test_specs_exist_for_server_stores() -> None:
    kinds = {spec.store.kind for _, spec in _specs()}
    assert {"sqlite", "duckdb", "search", "objects", "topic", "postgresql", "redis"} <= kinds


def test_compose_has_service_per_spec() -> None:
    services = _compose()["services"]
    for path, spec in _specs():
        service = services.get(f"worker-{spec.name}")
        assert service is not None, f"docker-compose.yml has no service worker-{spec.name}"
        assert service["command"] == ["worker", f"consumers/{path.name}"]
        assert "KAFKA_BOOTSTRAP_SERVERS" in service["environment"]
        assert "TOMBSTONE_PSEUDONYM_KEY" in service["environment"]


def test_compose_runs_backing_services() -> None:
    services = _compose()["services"]
    for name in ("kafka", "postgres", "redis", "prometheus"):
        assert name in services, name
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_k8s_deployment_per_spec() -> None:
    deployments = {d["metadata"]["name"]: d for d in _k8s_documents() if d["kind"] == "Deployment"}
    for path, spec in _specs():
        deployment = deployments.get(f"tombstone-worker-{spec.name}")
        assert deployment is not None, f"deploy/k8s has no Deployment tombstone-worker-{spec.name}"
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["worker", f"/etc/tombstone/consumers/{path.name}"]
        assert container["ports"][0]["containerPort"] == spec.metrics_port
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["requests"]["memory"]
        sources = {next(iter(ref)): ref[next(iter(ref))]["name"] for ref in container["envFrom"]}
        assert sources == {"configMapRef": "tombstone-config", "secretRef": "tombstone-secrets"}


def test_k8s_config_and_secret_exist() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _k8s_documents()}
    assert ("ConfigMap", "tombstone-config") in kinds
    assert ("Secret", "tombstone-secrets") in kinds


def test_prometheus_scrapes_every_worker() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    for _, spec in _specs():
        assert f"worker-{spec.name}:{spec.metrics_port}" in targets


def test_spec_files_contain_no_secrets() -> None:
    for path in SPEC_FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip().startswith("password"):
                assert "${" in line, f"{path.name} has a literal password"
