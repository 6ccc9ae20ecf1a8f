"""The deployment files: Prometheus config and alert rules (promtool), compose.yaml (the Compose
spec's JSON schema, vendored; there is no Docker engine to run it here), Grafana provisioning,
and a dashboard whose every query names metrics the services really expose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from scrape_util import scrape_text

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "livestats.json"
_SECRET = re.compile(r"\$\{(\w+):\?[^}]+\}")  # ${VAR:?message}: compose refuses to start without VAR


def test_prometheus_config_and_rules_pass_promtool(promtool):
    for args in (
        ("check", "config", str(PROMETHEUS / "prometheus.yml")),
        ("check", "rules", str(PROMETHEUS / "alerts.yml")),
        ("test", "rules", str(PROMETHEUS / "alerts_test.yml")),
    ):
        result = promtool(*args)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_the_alerts_the_issue_asks_for_exist():
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    exprs = {r["alert"]: r["expr"] for group in rules["groups"] for r in group["rules"]}
    assert 'up{job="livestats-worker"}' in exprs["LivestatsWorkerDown"]
    assert "livestats_calls_total" in exprs["LivestatsCallFailureRatioHigh"]
    assert "livestats_runs_stalled_total" in exprs["LivestatsRunsStalled"]
    assert "livestats_gateway_delivery_lag_seconds_bucket" in exprs["LivestatsDeliveryLagHigh"]
    assert "livestats_retry_budget_exhaustions_total" in exprs["LivestatsRetryBudgetExhausted"]
    # "everything down": no target left at all is caught by absent(), not by `up == 0`
    assert exprs["LivestatsNoWorkers"].startswith("absent(") and exprs["LivestatsNoGateways"].startswith("absent(")
    assert "livestats_worker_redis_up" in exprs["LivestatsWorkerRedisDown"]


def _alerts() -> dict[str, dict]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return {r["alert"]: r for group in rules["groups"] for r in group["rules"]}


def test_every_alert_has_a_runbook_and_humanised_values():
    for name, rule in _alerts().items():
        annotations = rule["annotations"]
        assert "`" in annotations.get("runbook", ""), f"{name}: a runbook naming the command to run"
        for text in annotations.values():
            for use in re.findall(r"\{\{[^}]*\$value[^}]*\}\}", text):
                assert re.search(r"\| *humanize(Percentage|Duration)?\b", use), f"{name}: raw {use}"


def test_every_alert_is_tested_firing_and_then_resolved():
    """alerts_test.yml (run by promtool above) sees each alert fire, and in the same scenario,
    later, not fire: a rule that could never resolve would pass a firing-only test."""
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]

    def minutes(t: str) -> int:
        assert t.endswith("m"), t
        return int(t[:-1])

    resolved: set[str] = set()
    for scenario in tests:
        fired: dict[str, int] = {}
        for case in scenario["alert_rule_test"]:
            at = minutes(case["eval_time"])
            if case.get("exp_alerts"):
                fired[case["alertname"]] = min(at, fired.get(case["alertname"], at))
            elif case["alertname"] in fired and at > fired[case["alertname"]]:
                resolved.add(case["alertname"])
    assert set(_alerts()) - resolved == set()


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _validator() -> jsonschema.Draft201909Validator:
    schema = json.loads((DEPLOY / "compose-spec" / "compose-spec.json").read_text())
    # The schema names its draft as "http://json-schema.org/draft/2019-09/schema#", which
    # jsonschema does not recognise by that spelling: use that draft's validator explicitly.
    assert "2019-09" in schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_is_valid_against_the_compose_spec_schema():
    errors = sorted(_validator().iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_rejects_what_compose_would_reject():
    broken = _compose()
    broken["services"]["worker"]["depends_on"]["redis"]["condition"] = "service_happy"
    broken["services"]["gateway"]["restart_policy"] = "always"
    messages = [e.message for e in _validator().iter_errors(broken)]
    assert len(messages) >= 2, messages


def test_compose_starts_in_dependency_order_behind_healthchecks_and_needs_its_secrets():
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"redis", "worker", "gateway", "prometheus", "grafana"}
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert rule["condition"] == "service_healthy", (name, dependency)
            assert "healthcheck" in services[dependency], f"{name} waits for {dependency}, which has no healthcheck"
    assert services["grafana"]["depends_on"].keys() == {"prometheus"}
    assert services["prometheus"]["depends_on"].keys() == {"gateway", "worker"}
    # --scale worker=N: nothing that two replicas could not share
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "--appendonly yes" in " ".join(services["redis"]["command"])
    text = (ROOT / "compose.yaml").read_text()
    assert {"REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "LIVESTATS_ADMIN_TOKEN"} <= set(_SECRET.findall(text))
    assert _SECRET.fullmatch(services["gateway"]["environment"]["LIVESTATS_GATEWAY_ADMIN_TOKEN"])
    assert _SECRET.fullmatch(services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"])
    for url in (
        services["worker"]["environment"]["LIVESTATS_REDIS_URL"],
        services["gateway"]["environment"]["LIVESTATS_GATEWAY_REDIS_URL"],
    ):
        assert _SECRET.search(url), url
    # what the containers mount must exist in the repository
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


def test_grafana_is_provisioned_and_not_editable_in_the_ui():
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "livestats.yml").read_text())
    dashboard = json.loads(DASHBOARD.read_text())
    (source,) = datasource["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["editable"] is False
    (files,) = provider["providers"]
    assert files["allowUiUpdates"] is False
    assert files["options"]["path"] == "/etc/grafana/dashboards"
    assert dashboard["editable"] is False
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"instance", "phase", "model"}
    for variable in variables.values():
        assert variable["includeAll"] and variable["allValue"] == ".*" and variable["multi"]
        assert variable["datasource"]["uid"] == source["uid"]
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}


def _exposed(text: str) -> set[str]:
    """Every series name an exposition offers, labelled families without samples included."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
        names.update(s.name for s in family.samples)
    return names


@pytest.fixture
async def exposed(gateway, metrics_worker) -> set[str]:
    worker_url = await metrics_worker()
    return _exposed(scrape_text(f"{gateway.http}/metrics")) | _exposed(scrape_text(worker_url))


async def test_every_dashboard_query_uses_metrics_the_services_expose(exposed):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = {name for expr in exprs for name in re.findall(r"\b(livestats_\w+)", expr)}
    assert not used - exposed, f"the dashboard queries series nobody exposes: {sorted(used - exposed)}"
    for expr in exprs:  # every panel shows livestats data (or Prometheus' own `up` of our jobs)
        assert re.search(r"\blivestats_\w+|up\{job=\"livestats-", expr), expr
    # every series is filtered by the instance variable, and by phase and model where it has them
    for name, labels in re.findall(r"\b(livestats_\w+|up)\b(\{[^}]*\})?", " ".join(exprs)):
        assert 'instance=~"$instance"' in labels, name
    labelled = {"livestats_calls_total", "livestats_call_duration_seconds_bucket", "livestats_call_retries_total"}
    labelled |= {"livestats_tokens_predicted_total", "livestats_tokens_total"}
    for name, labels in re.findall(r"\b(livestats_\w+)\{([^}]*)\}", " ".join(exprs)):
        if name in labelled:
            assert 'phase=~"$phase"' in labels and 'model=~"$model"' in labels, name
    # and every metric family the issue lists is on the dashboard
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in exposed if n.startswith("livestats_")}
    shown = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in used}
    internal = {"livestats_gateway_invalid_entries", "livestats_gateway_reads"}  # debugging aids only
    assert families - shown - internal == set()
