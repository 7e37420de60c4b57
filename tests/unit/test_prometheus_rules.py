"""Prometheus scrape configs, alert rules and their unit tests, the runbook and the dashboard.

promtool comes from Debian's prometheus package, which `make services` installs. Without it
these tests fail, and they are never skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tombstone.cdc.metrics import BridgeMetrics
from tombstone.ledger.service import LedgerMetrics
from tombstone.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
COMPOSE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
K8S_CONFIG = PROMETHEUS_DIR / "prometheus-k8s.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULES_FILE = RULES_DIR / "tombstone.rules.yml"
RULES_TEST_FILE = PROMETHEUS_DIR / "tests" / "tombstone.rules.test.yml"
DASHBOARD_FILE = ROOT / "deploy" / "grafana" / "tombstone-dashboard.json"
RUNBOOK_FILE = ROOT / "docs" / "runbook.md"
K8S_DIR = ROOT / "deploy" / "k8s"

WORKER_JOB = "tombstone-workers"
LEDGER_JOB = "tombstone-ledger"
CDC_JOB = "tombstone-cdc"

# The metric names that the rules and the dashboard may use, before the exposition suffixes.
COUNTERS = {
    "tombstone_deletes",
    "tombstone_items_affected",
    "tombstone_dead_letters",
    "tombstone_retries",
    "tombstone_offset_commits",
    "tombstone_ledger_undecodable_records",
    "tombstone_cdc_events",
    "tombstone_cdc_requests",
    "tombstone_cdc_skipped",
    "tombstone_cdc_dead_letters",
    "tombstone_cdc_lookbacks",
    "tombstone_cdc_retries",
    "tombstone_cdc_offset_commits",
}
GAUGES = {
    "tombstone_consumer_lag_records",
    "tombstone_consumer_lag_seconds",
    "tombstone_store_up",
    "tombstone_partitions_paused",
    "tombstone_ledger_requests",
    "tombstone_ledger_overdue_requests",
    "tombstone_ledger_rejected_requests",
    "tombstone_ledger_oldest_open_request_age_seconds",
    "tombstone_cdc_consumer_lag_records",
    "tombstone_cdc_consumer_lag_seconds",
    "tombstone_cdc_partitions_paused",
}
HISTOGRAMS = {
    "tombstone_apply_seconds",
    "tombstone_ledger_request_completion_seconds",
    "tombstone_cdc_source_delay_seconds",
}
EXPOSED_NAMES = frozenset(
    {f"{name}_total" for name in COUNTERS}
    | GAUGES
    | {f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)

# A tombstone metric name that is not part of a recording rule's name such as
# store:tombstone_consumer_lag_seconds:max.
METRIC_NAME = re.compile(r"(?<![\w:])tombstone_\w+")
RECORDED_NAME = re.compile(r"\b[a-z_]+:[a-z0-9_]+(?::[a-z0-9_]+)?")

# Values that Grafana substitutes for its variables, so that promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$store": ".*",
                     "$bridge": ".*"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool was not found on PATH. Run `make services`, which installs Debian's "
            "prometheus package with promtool.",
            pytrace=False,
        )
    return path


def _run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def _assert_succeeded(result: subprocess.CompletedProcess[str]) -> None:
    command = " ".join(str(arg) for arg in result.args)
    assert result.returncode == 0, (
        f"`{command}` exited with {result.returncode}.\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def _load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _rules() -> list[dict]:
    return [rule for group in _load_yaml(RULES_FILE)["groups"] for rule in group["rules"]]


def _alerts() -> list[dict]:
    return [rule for rule in _rules() if "alert" in rule]


def _recorded_names() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


def _dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def _dashboard_queries(dashboard: dict) -> list[str]:
    """Return the PromQL expressions of the dashboard's panels and template variables."""
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append(target["expr"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def _github_anchor(heading: str) -> str:
    """Return the anchor that GitHub and most Markdown renderers give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _k8s_deployments() -> list[dict]:
    documents = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return [d for d in documents if d["kind"] == "Deployment"]


def _keep_regex(job: dict, source_label: str) -> str:
    for relabel in job["relabel_configs"]:
        if relabel.get("action") == "keep" and relabel["source_labels"] == [source_label]:
            return relabel["regex"]
    raise AssertionError(f"job {job['job_name']} has no keep rule on {source_label}")


# promtool on the configurations and rules


def test_promtool_accepts_compose_config() -> None:
    # check config also checks every rule file that rule_files names.
    _assert_succeeded(_run_promtool("check", "config", str(COMPOSE_CONFIG)))


def test_promtool_accepts_k8s_config(tmp_path: Path) -> None:
    result = _run_promtool("check", "config", str(K8S_CONFIG))
    if result.returncode != 0 and "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # NOTE: Debian builds Prometheus without Kubernetes service discovery (its NEWS.Debian,
        # 1.5.0+ds-1), so Debian's promtool rejects kubernetes_sd_configs. Check everything
        # else (relabelling, rule files, globals) on a copy with a static target in its place.
        # test_k8s_config_discovers_annotated_pods checks the discovery section itself.
        config = _load_yaml(K8S_CONFIG)
        for job in config["scrape_configs"]:
            assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
            job["static_configs"] = [{"targets": ["127.0.0.1:9400"]}]
        config["rule_files"] = [str(RULES_DIR / "*.yml")]
        copy = tmp_path / "prometheus-k8s-static.yml"
        copy.write_text(yaml.safe_dump(config), encoding="utf-8")
        result = _run_promtool("check", "config", str(copy))
    _assert_succeeded(result)


def test_promtool_accepts_rules() -> None:
    _assert_succeeded(_run_promtool("check", "rules", str(RULES_FILE)))


def test_promtool_rule_unit_tests_pass() -> None:
    result = _run_promtool("test", "rules", str(RULES_TEST_FILE))
    _assert_succeeded(result)
    assert "SUCCESS" in result.stdout


# Scrape configurations


def test_compose_config_has_ledger_and_rules() -> None:
    config = _load_yaml(COMPOSE_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "rules/*.yml" in config["rule_files"]
    assert WORKER_JOB in jobs
    assert LEDGER_JOB in jobs
    ledger_targets = [t for group in jobs[LEDGER_JOB]["static_configs"] for t in group["targets"]]
    assert ledger_targets == ["ledger:9410"]


def test_compose_runs_ledger_and_mounts_rules() -> None:
    services = _load_yaml(ROOT / "docker-compose.yml")["services"]
    assert services["ledger"]["command"][0] == "ledger"
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in services["prometheus"]["volumes"]


def test_k8s_config_discovers_annotated_pods() -> None:
    config = _load_yaml(K8S_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    compose_jobs = {job["job_name"] for job in _load_yaml(COMPOSE_CONFIG)["scrape_configs"]}
    assert set(jobs) == compose_jobs
    assert "rules/*.yml" in config["rule_files"]
    for job in jobs.values():
        assert job["kubernetes_sd_configs"] == [{"role": "pod"}], job["job_name"]
        assert _keep_regex(job, "__meta_kubernetes_pod_annotation_prometheus_io_scrape") == "true"
        address_sources = [r["source_labels"] for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
        assert address_sources, f"job {job['job_name']} never sets __address__"
        for sources in address_sources:
            assert sources[0] == "__meta_kubernetes_pod_annotation_prometheus_io_port"


def test_k8s_deployments_match_scrape_jobs() -> None:
    jobs = {job["job_name"]: job for job in _load_yaml(K8S_CONFIG)["scrape_configs"]}
    app_names = {
        name: _keep_regex(job, "__meta_kubernetes_pod_label_app_kubernetes_io_name") for name, job in jobs.items()
    }
    scraped_jobs = set()
    for deployment in _k8s_deployments():
        name = deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        container_port = template["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert annotations["prometheus.io/port"] == str(container_port), name
        app_name = template["metadata"]["labels"]["app.kubernetes.io/name"]
        matching = [job for job, regex in app_names.items() if re.fullmatch(regex, app_name)]
        assert len(matching) == 1, f"Deployment {name} (app {app_name}) matches scrape jobs {matching}"
        scraped_jobs.update(matching)
    assert scraped_jobs == {WORKER_JOB, LEDGER_JOB, CDC_JOB}


# Alert rules, their tests and the runbook


def test_rules_define_at_least_six_alerts() -> None:
    assert len(_alerts()) >= 6


def test_alerts_have_severity_and_annotations() -> None:
    for alert in _alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        for key in ("summary", "description", "runbook_url"):
            assert alert["annotations"].get(key, "").strip(), f"{name} has no {key}"


def test_rule_tests_cover_every_rule_file() -> None:
    test_config = _load_yaml(RULES_TEST_FILE)
    tested = {(RULES_TEST_FILE.parent / path).resolve() for path in test_config["rule_files"]}
    assert tested == {path.resolve() for path in RULES_DIR.glob("*.yml")}


def test_every_alert_has_firing_and_quiet_cases() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in _load_yaml(RULES_TEST_FILE)["tests"]:
        for case in group.get("alert_rule_test", []):
            # promtool treats a missing exp_alerts as an empty list.
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    for alert in _alerts():
        name = alert["alert"]
        assert name in firing, f"{name} has no test case where it fires"
        assert name in quiet, f"{name} has no test case where it stays quiet"


def test_runbook_urls_point_at_sections() -> None:
    headings = re.findall(r"^#{1,6} +(.+)$", RUNBOOK_FILE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    anchors = {_github_anchor(heading) for heading in headings}
    for alert in _alerts():
        url = alert["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md", f"{alert['alert']}: runbook_url {url!r} is not docs/runbook.md#..."
        assert anchor in anchors, f"{alert['alert']}: docs/runbook.md has no section with anchor #{anchor}"


def test_cdc_alerts_use_bridge_series_only() -> None:
    [group] = [g for g in _load_yaml(RULES_FILE)["groups"] if g["name"] == "tombstone-cdc"]
    assert group["rules"], "the tombstone-cdc group has no rules"
    for rule in group["rules"]:
        expr = rule["expr"]
        for name in METRIC_NAME.findall(expr):
            assert name.startswith("tombstone_cdc_"), f"{rule['alert']} uses the non-bridge metric {name}"
        for name in RECORDED_NAME.findall(expr):
            assert name.startswith("bridge:"), f"{rule['alert']} uses the non-bridge record {name}"
        if "up{" in expr:
            assert f'up{{job="{CDC_JOB}"}}' in expr, rule["alert"]


def test_rule_expressions_use_known_metrics() -> None:
    recorded = _recorded_names()
    for rule in _rules():
        expr = rule["expr"]
        for name in METRIC_NAME.findall(expr):
            assert name in EXPOSED_NAMES, f"rule {rule.get('alert') or rule.get('record')} uses unknown metric {name}"
        for name in RECORDED_NAME.findall(expr):
            assert name in recorded, f"rule {rule.get('alert') or rule.get('record')} uses unknown record {name}"


def test_code_exports_every_known_metric() -> None:
    exported = set()
    for registry in (WorkerMetrics("search").registry, LedgerMetrics().registry, BridgeMetrics("chinook").registry):
        for family in registry.collect():
            if family.type == "counter":
                exported.add(f"{family.name}_total")
            elif family.type == "histogram":
                exported.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            else:
                exported.add(family.name)
    missing = EXPOSED_NAMES - exported
    assert not missing, f"the rules and dashboard use metrics that no code exports: {sorted(missing)}"


# Grafana dashboard


def test_dashboard_uses_known_metrics() -> None:
    for query in _dashboard_queries(_dashboard()):
        names = METRIC_NAME.findall(query)
        assert names, f"dashboard query uses no tombstone metric: {query}"
        for name in names:
            assert name in EXPOSED_NAMES, f"dashboard query uses unknown metric {name}: {query}"


def test_dashboard_uses_datasource_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_dashboard_covers_required_metrics() -> None:
    used = {name for query in _dashboard_queries(_dashboard()) for name in METRIC_NAME.findall(query)}
    required = {
        "tombstone_consumer_lag_records",
        "tombstone_consumer_lag_seconds",
        "tombstone_deletes_total",
        "tombstone_apply_seconds_bucket",
        "tombstone_ledger_request_completion_seconds_bucket",
        "tombstone_ledger_requests",
        "tombstone_ledger_overdue_requests",
        "tombstone_ledger_rejected_requests",
        "tombstone_ledger_oldest_open_request_age_seconds",
        "tombstone_dead_letters_total",
        "tombstone_retries_total",
        "tombstone_store_up",
        "tombstone_partitions_paused",
        "tombstone_cdc_requests_total",
        "tombstone_cdc_events_total",
        "tombstone_cdc_dead_letters_total",
        "tombstone_cdc_source_delay_seconds_bucket",
        "tombstone_cdc_consumer_lag_records",
        "tombstone_cdc_consumer_lag_seconds",
        "tombstone_cdc_retries_total",
        "tombstone_cdc_partitions_paused",
    }
    assert required <= used, f"the dashboard shows no panel for {sorted(required - used)}"


def test_promtool_parses_dashboard_queries(tmp_path: Path) -> None:
    rules = []
    for index, query in enumerate(_dashboard_queries(_dashboard())):
        if query.startswith("label_values("):
            continue  # a Grafana function, not PromQL
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"dashboard query has a Grafana variable this test does not know: {query}"
        rules.append({"record": f"dashboard:query_{index}:expr", "expr": query})
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    _assert_succeeded(_run_promtool("check", "rules", str(rules_file)))
