"""A real Prometheus with the project's config and rules, scraping a 2-process cluster under load.

Prometheus (Debian's package, scripts/prometheus) runs docker/prometheus/prometheus.yml
with only its targets changed to the two processes' metrics ports, and alerts.yml
beside it. While a producer replays simulated traffic (invalid records and
chargebacks mixed in): every scrape target is up, every PromQL query of every
Grafana panel returns data through the HTTP API, every alerting rule evaluates
without error and none fires; then one process is killed and StreamScoreProcessDown
goes pending for its target.
"""

from __future__ import annotations

import copy
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from itertools import takewhile
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.tooling import ReplayConfig, publish, replay_records
from models.simulator import SimConfig
from schemas.settings import Settings
from tests.conftest import ROOT
from tests.integration.crash_helpers import flow_env
from tests.integration.kafka_helpers import free_port

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "streamscore.json"
# Grafana's variables, as it fills them for a 5 s scrape interval and a 15 min range.
GRAFANA_VARIABLES = {"$__rate_interval": "20s", "$__range": "15m"}
RATE_PER_S = 300


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The prometheus server, installed by scripts/prometheus when missing."""
    subprocess.run([str(ROOT / "scripts" / "prometheus"), "install"], check=True)
    found = shutil.which("prometheus")
    assert found is not None
    return found


def adapted_config(targets: list[str]) -> dict[str, Any]:
    """The project's prometheus.yml with its static targets replaced, nothing else changed."""
    original: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config: dict[str, Any] = copy.deepcopy(original)
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    assert len(static["targets"]) == len(targets), "one target per process"
    static["targets"] = targets
    static_back = copy.deepcopy(config)
    static_back["scrape_configs"][0]["static_configs"][0]["targets"] = original["scrape_configs"][
        0
    ]["static_configs"][0]["targets"]
    assert static_back == original
    return config


class PrometheusApi:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.base}/{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[Any]:
        data = self.get("query", query=expr)
        result: list[Any] = data["result"]
        return result


def _wait_for(what: str, check: Callable[[], str | None], timeout_s: float = 90) -> None:
    """Poll ``check`` (None: done, else what is still missing) until done or the timeout."""
    deadline = time.monotonic() + timeout_s
    missing: str | None = "not checked"
    while time.monotonic() < deadline:
        try:
            missing = check()
        except OSError as exc:
            missing = f"{exc}"
        if missing is None:
            return
        time.sleep(1)
    pytest.fail(f"{what}: {missing}")


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, expr
            queries.append((panel["title"], expr))
    return queries


@pytest.fixture
def load(settings: Settings) -> Iterator[None]:
    """Simulated traffic at RATE_PER_S until the test ends: 2 % invalid, chargebacks too."""
    stop = threading.Event()
    config = ReplayConfig(
        count=10_000_000,
        sim=SimConfig(seed=5, cards=500),
        invalid_share=0.02,
        chargebacks=True,
    )
    records = takewhile(lambda _: not stop.is_set(), replay_records(config))
    thread = threading.Thread(
        target=publish, args=(settings.bootstrap_servers, settings.topics, records, RATE_PER_S)
    )
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


def test_prometheus_scrapes_a_cluster_every_panel_has_data_and_the_rules_evaluate(
    settings: Settings, tmp_path: Path, prometheus_binary: str, load: None
) -> None:
    metrics = [free_port(), free_port()]
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    flows = []
    for i, port in enumerate(metrics):
        env = flow_env(settings)
        # Each process serves on the base port + its id: give each its own base.
        env.update(STREAMSCORE_METRICS_PORT=str(port - i), STREAMSCORE_DRIFT_EVERY_EVENTS="200")
        with (tmp_path / f"process-{i}.log").open("wb") as log:
            flows.append(
                subprocess.Popen(
                    [sys.executable, "-m", "flows.cli", "run", "-i", str(i), "-a", addresses],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    targets = [f"127.0.0.1:{p}" for p in metrics]
    config_dir = tmp_path / "prometheus"
    config_dir.mkdir()
    (config_dir / "prometheus.yml").write_text(yaml.safe_dump(adapted_config(targets)))
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", config_dir / "alerts.yml")
    web = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        prometheus = subprocess.Popen(
            [
                prometheus_binary,
                f"--config.file={config_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    api = PrometheusApi(web)
    try:
        _run_checks(api, targets, flows, tmp_path)
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        for proc in flows:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in flows:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _run_checks(
    api: PrometheusApi, targets: list[str], flows: list[subprocess.Popen[bytes]], logs: Path
) -> None:
    def targets_up() -> str | None:
        for i, proc in enumerate(flows):
            if proc.poll() is not None:
                tail = (logs / f"process-{i}.log").read_text()[-2000:]
                pytest.fail(f"process {i} exited with {proc.returncode}: {tail}")
        active = api.get("targets")["activeTargets"]
        health = {t["scrapeUrl"]: t["health"] for t in active}
        expected = {f"http://{t}/metrics" for t in targets}
        return None if health == dict.fromkeys(expected, "up") else f"targets: {health}"

    _wait_for("every scrape target up", targets_up)

    def both_consume() -> str | None:
        seen = api.query("sum by (instance) (streamscore_events_in_total)")
        instances = {r["metric"]["instance"] for r in seen if float(r["value"][1]) > 0}
        return None if instances == set(targets) else f"consuming: {sorted(instances)}"

    _wait_for("both processes consume", both_consume)
    queries = _panel_queries()

    def every_panel_has_data() -> str | None:
        empty = [f"{title}: {expr}" for title, expr in queries if not api.query(expr)]
        return None if not empty else f"{len(empty)} without data, e.g. {empty[0]}"

    _wait_for("every panel's query returns data", every_panel_has_data)

    rules = api.get("rules", type="alert")["groups"]
    (group,) = rules
    loaded = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    expected = [r["alert"] for g in loaded["groups"] for r in g["rules"]]
    assert [r["name"] for r in group["rules"]] == expected
    for rule in group["rules"]:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        assert rule["state"] != "firing", (rule["name"], rule["alerts"])

    # Process 1 dies: its target goes down and the alert for it is pending (`for: 1m`).
    # (Process 0 may follow it: a bytewax cluster stops when one of its processes does.)
    flows[1].kill()

    def down_alert_pending() -> str | None:
        alerts = api.get("alerts")["alerts"]
        down = [a for a in alerts if a["labels"]["alertname"] == "StreamScoreProcessDown"]
        instances = {a["labels"]["instance"] for a in down if a["state"] == "pending"}
        return None if targets[1] in instances else f"ProcessDown alerts: {down}"

    _wait_for("StreamScoreProcessDown pending for process 1", down_alert_pending, timeout_s=60)
