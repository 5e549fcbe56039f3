"""The bench report's Kafka Streams ratios, Kafka client cost and whole-pipeline RSS phase."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import jvm_peer
from benchmarks.kafka_load import distinct_card_payloads, preload_sim
from benchmarks.options import BenchConfig
from benchmarks.replay import peer_command, peer_flags
from benchmarks.report import (
    KafkaClient,
    build_report,
    build_rss_report,
    kafka_client_line,
    ratios,
    rss_line,
    rss_target,
    summary_lines,
    target_lines,
    write_chart,
    write_json,
)
from tests.unit.benchmarks.test_replay import (
    _bench_config,
    _cards_rss,
    _kafka_client,
    _results,
    _throughput,
)

# -- ratios against both peers -----------------------------------------------------------------


def test_ratios_put_the_pipeline_over_kafka_streams_beside_quix() -> None:
    r = ratios(_results())  # pipeline 30k / 60k, Quix 12k, Kafka Streams 40k
    assert r["pipeline_2p_over_kafka_streams"] == pytest.approx(1.5)
    assert r["pipeline_1p_over_kafka_streams"] == pytest.approx(0.75)
    assert r["pipeline_2p_over_quix"] == pytest.approx(5.0)
    assert r["kafka_streams_over_quix"] == pytest.approx(40 / 12)


def test_ratios_use_raw_rates_when_asked() -> None:
    slow_start = replace(_throughput("kafka-streams", 40_000.0), wall_s=20.0)  # 5,000 ev/s raw
    r = ratios(_results(kafka_streams=slow_start), steady=False)
    b2 = _throughput("pipeline-2-processes", 60_000.0, processes=2).raw_events_per_s
    assert r["pipeline_2p_over_kafka_streams"] == pytest.approx(b2 / 5_000.0)


def test_a_peer_that_did_nothing_gives_no_ratio() -> None:
    idle = replace(_throughput("kafka-streams", 40_000.0), steady_events=0, steady_s=0.0)
    r = ratios(_results(kafka_streams=idle))
    assert r["pipeline_2p_over_kafka_streams"] is None
    assert r["kafka_streams_over_quix"] == pytest.approx(0.0)
    assert "pipeline_2p_over_kafka_streams n/a" in "\n".join(
        summary_lines(_results(kafka_streams=idle))
    )


def test_report_json_holds_the_kafka_streams_phase_and_definition(tmp_path: Path) -> None:
    loaded = json.loads(write_json(build_report(_results()), tmp_path / "r.json").read_text())
    ks = loaded["throughput"]["kafka-streams"]
    assert ks["steady_events_per_s"] == pytest.approx(40_000.0)
    assert loaded["ratios"]["pipeline_2p_over_kafka_streams"] == pytest.approx(1.5)
    assert "Maven Central" in loaded["definitions"]["kafka_streams"]


# -- the Kafka client's cost -------------------------------------------------------------------


def test_kafka_client_cost_per_record_and_its_share_of_the_pipeline() -> None:
    client = _kafka_client()  # 0.8 s + 1.2 s over 100,000 records each way
    assert client.consume_cpu_us == pytest.approx(8.0)
    assert client.produce_cpu_us == pytest.approx(12.0)
    assert client.cpu_us_per_record == pytest.approx(20.0)
    pipeline = replace(_throughput("pipeline-1-process", 30_000.0), cpu_s=(5.0,))  # 50 us
    report = build_report(_results(pipeline_1p=pipeline))
    figures = report["kafka_client"]
    assert isinstance(figures, dict)
    assert figures["share_of_pipeline_1p_cpu"] == pytest.approx(0.4)
    assert figures["consume_records_per_s"] == pytest.approx(200_000.0)
    assert figures["produce_records_per_s"] == pytest.approx(100_000.0)
    line = kafka_client_line(client, pipeline)
    assert "consume 8.0 us + produce 12.0 us = 20.0 us (40% of" in line


def test_kafka_client_without_records_or_pipeline_cpu_has_no_share() -> None:
    empty = KafkaClient(
        consumed=0,
        consume_cpu_s=0.0,
        consume_wall_s=0.0,
        produced=0,
        produce_cpu_s=0.0,
        produce_wall_s=0.0,
    )
    assert empty.cpu_us_per_record == 0.0
    line = kafka_client_line(_kafka_client(), _throughput("pipeline-1-process", 30_000.0))
    assert line.endswith("= 20.0 us")  # no CPU measured for the pipeline: no share


# -- whole-pipeline RSS with a million cards ---------------------------------------------------


def test_rss_target_is_met_only_at_a_million_cards_all_scored() -> None:
    assert rss_target(_cards_rss(), 0.0, 0)["met"] is True
    assert rss_target(_cards_rss(peak_mib=1500.0), 0.0, 0)["met"] is False
    small = rss_target(_cards_rss(cards=2000, peak_mib=200.0), 0.0, 0)
    assert small["met"] is False and "needs 1,000,000" in str(small["note"])
    cut = _cards_rss()
    cut = replace(cut, run=replace(cut.run, done=600_000, complete=False))
    assert cut.cards_done == 600_000
    assert rss_target(cut, 0.0, 0)["met"] is False


def test_without_the_rss_phase_the_target_is_not_claimed() -> None:
    report = build_report(_results(rss=None))
    targets = report["targets"]
    assert isinstance(targets, dict)
    rss = targets["peak_rss_mib_per_process"]
    assert rss["met"] is False and rss["measured"] == pytest.approx(301.0)
    assert "100,000 distinct cards only" in rss["note"]
    assert report["rss_phase"] is None
    assert "whole-pipeline RSS" not in "\n".join(summary_lines(_results(rss=None)))


def test_rss_phase_in_the_report_summary_and_chart(tmp_path: Path) -> None:
    results = _results()
    report = json.loads(json.dumps(build_report(results)))
    assert report["rss_phase"]["cards_done"] == 1_000_000
    assert report["rss_phase"]["peak_rss_mib"] == 700.0
    assert report["rss_phase"]["run"]["complete"] is True
    assert report["peak_rss_mib"]["rss_phase"] == 700.0
    text = "\n".join(summary_lines(results))
    assert "whole-pipeline RSS with 1,000,000 distinct cards (1 process" in text
    assert "peak 700 MiB" in text
    assert "1,000,000 distinct cards)" in text  # the target line names them
    assert write_chart(results, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_rss_line_flags_an_incomplete_run() -> None:
    rss = _cards_rss()
    cut = replace(rss, run=replace(rss.run, done=400_000, complete=False))
    assert "INCOMPLETE: 400,000 of 1,000,000 scored" in rss_line(cut)
    assert "400,000 distinct cards" in rss_line(cut)


def test_rss_only_report_holds_the_phase_and_its_target(tmp_path: Path) -> None:
    config = _bench_config(
        "--rss-only", "--rss-cards", "1000000", "--out", str(tmp_path / "r.json")
    )
    report = build_rss_report(config, "2026-12-06T20:00:00+00:00", _cards_rss())
    loaded = json.loads(write_json(report, config.out).read_text())
    assert loaded["config"]["rss_only"] is True and loaded["config"]["rss_cards"] == 1_000_000
    assert loaded["config"]["rss_events"] == 1_000_000  # one a card by default
    assert loaded["targets"]["peak_rss_mib_per_process"]["met"] is True
    assert "throughput" not in loaded and "latency" not in loaded
    assert "distinct ids taken in turn" in loaded["definitions"]["rss_phase"]


def test_target_lines_carry_their_notes() -> None:
    lines = target_lines({"peak_rss_mib_per_process": rss_target(_cards_rss(), 0.0, 0)})
    assert lines == [
        "target peak_rss_mib_per_process: 1,024.0 -> measured 700.00: met "
        "(whole pipeline, 1 process, 1,000,000 distinct cards)"
    ]


# -- options and command lines -----------------------------------------------------------------


def test_rss_flags() -> None:
    d = _bench_config()
    assert (d.rss_cards, d.rss_events, d.rss_transactions, d.rss_only) == (
        1_000_000,
        0,
        1_000_000,
        False,
    )
    c = _bench_config("--rss-cards", "5000", "--rss-events", "12000", "--rss-timeout", "30")
    assert (c.rss_cards, c.rss_transactions, c.rss_timeout_s) == (5000, 12_000, 30.0)
    assert _bench_config("--rss-cards", "0").rss_cards == 0


@pytest.mark.parametrize(
    "argv",
    [["--rss-cards", "-1"], ["--rss-timeout", "0"], ["--rss-only", "--latency-only"]],
)
def test_rss_flags_refuse_nonsense(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _bench_config(*argv)
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_every_peer_gets_the_same_flags(tmp_path: Path) -> None:
    flags = peer_flags(
        bootstrap="b:1",
        topic="in",
        out_topic="out",
        events=10,
        max_seconds=5.0,
        group="g",
        state_dir=tmp_path,
    )
    quix = peer_command("quix", flags)
    assert quix[:4] == [sys.executable, "-m", "benchmarks.peers", "quix"]
    jvm = peer_command("kafka-streams", flags)
    assert jvm[:2] == [str(jvm_peer.SCRIPT), "run"]
    assert quix[4:] == jvm[2:] == flags
    assert dict(zip(flags[::2], flags[1::2], strict=True))["--events"] == "10"


def test_the_jvm_peer_is_pinned_to_the_brokers_kafka_version() -> None:
    root = jvm_peer.ROOT / "scripts"
    streams = (root / "kafka-streams-pom.xml").read_text()
    broker = (root / "kafka-pom.xml").read_text()

    def version(pom: str) -> str:
        return pom.split("<kafka.version>")[1].split("</kafka.version>")[0]

    assert version(streams) == version(broker)
    assert "<artifactId>kafka-streams</artifactId>" in streams


def test_rss_input_brings_every_card_once_before_any_repeats() -> None:
    sim = preload_sim(seed=7, cards=100, events=900, now_ms=1_795_392_000_000)
    records = list(distinct_card_payloads(sim, 900, 400))
    cards = [json.loads(v)["card_id"] for _k, v, _t in records]
    assert len(records) == 900
    assert len(set(cards[:400])) == 400 and set(cards) == set(cards[:400])
    assert all(k.decode() == c for (k, _v, _t), c in zip(records, cards, strict=True))


def test_config_default_runs_the_rss_phase() -> None:
    assert BenchConfig(bootstrap="x").rss_cards == 1_000_000
