"""The deployment files: Prometheus config and alert rules (promtool), compose.yaml (the Compose
spec's JSON schema, vendored; there is no Docker engine to run it here), Grafana provisioning,
and a dashboard whose every query names metrics the services really expose."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
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


def _monitored_by_prometheus() -> set[str]:
    """The compose services Prometheus scrapes: the names its service discovery resolves and the
    hosts of its static targets."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    names: set[str] = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            names.update(sd["names"])
        for static in job.get("static_configs", []):
            names.update(target.rsplit(":", 1)[0] for target in static["targets"])
    return names


def _waits_on(services: dict, name: str) -> set[str]:
    """Every service `name` waits for, directly or through another."""
    seen: set[str] = set()
    todo = list(services[name].get("depends_on", {}))
    while todo:
        dependency = todo.pop()
        if dependency not in seen:
            seen.add(dependency)
            todo.extend(services[dependency].get("depends_on", {}))
    return seen


def test_compose_lets_the_monitoring_start_when_what_it_monitors_does_not():
    services = _compose()["services"]
    monitored = _monitored_by_prometheus()
    assert {"worker", "gateway", "cluster-worker", "cluster-gateway-1", "cluster-gateway-2"} <= monitored
    # Grafana shows what Prometheus scraped: neither may wait, even indirectly, for what they watch
    for watcher in ("prometheus", "grafana"):
        assert _waits_on(services, watcher).isdisjoint(monitored), watcher
    assert "depends_on" not in services["prometheus"]
    # the rest start behind the health of what they need
    for name in ("worker", "gateway"):
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}


def _one_shots(services: dict) -> set[str]:
    """Services that run once and exit (never restarted), which others wait for to complete."""
    awaited = {
        dependency
        for service in services.values()
        for dependency, rule in service.get("depends_on", {}).items()
        if rule["condition"] == "service_completed_successfully"
    }
    return {name for name in awaited if services[name].get("restart") == "no"}


def test_every_compose_service_has_a_health_check_that_means_it_can_work():
    services = _compose()["services"]
    assert _one_shots(services) == {"cluster-init"}  # a one-shot's health is its exit status
    for name, service in services.items():
        if name in _one_shots(services):
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    # the worker's asks the worker itself (heartbeat and its own Redis connection), not "does
    # /metrics answer"; the gateway's is its readiness (Redis and background loops)
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "livestats-worker", "--check"]
    assert "LIVESTATS_METRICS_PORT" in services["worker"]["environment"]
    # every gateway process is asked, each on its private port (9200 + i)
    for name in ("gateway", "cluster-gateway-1", "cluster-gateway-2"):
        environment = services[name]["environment"]
        base, count = (
            int(environment["LIVESTATS_GATEWAY_METRICS_PORT_BASE"]),
            int(environment["LIVESTATS_GATEWAY_PROCESSES"]),
        )
        check = " ".join(services[name]["healthcheck"]["test"])
        assert "/readyz" in check and str(tuple(range(base, base + count))) in check, (name, check)


def test_prometheus_scrapes_every_gateway_process_on_its_private_port():
    """Port 8000 reaches whichever process the kernel picks: a scrape there would mix processes.
    Prometheus lists each process's private port instead, for every gateway service."""
    services = _compose()["services"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "livestats-gateway"]
    scraped = {(name, sd["port"]) for sd in job["dns_sd_configs"] for name in sd["names"]}
    gateways = [name for name, service in services.items() if "gateway" in service.get("command", [])]
    assert sorted(gateways) == ["cluster-gateway-1", "cluster-gateway-2", "gateway"]
    expected = set()
    for name in gateways:
        environment = services[name]["environment"]
        base, count = (
            int(environment["LIVESTATS_GATEWAY_METRICS_PORT_BASE"]),
            int(environment["LIVESTATS_GATEWAY_PROCESSES"]),
        )
        expected |= {(name, base + i) for i in range(count)}
    assert scraped == expected


def test_the_livestats_image_is_built_once_and_used_by_every_livestats_service():
    services = _compose()["services"]
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["worker"], builders
    image = services["worker"]["image"]
    assert image.startswith("livestats:")
    users = {name for name, service in services.items() if service.get("image") == image} - {"worker"}
    assert users == {"gateway", "cluster-worker", "cluster-gateway-1", "cluster-gateway-2"}
    for name in users:
        assert services[name]["pull_policy"] == "never", name  # a local build, never a registry's
    assert services["worker"]["build"]["dockerfile"] == "deploy/Dockerfile"


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_a_real_fpf_goes_into_the_image_through_build_arguments():
    dockerfile = _dockerfile()
    args = set(re.findall(r"^ARG (\w+)", dockerfile, re.MULTILINE))
    assert {"FPF_REQUIREMENT", "FPF_COMMAND"} <= args
    assert 'ENV LIVESTATS_FPF_COMMAND="${FPF_COMMAND}"' in dockerfile
    assert 'pip install --no-cache-dir "$FPF_REQUIREMENT"' in dockerfile
    # compose passes them through from the operator's environment
    build_args = _compose()["services"]["worker"]["build"]["args"]
    assert set(build_args) == {"FPF_REQUIREMENT", "FPF_COMMAND"}
    # the installed FPF runs as the worker's user, after the locked install
    assert dockerfile.index("$FPF_REQUIREMENT") > dockerfile.index("--no-index")
    assert dockerfile.index("$FPF_REQUIREMENT") < dockerfile.index("USER livestats")


def test_the_image_installs_the_hash_checked_lock_and_the_context_leaves_out_the_bulk():
    dockerfile = _dockerfile()
    assert "--require-hashes" in dockerfile and "-r requirements.lock" in dockerfile
    assert "--no-index" in dockerfile  # nothing outside the lock reaches the final image
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    ignored = [line for line in ignored if line and not line.startswith("#")]
    for bulk in (".venv", ".run", ".git", "tests/browser/screenshots", "bench/results", ".mypy_cache", ".pytest_cache"):
        assert bulk in ignored, bulk
    # and nothing the Dockerfile copies from the context is excluded
    copied = [
        src for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.MULTILINE) for src in line.split()[:-1]
    ]
    assert copied, dockerfile
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not any(source == pattern or source.startswith(pattern + "/") for pattern in ignored), source


def test_compose_needs_its_secrets_and_keeps_its_data():
    compose = _compose()
    services = compose["services"]
    # `docker compose up` runs these; the rest only with `--profile cluster`
    assert {n for n, s in services.items() if "profiles" not in s} == {
        "redis",
        "worker",
        "gateway",
        "prometheus",
        "grafana",
    }
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
        services["cluster-worker"]["environment"]["LIVESTATS_REDIS_URL"],
        services["cluster-worker"]["environment"]["LIVESTATS_QUEUE_REDIS_URL"],
        services["cluster-gateway-1"]["environment"]["LIVESTATS_GATEWAY_REDIS_URL"],
    ):
        assert _SECRET.search(url), url
    for name in ("redis", "queue-redis", *(f"valkey-c{i}" for i in range(1, 7))):
        command = " ".join(services[name]["command"])
        assert "--appendonly yes" in command and "--requirepass" in command, name
        (volume,) = services[name]["volumes"]
        assert volume.endswith(":/data") and volume.split(":")[0] in compose["volumes"], name
    # what the containers mount must exist in the repository
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


def test_the_cluster_profile_is_three_primaries_three_replicas_and_two_gateways_behind_a_proxy():
    services = _compose()["services"]
    cluster = {name for name, service in services.items() if service.get("profiles") == ["cluster"]}
    nodes = {f"valkey-c{i}" for i in range(1, 7)}
    assert cluster == nodes | {
        "cluster-init",
        "queue-redis",
        "cluster-worker",
        "cluster-gateway-1",
        "cluster-gateway-2",
        "proxy",
    }
    for node in nodes:
        command = " ".join(services[node]["command"])
        assert "--cluster-enabled yes" in command and "--masterauth" in command, node
        assert services[node]["hostname"] == node  # the name clients are told (announce-hostname)
    init = services["cluster-init"]
    assert set(init["depends_on"]) == nodes
    script = (ROOT / "deploy" / "cluster" / "create-cluster.sh").read_text()
    assert "--cluster-replicas 1" in script and all(node in script for node in nodes)
    # telemetry on the cluster, the queue on its own server
    for name, variable in (
        ("cluster-worker", "LIVESTATS_REDIS_URL"),
        ("cluster-gateway-1", "LIVESTATS_GATEWAY_REDIS_URL"),
    ):
        environment = services[name]["environment"]
        assert environment[variable].startswith("redis+cluster://"), name
        assert "@queue-redis:" in environment["LIVESTATS_QUEUE_REDIS_URL"], name
        assert services[name]["depends_on"]["cluster-init"] == {"condition": "service_completed_successfully"}
    # the proxy fronts both gateways, which publish no port of their own
    proxy = services["proxy"]
    assert proxy["ports"] == ["127.0.0.1:8001:8000"]
    assert "ports" not in services["cluster-gateway-1"] and "ports" not in services["cluster-gateway-2"]
    assert "./deploy/haproxy:/usr/local/etc/haproxy:ro" in proxy["volumes"]
    config = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s*server \S+ (\S+):8000\b", config, re.MULTILINE)
    assert sorted(servers) == ["cluster-gateway-1", "cluster-gateway-2"]
    assert set(proxy["depends_on"]) == {"cluster-gateway-1", "cluster-gateway-2"}


def test_the_proxy_config_passes_haproxy_check():
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy not installed (Debian package `haproxy`; .ci/run installs it)")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The gateways' names resolve only inside compose; every other warning is a defect.
    warnings = [line for line in result.stderr.splitlines() if "[WARNING]" in line]
    assert all("could not resolve address 'cluster-gateway-" in w for w in warnings), warnings


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
    labelled |= {"livestats_tokens_predicted_total", "livestats_tokens_total", "livestats_cost_usd_total"}
    for name, labels in re.findall(r"\b(livestats_\w+)\{([^}]*)\}", " ".join(exprs)):
        if name in labelled:
            assert 'phase=~"$phase"' in labels and 'model=~"$model"' in labels, name
    # and every metric family the issue lists is on the dashboard
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in exposed if n.startswith("livestats_")}
    shown = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in used}
    internal = {  # debugging aids only
        "livestats_gateway_invalid_entries",
        "livestats_gateway_reads",
        "livestats_gateway_replays_waiting",
    }
    assert families - shown - internal == set()


def test_every_worker_and_gateway_service_gets_the_same_spec_env_allowlist():
    """A spec `env` key the gateway accepts must be one the worker allows too (docs/processes.md):
    both read LIVESTATS_SPEC_ENV_ALLOW from the operator's environment, in every profile."""
    services = _compose()["services"]
    runs_code = {name: svc for name, svc in services.items() if str(svc.get("command", "")).find("livestats") >= 0}
    assert any("worker" in n for n in runs_code) and any("gateway" in n for n in runs_code), sorted(runs_code)
    for name, svc in runs_code.items():
        if "worker" in name or "gateway" in name:
            env = svc.get("environment", {})
            assert env.get("LIVESTATS_SPEC_ENV_ALLOW") == "${LIVESTATS_SPEC_ENV_ALLOW:-}", name
