"""The container stack in ``docker/``, checked by parsing: no Docker engine needed.

Compose, Prometheus, Grafana provisioning, the dashboard and the Dockerfile are
read and cross-checked against each other, against the settings the service
accepts and against the metric names it exports.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.cli import build_parser
from schemas.settings import ENV_PREFIX, Settings, TopicNames, load_settings

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "docker"
GRAFANA = DOCKER / "grafana"

SERVICES = {
    "kafka",
    "topics",
    "streamscore-0",
    "streamscore-1",
    "producer",
    "prometheus",
    "grafana",
}
FLOW_SERVICES = ("streamscore-0", "streamscore-1")
STREAMSCORE_IMAGE_SERVICES = ("topics", *FLOW_SERVICES, "producer")
CLUSTER = "streamscore-0:2101;streamscore-1:2101"
DATA_DIR = "/var/lib/streamscore"
STATE_DIR = f"{DATA_DIR}/state"
RECOVERY_DIR = f"{DATA_DIR}/recovery"

COUNTERS = {
    "streamscore_events_in_total",
    "streamscore_scored_total",
    "streamscore_dead_letters_total",
    "streamscore_chargebacks_total",
    "streamscore_late_total",
    "streamscore_fallback_total",
    "streamscore_window_aggregates_total",
    "streamscore_model_load_failures_total",
}
HISTOGRAMS = {
    "streamscore_e2e_latency_seconds",
    "streamscore_inference_latency_seconds",
    "streamscore_score_batch_size",
}
GAUGES = {
    "streamscore_consumer_lag",
    "streamscore_state_keys",
    "streamscore_model_info",
    "streamscore_breaker_open",
    "streamscore_drift_psi",
    "streamscore_drift_ks",
    "streamscore_drift_detected",
    "streamscore_drift_warming_up",
    "streamscore_decline_precision",
    "streamscore_decline_recall",
    "streamscore_gc_tenured_objects",
}
METRICS = COUNTERS | HISTOGRAMS | GAUGES
# Digits too: streamscore_e2e_... has one.
METRIC_RE = re.compile(r"streamscore_[a-z0-9_]+")
HISTOGRAM_SUFFIX_RE = re.compile(r"_(bucket|sum|count)$")


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(DOCKER / "compose.yaml")


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    provisioned = _yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")
    (only,) = provisioned["datasources"]
    assert isinstance(only, dict)
    return only


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads((GRAFANA / "dashboards" / "streamscore.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression, histogram series folded onto their family."""
    names: set[str] = set()
    for name in METRIC_RE.findall(expr):
        family = HISTOGRAM_SUFFIX_RE.sub("", name)
        names.add(family if family in HISTOGRAMS else name)
    return names


def _port_mappings(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) of every published port, host address dropped."""
    mappings: set[tuple[int, int]] = set()
    for entry in service.get("ports", []):
        *_, host, container = str(entry).split(":")
        mappings.add((int(host), int(container)))
    return mappings


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment is written as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def _setting_path(env_name: str) -> list[str]:
    return env_name.removeprefix(ENV_PREFIX).lower().split("__")


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DOCKER / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def _args(instruction: str) -> list[str]:
    return [args for keyword, args in _dockerfile() if keyword == instruction]


def _packages() -> list[str]:
    """Top-level packages the project installs (pyproject's packages.find include)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include: list[str] = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return [pattern.rstrip("*") for pattern in include]


# compose.yaml


def test_compose_has_every_service(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned(services: dict[str, dict[str, Any]], name: str) -> None:
    image = services[name]["image"]
    repository, sep, tag = image.rpartition(":")
    assert sep and repository and "/" not in tag, f"{name}: {image} has no tag"
    assert tag != "latest", f"{name}: {image} is not pinned"


@pytest.mark.parametrize("name", STREAMSCORE_IMAGE_SERVICES)
def test_streamscore_services_build_from_the_repo_root(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    build = services[name]["build"]
    assert (DOCKER / build["context"]).resolve() == ROOT
    assert build["dockerfile"] == "docker/Dockerfile"
    assert (ROOT / build["dockerfile"]).is_file()
    assert services[name]["image"] == services["streamscore-0"]["image"]


@pytest.mark.parametrize(
    ("name", "dependency", "condition"),
    [
        ("topics", "kafka", "service_healthy"),
        ("streamscore-0", "topics", "service_completed_successfully"),
        ("streamscore-1", "topics", "service_completed_successfully"),
        ("producer", "topics", "service_completed_successfully"),
        ("producer", "streamscore-0", "service_healthy"),
        ("producer", "streamscore-1", "service_healthy"),
    ],
)
def test_start_order(
    services: dict[str, dict[str, Any]], name: str, dependency: str, condition: str
) -> None:
    assert services[name]["depends_on"][dependency]["condition"] == condition


@pytest.mark.parametrize(
    ("name", "mapping"),
    [
        ("kafka", (9094, 9094)),
        ("streamscore-0", (9100, 9100)),
        ("streamscore-1", (9101, 9101)),
        ("prometheus", (9090, 9090)),
        ("grafana", (3000, 3000)),
    ],
)
def test_published_ports(
    services: dict[str, dict[str, Any]], name: str, mapping: tuple[int, int]
) -> None:
    assert mapping in _port_mappings(services[name])


def test_kafka_is_a_single_kraft_node_with_two_client_listeners(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    env = _env(kafka)
    assert kafka["image"] == "apache/kafka:3.9.1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    advertised = set(env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert {"PLAINTEXT://kafka:9092", "HOST://localhost:9094"} <= advertised
    listeners = set(env["KAFKA_LISTENERS"].split(","))
    assert {"PLAINTEXT://:9092", "HOST://:9094"} <= listeners
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert {name.split("://")[0] for name in listeners} <= set(protocols)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in kafka["healthcheck"]["test"]


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("topics", ["topics"]),
        ("streamscore-0", ["run", "-i", "0", "-a", CLUSTER]),
        ("streamscore-1", ["run", "-i", "1", "-a", CLUSTER]),
        ("producer", ["produce", "--count", "100000", "--rate", "2000", "--invalid-share", "0.01"]),
    ],
)
def test_commands_parse_with_the_cli(
    services: dict[str, dict[str, Any]], name: str, command: list[str]
) -> None:
    assert services[name]["command"] == command
    assert build_parser().parse_args(command).command == command[0]


def test_producer_runs_only_in_the_demo_profile(services: dict[str, dict[str, Any]]) -> None:
    assert services["producer"]["profiles"] == ["demo"]
    assert all("profiles" not in s for n, s in services.items() if n != "producer")


def _streamscore_env_names() -> list[str]:
    compose = _yaml(DOCKER / "compose.yaml")
    names = {
        key
        for service in compose["services"].values()
        for key in _env(service)
        if key.startswith(ENV_PREFIX)
    }
    names |= {
        part.split("=")[0]
        for args in _args("ENV")
        for part in args.split()
        if part.startswith(ENV_PREFIX)
    }
    return sorted(names)


@pytest.mark.parametrize("env_name", _streamscore_env_names())
def test_env_names_are_settings(env_name: str) -> None:
    field, *nested = _setting_path(env_name)
    assert field in Settings.model_fields, f"{env_name}: no setting {field}"
    if nested:
        assert field == "topics"
        assert nested == [nested[0]]
        assert nested[0] in TopicNames.model_fields


@pytest.mark.parametrize("name", STREAMSCORE_IMAGE_SERVICES)
def test_env_values_are_valid_settings(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(services[name])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.bootstrap_servers == "kafka:9092"
    if name in FLOW_SERVICES:
        assert settings.metrics_host == "0.0.0.0"
        assert str(settings.state_dir) == STATE_DIR
        assert str(settings.recovery_dir) == RECOVERY_DIR


def test_state_and_recovery_dirs_are_on_one_named_volume(compose: dict[str, Any]) -> None:
    """Both must survive a container restart, or a resume finds its state missing; the
    processes share it (process 0 creates the recovery partitions, each its own state)."""
    mounts = {compose["services"][name]["volumes"][0] for name in FLOW_SERVICES}
    (mount,) = mounts
    volume, _, target = mount.partition(":")
    assert target == DATA_DIR
    assert STATE_DIR.startswith(target + "/") and RECOVERY_DIR.startswith(target + "/")
    assert volume in compose["volumes"]


@pytest.mark.parametrize(("index", "name"), list(enumerate(FLOW_SERVICES)))
def test_each_process_is_checked_for_readiness_on_its_own_port(
    services: dict[str, dict[str, Any]], index: int, name: str
) -> None:
    service = services[name]
    assert service["hostname"] == name
    check = " ".join(service["healthcheck"]["test"])
    assert f"http://127.0.0.1:{9100 + index}/readyz" in check
    assert "curl" not in check


# prometheus.yml


def _prometheus_config() -> dict[str, Any]:
    return _yaml(DOCKER / "prometheus" / "prometheus.yml")


def test_prometheus_scrapes_every_process_every_5s(services: dict[str, dict[str, Any]]) -> None:
    config = _prometheus_config()
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "streamscore"
    assert job["scrape_interval"] == "5s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    assert targets == [f"{name}:{9100 + i}" for i, name in enumerate(FLOW_SERVICES)]
    for target in targets:
        host, port = target.split(":")
        assert (int(port), int(port)) in _port_mappings(services[host])
    mount = "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    assert mount in services["prometheus"]["volumes"]


def test_prometheus_loads_the_alerting_rules(services: dict[str, dict[str, Any]]) -> None:
    assert _prometheus_config()["rule_files"] == ["alerts.yml"]
    mount = "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro"
    assert mount in services["prometheus"]["volumes"]


# Grafana


def test_grafana_allows_anonymous_viewers(services: dict[str, dict[str, Any]]) -> None:
    env = _env(services["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_datasource_is_the_compose_prometheus(datasource: dict[str, Any]) -> None:
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["uid"]


def test_dashboard_provider_loads_the_mounted_folder(services: dict[str, dict[str, Any]]) -> None:
    provisioned = _yaml(GRAFANA / "provisioning" / "dashboards" / "streamscore.yaml")
    (provider,) = provisioned["providers"]
    assert provider["type"] == "file"
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "streamscore"
    assert dashboard["title"] == "StreamScore"


def test_every_panel_uses_the_provisioned_datasource(
    dashboard: dict[str, Any], datasource: dict[str, Any]
) -> None:
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]


def test_panels_have_unique_ids_and_fit_the_grid(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["type"] in {"timeseries", "stat", "table"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_dashboard_queries_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    for expr in _exprs(dashboard):
        assert _metric_names(expr) <= METRICS, expr


def test_dashboard_shows_every_metric(dashboard: dict[str, Any]) -> None:
    shown = set[str]().union(*(_metric_names(e) for e in _exprs(dashboard)))
    assert shown == METRICS


def test_histograms_are_read_through_their_buckets(dashboard: dict[str, Any]) -> None:
    for expr in _exprs(dashboard):
        assert not set(METRIC_RE.findall(expr)) & HISTOGRAMS, expr


def test_e2e_latency_panel_has_quantiles_and_the_50ms_line(dashboard: dict[str, Any]) -> None:
    (panel,) = [
        p
        for p in dashboard["panels"]
        if any("streamscore_e2e_latency_seconds_bucket" in t["expr"] for t in p["targets"])
    ]
    quantile = re.compile(r"histogram_quantile\(([0-9.]+),")
    quantiles = {quantile.findall(t["expr"])[0] for t in panel["targets"]}
    assert quantiles == {"0.5", "0.95", "0.99"}
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    assert 0.05 in [step["value"] for step in defaults["thresholds"]["steps"]]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line"


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) (rate(streamscore_e2e_latency_seconds_bucket[1m])))"
        " / sum(rate(streamscore_scored_total[1m]))"
    )
    assert _metric_names(expr) == {"streamscore_e2e_latency_seconds", "streamscore_scored_total"}
    assert _metric_names("rate(streamscore_nope_total[1m])") == {"streamscore_nope_total"}


# Dockerfile


def test_base_images_are_pinned() -> None:
    stages: set[str] = set()
    for args in _args("FROM"):
        image, *alias = args.split()
        if image not in stages:
            assert ":" in image and not image.endswith(":latest"), image
            assert image.startswith("python:3.11-slim"), image
        if alias:
            assert alias[0].upper() == "AS"
            stages.add(alias[1])


def test_entrypoint_and_default_command() -> None:
    assert [json.loads(a) for a in _args("ENTRYPOINT")] == [["streamscore"]]
    assert [json.loads(a) for a in _args("CMD")] == [["run"]]


def test_runs_as_a_non_root_user() -> None:
    *_, user = _args("USER")
    assert user.split(":")[0] not in {"root", "0"}


def test_exposes_metrics_and_checks_liveness_without_curl() -> None:
    assert "9100" in " ".join(_args("EXPOSE")).split()
    (check,) = _args("HEALTHCHECK")
    assert "/healthz" in check
    assert "9100" in check
    assert "curl" not in check
    env = " ".join(_args("ENV")).split()
    assert "STREAMSCORE_METRICS_HOST=0.0.0.0" in env


def test_image_installs_every_package_with_its_data() -> None:
    copied = {
        source.rstrip("/")
        for args in _args("COPY")
        if not args.startswith("--")
        for source in args.split()[:-1]
    }
    assert {"pyproject.toml", "README.md", *_packages()} <= copied
    assert any("pip install ." in args for args in _args("RUN"))


def test_image_ships_the_card_kernels_compiled() -> None:
    # Built into numba's cache at image build, from the installed package, in a directory
    # the service's user owns (so a different CPU can recompile into it).
    assert any("compile_all()" in args and args.startswith("cd / ") for args in _args("RUN"))
    assert any(
        a.startswith("--from=build --chown=10001:10001 /opt/numba-cache") for a in _args("COPY")
    )
    assert "NUMBA_CACHE_DIR=/opt/numba-cache" in " ".join(_args("ENV")).split()


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore patterns exclude ``path``: the last matching pattern wins and a
    pattern matching a parent directory matches everything below it."""

    def regex(pattern: str) -> re.Pattern[str]:
        parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
        tokens = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(tokens.get(p, re.escape(p)) for p in parts))

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        compiled = regex(pattern.removeprefix("!"))
        if any(compiled.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_build_context_keeps_sources_and_model_but_not_local_files() -> None:
    text = (DOCKER / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    patterns = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    kept = [
        "pyproject.toml",
        "README.md",
        "models/artifacts/fraud-gbt-1/model.onnx",
        "models/artifacts/fraud-gbt-1/manifest.json",
        "schemas/settings.py",
        *(f"{package}/__init__.py" for package in _packages()),
    ]
    dropped = [".venv/bin/python", ".local/state/x", ".git/HEAD", "tests/__init__.py"]
    dropped += ["flows/__pycache__/cli.cpython-311.pyc"]
    assert [p for p in kept if _docker_ignored(p, patterns)] == []
    assert [p for p in dropped if not _docker_ignored(p, patterns)] == []
    assert (ROOT / "models" / "artifacts" / "fraud-gbt-1" / "model.onnx").is_file()


def test_the_metric_lists_are_what_the_service_registers() -> None:
    """The dashboard's metrics and the service's cannot drift apart."""
    from prometheus_client import CollectorRegistry

    from flows.main import process_metrics
    from operators.metrics import ServiceMetrics

    registry = CollectorRegistry()
    ServiceMetrics.create(registry)
    process_metrics(registry)  # also prometheus-client's process_* and python_gc_*
    registered = set()
    for family in registry.collect():
        kind = family.type
        if family.name.startswith("streamscore_"):
            registered.add(f"{family.name}_total" if kind == "counter" else family.name)
    assert registered == METRICS
