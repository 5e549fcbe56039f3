"""The delivery benchmark's flags and figures (the run itself needs a broker)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.delivery import (
    DeliveryBenchConfig,
    DeliveryResults,
    LatencyFigure,
    ThroughputFigure,
    add_arguments,
    config_from_args,
    percentile,
    summary_lines,
)


def _parse(*argv: str) -> DeliveryBenchConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)), bootstrap="127.0.0.1:9092")


def test_defaults_cover_both_rates_and_three_epoch_lengths() -> None:
    config = _parse()
    assert config.rates == (1_000.0, 10_000.0)
    assert config.epochs_s == (0.1, 0.5, 1.0)


def test_lists_are_comma_separated_and_positive() -> None:
    assert _parse("--rates", "500,2000", "--epochs", "0.2").rates == (500.0, 2000.0)
    with pytest.raises(SystemExit):
        _parse("--epochs", "0,1")


def test_percentiles_by_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert (percentile(samples, 0.5), percentile(samples, 0.99)) == (50.0, 99.0)
    assert percentile([], 0.5) == 0.0


def test_summary_names_every_mode_and_point() -> None:
    results = DeliveryResults(config=_parse(), started_at="2026-12-06T20:00:00+00:00")
    results.throughput.append(ThroughputFigure("exactly-once", 100, 100, 50.0, 3.0, 2.0))
    results.latency.append(LatencyFigure("exactly-once", 1000.0, 0.1, 50, 50, 60.0, 110.0, 120.0))
    text = "\n".join(summary_lines(results))
    assert "exactly-once: 50 ev/s" in text
    assert "0.1 s epochs,  1,000 ev/s offered: p50    60.0 ms, p99   110.0 ms" in text
