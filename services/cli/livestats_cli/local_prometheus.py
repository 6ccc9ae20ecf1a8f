"""`livestats up --prometheus` (`make prometheus`): a Prometheus for this machine's stack.

Runs the `prometheus` binary from PATH (Debian's package; `.ci/run` installs it) against the
worker and gateway `up` started, with the same job names and alert rules as the compose
deployment (deploy/prometheus), so its alerts page and PromQL answer what production's would.
Its data lives in the data dir next to the embedded server's; its port is 9090 when free.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from livestats_shared.errors import LivestatsError

from . import children
from .embedded import free_port, port_in_use

PREFERRED_PORT = 9090
SCRAPE_INTERVAL = "5s"  # local use: see a run's effect in seconds, not the 15 s of compose
# The alert rules of the source tree (an editable install, as `make` makes); none otherwise.
ALERT_RULES = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "alerts.yml"


class PrometheusNotInstalled(LivestatsError):
    """No `prometheus` binary on PATH."""


def config(gateway: str, worker: str, rules: Path | None) -> dict[str, object]:
    """The scrape config: job names as in deploy/prometheus/prometheus.yml (alerts and the
    dashboard select on them); targets are host:port."""
    scrape = {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL}
    jobs = [
        {"job_name": "livestats-gateway", "static_configs": [{"targets": [gateway]}]},
        {"job_name": "livestats-worker", "static_configs": [{"targets": [worker]}]},
    ]
    return {"global": scrape, "rule_files": [str(rules)] if rules else [], "scrape_configs": jobs}


def start(data_dir: Path, gateway: str, worker: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start it (call from the thread that stops it: see children.spawn); returns the process
    and its URL. Readiness is the caller's to wait for (GET /-/ready)."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusNotInstalled("no `prometheus` on PATH (Debian: apt-get install prometheus)")
    home = data_dir / "prometheus"
    home.mkdir(parents=True, exist_ok=True)
    rules = ALERT_RULES if ALERT_RULES.is_file() else None
    # JSON is YAML: no YAML writer needed at run time.
    (home / "prometheus.yml").write_text(json.dumps(config(gateway, worker, rules), indent=2))
    port = PREFERRED_PORT if not port_in_use(PREFERRED_PORT) else free_port()
    argv = [
        binary,
        f"--config.file={home / 'prometheus.yml'}",
        f"--storage.tsdb.path={home / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return children.spawn(argv, data_dir / "prometheus.log"), f"http://127.0.0.1:{port}"
