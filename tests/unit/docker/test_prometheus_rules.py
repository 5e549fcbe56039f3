"""promtool on docker/prometheus: the config and rules are valid, and the rules' unit tests pass.

promtool comes with Debian's prometheus package (scripts/prometheus installs it).
The rules' own tests are docker/prometheus/alerts.test.yml; the live check against
a running cluster is tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

PROMETHEUS_DIR = ROOT / "docker" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    subprocess.run([str(ROOT / "scripts" / "prometheus"), "install"], check=True)
    found = shutil.which("promtool")
    assert found is not None
    return found


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, check=False
    )


def test_config_is_valid_and_loads_the_rules(promtool: str) -> None:
    done = _promtool(promtool, "check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_rules_are_valid(promtool: str) -> None:
    done = _promtool(promtool, "check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests_pass(promtool: str) -> None:
    done = _promtool(promtool, "test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rule_unit_tests_fail_when_a_rule_is_broken(promtool: str, tmp_path: Path) -> None:
    """The unit tests would notice a threshold nobody meant to change."""
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text().replace("> 0.05\n", "> 0.5\n", 1)
    (tmp_path / "alerts.yml").write_text(rules)
    shutil.copy(PROMETHEUS_DIR / "alerts.test.yml", tmp_path)
    done = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "StreamScoreLatencyP99High" in done.stdout + done.stderr


def _alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_has_a_severity_a_summary_a_runbook_and_a_unit_test() -> None:
    tested = (PROMETHEUS_DIR / "alerts.test.yml").read_text()
    docs = (ROOT / "docs" / "alerts.md").read_text()
    for rule in _alerts():
        name = str(rule["alert"])
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in {"page", "ticket"}, name
        assert isinstance(annotations, dict), name
        assert annotations["summary"] and annotations["runbook"], name
        assert f"docs/alerts.md#{name.lower()}" in annotations["runbook"], name
        assert f"## {name}" in docs, name
        assert f"alertname: {name}\n" in tested, name
