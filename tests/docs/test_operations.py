"""The settings table of docs/operations.md is schemas/settings.py; metric names in the docs exist.

Every setting has one row (env var, ``run`` flag, default, meaning) whose
default is the code's; every metric the service registers is in the metrics
table with its labels; every ``streamscore_*`` name any doc page mentions is
one the registry serves.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from flows import cli
from flows.main import process_metrics
from operators.metrics import ServiceMetrics
from schemas.settings import ENV_PREFIX, Settings, TopicNames

REPO = Path(__file__).resolve().parents[2]
OPERATIONS = REPO / "docs" / "operations.md"
# Every page that may name metrics: the README, docs/ and the dashboard's README.
PAGES = sorted([REPO / "README.md", REPO / "docker" / "README.md", *(REPO / "docs").glob("*.md")])

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Labels Prometheus adds to every series it scrapes; a PromQL matcher may use them.
_TARGET_LABELS = frozenset({"job", "instance"})
_METRIC = re.compile(r"\bstreamscore_[a-z0-9_]+(?:\{[^}\n]*\})?")


def _section(text: str, heading: str) -> str:
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def _rows(section: str, first: str) -> list[list[str]]:
    """Cells of the table rows whose first cell starts with ``first``."""
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(first):
            rows.append(cells)
    return rows


def settings_defaults() -> dict[str, Any]:
    """Each setting's env var and its default, nested topic names included."""
    out: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        if name == "topics":
            for topic, topic_info in TopicNames.model_fields.items():
                out[f"{ENV_PREFIX}TOPICS__{topic.upper()}"] = topic_info.default
        else:
            out[ENV_PREFIX + name.upper()] = info.default
    return out


def _same_default(cell: str, default: Any) -> bool:
    value = cell.split(" (")[0].strip("`")
    if default is None:
        return value == "none"
    if isinstance(default, Path):
        documented = Path(value)
        return default.parts[-len(documented.parts) :] == documented.parts
    if isinstance(default, dict):
        return value == "{}" and not default
    if isinstance(default, int | float):
        return float(value) == default
    return bool(value == default)


@pytest.fixture(scope="module")
def settings_rows() -> list[list[str]]:
    rows = _rows(_section(OPERATIONS.read_text(), "## Settings"), f"`{ENV_PREFIX}")
    assert all(len(r) == 4 for r in rows), "env var | run flag | default | meaning"
    return rows


def test_every_setting_has_one_row(settings_rows: list[list[str]]) -> None:
    documented = [r[0].strip("`") for r in settings_rows]
    assert len(documented) == len(set(documented)), "a setting documented twice"
    assert set(documented) == set(settings_defaults())


def test_every_documented_default_is_the_codes(settings_rows: list[list[str]]) -> None:
    defaults = settings_defaults()
    wrong = [
        (r[0], r[2], defaults[r[0].strip("`")])
        for r in settings_rows
        if not _same_default(r[2], defaults[r[0].strip("`")])
    ]
    assert not wrong


def test_every_row_has_a_meaning(settings_rows: list[list[str]]) -> None:
    assert all(r[3] for r in settings_rows)


def test_the_flag_column_is_runs_flags(settings_rows: list[list[str]]) -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run_flags = {
        option: action.dest
        for action in sub.choices["run"]._actions
        for option in action.option_strings
        if action.dest in Settings.model_fields
    }
    documented = {r[1].strip("`"): r[0].strip("`") for r in settings_rows if r[1]}
    assert set(documented) == set(run_flags)
    for flag, env in documented.items():
        assert env == ENV_PREFIX + run_flags[flag].upper()


def registry_metrics() -> dict[str, frozenset[str]]:
    """Every ``streamscore_*`` name the service serves, with its label names.

    Counters by their exposed ``_total`` name; histograms with their series.
    """
    registry = CollectorRegistry()
    metrics = ServiceMetrics.create(registry)
    process_metrics(registry)
    for f in fields(metrics):
        metric = getattr(metrics, f.name)
        if metric._labelnames:  # a labelled metric shows its labels once it has a child
            metric.labels(*["x"] * len(metric._labelnames))
    served: dict[str, frozenset[str]] = {}
    for family in registry.collect():
        if not family.name.startswith("streamscore_"):
            continue
        labels = frozenset(k for s in family.samples for k in s.labels if k != "le")
        if family.type == "counter":
            served[family.name + "_total"] = labels
        else:
            served[family.name] = labels
        if family.type == "histogram":
            served.update({family.name + s: labels for s in _HISTOGRAM_SUFFIXES})
            served[family.name + "_bucket"] = labels | {"le"}
    return served


def _name_and_labels(mention: str) -> tuple[str, set[str], bool]:
    """``name{a,b}`` -> (name, {a, b}, exact); a PromQL matcher ``{a="x"}`` is not exact."""
    name, _, rest = mention.partition("{")
    matchers = [m.strip() for m in rest.rstrip("}").split(",") if m.strip()]
    exact = not any("=" in m for m in matchers)
    labels = {re.split(r"[=!~]", m, maxsplit=1)[0].strip() for m in matchers}
    return name, labels, exact


def test_the_metrics_table_lists_every_metric_with_its_labels() -> None:
    rows = _rows(_section(OPERATIONS.read_text(), "## Metrics"), "`streamscore_")
    documented = {}
    for row in rows:
        name, labels, _ = _name_and_labels(row[0].strip("`"))
        documented[name] = frozenset(labels)
    served = registry_metrics()
    primary = {n: labels for n, labels in served.items() if not n.endswith(_HISTOGRAM_SUFFIXES)}
    assert documented == primary


def wrong_mentions(text: str, served: dict[str, frozenset[str]]) -> list[str]:
    """Each ``streamscore_*`` mention in ``text`` that names no served metric or wrong labels."""
    wrong = []
    for mention in _METRIC.findall(text):
        name, labels, exact = _name_and_labels(mention)
        if name not in served:
            wrong.append(f"{mention}: no such metric")
        else:
            # A label list names them all; PromQL matchers name some, maybe target labels.
            listed_wrong = exact and labels and labels != served[name]
            if listed_wrong or not labels <= served[name] | _TARGET_LABELS:
                wrong.append(f"{mention}: labels are {sorted(served[name])}")
    return wrong


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_metric_a_page_names_is_served(page: Path) -> None:
    wrong = wrong_mentions(page.read_text(), registry_metrics())
    assert not wrong, wrong


def test_wrong_mentions() -> None:
    served = registry_metrics()
    fine = (
        "`streamscore_breaker_open{role}` and "
        'histogram_quantile(0.99, rate(streamscore_e2e_latency_seconds_bucket{le="0.05",'
        ' job="streamscore"}[5m])) and streamscore_dead_letters_total{reason="json"}'
    )
    assert wrong_mentions(fine, served) == []
    assert len(wrong_mentions("`streamscore_breaker_open{model}`", served)) == 1
    assert len(wrong_mentions("`streamscore_breaker_open{role,model}`", served)) == 1
    assert len(wrong_mentions('streamscore_late_total{reason="json"}', served)) == 1
    assert len(wrong_mentions("`streamscore_scored`", served)) == 1  # a counter is _total


def test_name_and_labels() -> None:
    assert _name_and_labels("streamscore_x{a,b}") == ("streamscore_x", {"a", "b"}, True)
    assert _name_and_labels('streamscore_x{a="1"}') == ("streamscore_x", {"a"}, False)
    assert _name_and_labels("streamscore_x") == ("streamscore_x", set(), True)
