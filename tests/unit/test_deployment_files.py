"""Every consumer spec and the CDC bridge have a compose service, a Kubernetes Deployment and a
scrape target, and the copies of their settings agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tombstone.cdc.config import BridgeConfig, load_bridge_config
from tombstone.spec import ConsumerSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted((ROOT / "consumers").glob("*.toml"))
BRIDGE_FILE = ROOT / "deploy" / "debezium" / "chinook-bridge.toml"
CONNECTOR_FILE = ROOT / "deploy" / "debezium" / "chinook-postgres.json"
CONNECT_PROPERTIES = ROOT / "deploy" / "connect" / "connect-distributed.properties"
CDC_JOB = "tombstone-cdc"
# The Dockerfile copies the repository's deploy/ folder to this path in the image.
IMAGE_DEPLOY_DIR = Path("/app/deploy")


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


# The CDC bridge and Kafka Connect


@pytest.fixture
def default_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset the variables that chinook-bridge.toml reads, so that it takes its defaults."""
    for name in ("TOMBSTONE_CDC_METRICS_PORT", "TOMBSTONE_CDC_TOPIC_PREFIX"):
        monkeypatch.delenv(name, raising=False)


def _load_bridge_text(text: str, tmp_path: Path) -> BridgeConfig:
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return load_bridge_config(path)


def _compose_config_content(name: str) -> str:
    return _compose()["configs"][name]["content"]


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def _assert_matches_repository_bridge(config: BridgeConfig, where: str) -> None:
    """The deployed copy differs from chinook-bridge.toml only where a container needs it."""
    reference = load_bridge_config(BRIDGE_FILE)
    assert config.tables == reference.tables, f"{where}: [[tables]] differ from {BRIDGE_FILE.name}"
    differing = {"metrics_host", "connector_config"}
    assert config.bridge.model_dump(exclude=differing) == reference.bridge.model_dump(exclude=differing), where
    # The bridge binds 127.0.0.1 by default, which Prometheus cannot reach in another container.
    assert config.bridge.metrics_host == "0.0.0.0", where
    connector = Path(config.bridge.connector_config or "")
    assert connector.is_relative_to(IMAGE_DEPLOY_DIR), f"{where}: {connector} is not in the image"
    assert ROOT / "deploy" / connector.relative_to(IMAGE_DEPLOY_DIR) == CONNECTOR_FILE, where


def test_bridge_topics_match_connector(default_env: None) -> None:
    connector = json.loads(CONNECTOR_FILE.read_text(encoding="utf-8"))["config"]
    captured = set(connector["table.include.list"].split(","))
    for table in load_bridge_config(BRIDGE_FILE).tables:
        assert table.source_table in captured
        assert table.topic == f"{connector['topic.prefix']}.{table.source_table}"


def test_compose_bridge_config_matches_repository(default_env: None, tmp_path: Path) -> None:
    service = _compose()["services"]["cdc-bridge"]
    [mount] = service["configs"]
    assert service["command"] == ["cdc-bridge", mount["target"]]
    assert "KAFKA_BOOTSTRAP_SERVERS" in service["environment"]
    config = _load_bridge_text(_compose_config_content(mount["source"]), tmp_path)
    _assert_matches_repository_bridge(config, "docker-compose.yml")


def test_prometheus_scrapes_compose_bridge(default_env: None, tmp_path: Path) -> None:
    [mount] = _compose()["services"]["cdc-bridge"]["configs"]
    config = _load_bridge_text(_compose_config_content(mount["source"]), tmp_path)
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = [t for group in jobs[CDC_JOB]["static_configs"] for t in group["targets"]]
    assert targets == [f"cdc-bridge:{config.bridge.metrics_port}"]


def test_compose_connect_matches_local_worker() -> None:
    services = _compose()["services"]
    connect = services["connect"]
    pom = (ROOT / "deploy" / "connect" / "pom.xml").read_text(encoding="utf-8")
    kafka_version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)
    build = connect["build"]["dockerfile_inline"]
    assert f"FROM apache/kafka:{kafka_version}" in build
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version}"
    assert "COPY deploy/connect/pom.xml" in build
    assert "-Pdebezium" in build

    [mount] = connect["configs"]
    assert connect["command"][-1] == mount["target"]
    worker = _properties(_compose_config_content(mount["source"]))
    local = _properties(CONNECT_PROPERTIES.read_text(encoding="utf-8"))
    assert set(worker) == set(local), "the compose worker and deploy/connect set different properties"
    assert worker["bootstrap.servers"] == services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
    assert worker["plugin.path"] in build
    rest_port = worker["listeners"].rsplit(":", 1)[1]
    assert worker["rest.advertised.port"] == rest_port
    assert f"127.0.0.1:{rest_port}:{rest_port}" in connect["ports"]
    assert rest_port in " ".join(connect["healthcheck"]["test"])


def test_compose_registers_connector_with_its_variables() -> None:
    services = _compose()["services"]
    register = services["connect-register"]
    command = register["command"]
    assert command[:2] == ["connect", "register"]
    assert (ROOT / command[-1]).resolve() == CONNECTOR_FILE
    worker = _properties(_compose_config_content(services["connect"]["configs"][0]["source"]))
    assert command[command.index("--url") + 1] == f"http://connect:{worker['rest.advertised.port']}"
    assert register["depends_on"]["connect"]["condition"] == "service_healthy"
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", CONNECTOR_FILE.read_text(encoding="utf-8")))
    assert referenced <= set(register["environment"]), f"unset: {sorted(referenced - set(register['environment']))}"
    assert register["environment"]["TOMBSTONE_PG_HOST"] == "postgres"


def test_k8s_bridge_deployment_matches_config(default_env: None, tmp_path: Path) -> None:
    documents = _k8s_documents()
    deployments = [d for d in documents if d["kind"] == "Deployment"
                   and d["metadata"]["labels"]["app.kubernetes.io/name"] == "tombstone-cdc-bridge"]
    assert deployments, "deploy/k8s has no Deployment of the CDC bridge"
    config_maps = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ConfigMap"}
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]
        [container] = pod["spec"]["containers"]
        [mount] = container["volumeMounts"]
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
        config_map = config_maps[volume["configMap"]["name"]]
        command, config_path = container["args"]
        assert command == "cdc-bridge", name
        assert Path(config_path).parent == Path(mount["mountPath"]), name
        config = _load_bridge_text(config_map["data"][Path(config_path).name], tmp_path)
        _assert_matches_repository_bridge(config, name)

        assert name == f"tombstone-cdc-{config.bridge.name}"
        assert container["ports"][0]["containerPort"] == config.bridge.metrics_port, name
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(config.bridge.metrics_port), name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["resources"]["requests"]["cpu"], name
        assert container["resources"]["requests"]["memory"], name
        assert container["envFrom"] == [{"configMapRef": {"name": "tombstone-config"}}], name
