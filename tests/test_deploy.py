"""Tests that the Kubernetes manifests, the Helm chart, the alerts and the dashboard agree
with the sidecar they deploy: configs load, metric names exist, copies match."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

import sidecar
from sidecar.config import SidecarConfig, load_config_text
from sidecar.observe.metrics import SidecarMetrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CHART = ROOT / "helm" / "sidecar"
OPERATING = ROOT / "docs" / "operating.md"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))
# Where the manifests mount the admin token; the test points token_file at a real file.
TOKEN_PATH = "/var/run/sidecar/admin-token"
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|count|sum)$")


def _documents(path: Path) -> list[Any]:
    """The non-empty YAML documents of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _only(path: Path, kind: str) -> Any:
    """The one document of `kind` in a file."""
    (doc,) = (doc for doc in _documents(path) if doc["kind"] == kind)
    return doc


def _load(text: str, tmp_path: Path) -> SidecarConfig:
    """Validate config text, with the mounted token path replaced by a real file."""
    token = tmp_path / "admin-token"
    token.write_text("test-token\n", encoding="utf-8")
    return load_config_text(text.replace(TOKEN_PATH, str(token)), source="embedded")


def _configmap_text() -> str:
    return str(_only(DEPLOY / "configmap.yaml", "ConfigMap")["data"]["sidecar.yaml"])


def _pod_template() -> Any:
    return _only(DEPLOY / "deployment.yaml", "Deployment")["spec"]["template"]


def _pod_spec() -> Any:
    return _pod_template()["spec"]


def _exprs(node: Any) -> Iterator[str]:
    """Every `expr` string anywhere in a JSON or YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def _exposed_names() -> set[str]:
    """Every metric name SidecarMetrics registers, as PromQL spells it."""
    registry = CollectorRegistry()
    SidecarMetrics(registry, "test")
    names = set()
    for family in registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def _unknown_metrics(exprs: list[str]) -> set[str]:
    used = {
        HISTOGRAM_SUFFIX.sub("", name) for e in exprs for name in re.findall(r"sidecar_[a-z_]+", e)
    }
    assert used, "no sidecar_* metric found"
    return used - _exposed_names()


def _alert_rules(groups: Any) -> list[Any]:
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown text (outside code fences)."""
    anchors = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.+)", line)):
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_deploy_manifest_parses_with_api_version_and_kind(path: Path) -> None:
    """Every YAML document under deploy/ parses and names its apiVersion and kind."""
    docs = _documents(path)
    assert docs
    for doc in docs:
        assert doc.get("apiVersion")
        assert doc.get("kind")


def test_deploy_configmap_config_loads(tmp_path: Path) -> None:
    """The config embedded in the ConfigMap passes the sidecar's own validation."""
    config = _load(_configmap_text(), tmp_path)
    assert not config.admin.bind.is_loopback
    assert all(listener.bind.is_loopback for listener in config.listeners)


def test_deploy_native_sidecar_drains_at_once(tmp_path: Path) -> None:
    """The sidecar is a native sidecar (restartPolicy Always init container) with drain_delay 0s."""
    (container,) = _pod_spec()["initContainers"]
    assert container["restartPolicy"] == "Always"
    assert container["name"] == "sidecar"
    assert _load(_configmap_text(), tmp_path).shutdown.drain_delay == 0


def test_deploy_sidecar_mounts_config_folder_and_token() -> None:
    """The ConfigMap is mounted as a directory (no subPath) holding the -c file, and the token where the config reads it."""
    spec = _pod_spec()
    (container,) = spec["initContainers"]
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert not any("subPath" in mount for mount in mounts.values())
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    config_file = Path(container["args"][container["args"].index("-c") + 1])
    (config_volume,) = (name for name, v in volumes.items() if "configMap" in v)
    assert Path(mounts[config_volume]["mountPath"]) == config_file.parent
    configmap = _only(DEPLOY / "configmap.yaml", "ConfigMap")
    assert volumes[config_volume]["configMap"]["name"] == configmap["metadata"]["name"]
    assert config_file.name in configmap["data"]
    (token_volume,) = (name for name, v in volumes.items() if "secret" in v)
    (item,) = volumes[token_volume]["secret"]["items"]
    assert str(Path(mounts[token_volume]["mountPath"]) / item["path"]) == TOKEN_PATH
    secret = _only(DEPLOY / "secret.yaml", "Secret")
    assert volumes[token_volume]["secret"]["secretName"] == secret["metadata"]["name"]
    assert item["key"] in secret["stringData"]


def test_deploy_probes_and_scrape_use_the_admin_port(tmp_path: Path) -> None:
    """Probes hit /healthz and /readyz on the admin port the config binds, which Prometheus scrapes."""
    (container,) = _pod_spec()["initContainers"]
    (port,) = container["ports"]
    assert port["containerPort"] == _load(_configmap_text(), tmp_path).admin.bind.port
    probes = {
        key: container[key]["httpGet"]
        for key in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert {key: probe["path"] for key, probe in probes.items()} == {
        "startupProbe": "/readyz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert all(probe["port"] == port["name"] == "admin" for probe in probes.values())
    annotations = _pod_template()["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    podmonitor = _only(DEPLOY / "podmonitor.yaml", "PodMonitor")
    assert podmonitor["spec"]["podMetricsEndpoints"][0]["port"] == "admin"


def test_deploy_app_proxies_through_the_forward_listener(tmp_path: Path) -> None:
    """The app's HTTP_PROXY is the config's forward listener, and NO_PROXY keeps loopback out of it."""
    config = _load(_configmap_text(), tmp_path)
    (forward,) = (listener for listener in config.listeners if listener.upstream is None)
    (app,) = _pod_spec()["containers"]
    env = {var["name"]: var["value"] for var in app["env"]}
    assert env["HTTP_PROXY"] == env["http_proxy"] == f"http://127.0.0.1:{forward.bind.port}"
    assert "127.0.0.1" in env["NO_PROXY"].split(",")
    assert env["no_proxy"] == env["NO_PROXY"]


def test_dashboard_uses_datasource_and_upstream_variables() -> None:
    """The dashboard is JSON whose every panel queries the ${datasource} variable and which has an upstream variable."""
    dashboard = json.loads((DEPLOY / "dashboard.json").read_text(encoding="utf-8"))
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["upstream"]["type"] == "query"
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all(target["datasource"]["uid"] == "${datasource}" for target in panel["targets"])


def test_dashboard_queries_only_exposed_metrics() -> None:
    """Every sidecar_* metric the dashboard queries is registered by SidecarMetrics."""
    dashboard = json.loads((DEPLOY / "dashboard.json").read_text(encoding="utf-8"))
    assert _unknown_metrics(list(_exprs(dashboard))) == set()


def test_alerts_query_only_exposed_metrics() -> None:
    """Every sidecar_* metric the alert rules query is registered by SidecarMetrics."""
    rule = _only(DEPLOY / "alerts.yaml", "PrometheusRule")
    assert _unknown_metrics(list(_exprs(rule["spec"]))) == set()


def test_alerts_explain_themselves_and_link_an_existing_runbook_section() -> None:
    """Every alert has a severity, a summary, a description and a runbook_url to a heading of docs/operating.md."""
    rules = _alert_rules(_only(DEPLOY / "alerts.yaml", "PrometheusRule")["spec"]["groups"])
    anchors = _github_anchors(OPERATING.read_text(encoding="utf-8"))
    assert len(rules) >= 7
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        page, anchor = rule["annotations"]["runbook_url"].split("#")
        assert page == "docs/operating.md"
        assert anchor in anchors, rule["alert"]


def test_helm_values_config_loads(tmp_path: Path) -> None:
    """The chart's default config (values.yaml `config:`) passes the sidecar's own validation."""
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    config = _load(yaml.safe_dump(values["config"]), tmp_path)
    assert config.shutdown.drain_delay == 0
    assert values["config"]["admin"]["token_file"] == TOKEN_PATH
    helpers = (CHART / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    assert f"mountPath: {Path(TOKEN_PATH).parent}" in helpers
    assert f"path: {Path(TOKEN_PATH).name}" in helpers


def test_helm_files_copy_the_deploy_alerts_and_dashboard() -> None:
    """The chart's files/ hold the same alert groups and the same dashboard as deploy/."""
    rule = _only(DEPLOY / "alerts.yaml", "PrometheusRule")
    chart_rules = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text(encoding="utf-8"))
    assert chart_rules == rule["spec"]
    dashboard = (DEPLOY / "dashboard.json").read_bytes()
    assert (CHART / "files" / "dashboard.json").read_bytes() == dashboard


def test_helm_and_deploy_run_the_package_version() -> None:
    """Chart appVersion, the chart's image tag and the manifests' image all name the package version."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    (container,) = _pod_spec()["initContainers"]
    assert chart["appVersion"] == values["image"]["tag"] == sidecar.__version__
    assert container["image"] == f"{values['image']['repository']}:{sidecar.__version__}"
