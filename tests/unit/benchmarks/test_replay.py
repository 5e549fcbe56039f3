"""The replay benchmark: its pure parts, and one tiny run against the real broker."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import jvm_peer
from benchmarks.latency import LatencyPlan, score_seq, templates
from benchmarks.options import DEFAULT_OUT, BenchConfig, config_from_args
from benchmarks.procs import parse_cpu_ticks, parse_host_busy_ticks, parse_vm_hwm_kib
from benchmarks.replay import pipeline_argv, pipeline_env
from benchmarks.report import (
    CardsRss,
    KafkaClient,
    Latency,
    Results,
    Throughput,
    build_latency_report,
    build_report,
    latency_from_samples,
    latency_line,
    percentile,
    ratio,
    summary_lines,
    write_chart,
    write_json,
)
from flows.cli import build_parser
from models.simulator import SimConfig
from schemas.records import Transaction
from schemas.settings import TopicNames

ROOT = Path(__file__).resolve().parents[3]


# -- percentiles and latency summaries ---------------------------------------------------------


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 99.9, 100])
def test_percentile_matches_numpys_linear_definition(q: float) -> None:
    rng = random.Random(q)
    for size in (1, 2, 3, 10, 101, 1000):
        values = [rng.expovariate(1 / 20) for _ in range(size)]
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_known_values() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]  # order does not matter
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 25) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_outside_0_to_100_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_latency_summary_is_in_milliseconds() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
    lat = latency_from_samples(
        samples, processes=1, offered_rate=100.0, sent=100, sent_seconds=2.0, warmup_s=1.0
    )
    assert lat.received == 100 and lat.sent == 100 and not lat.lower_bounds
    assert lat.p50_ms == pytest.approx(50.5)
    assert lat.p95_ms == pytest.approx(95.05)
    assert lat.p99_ms == pytest.approx(99.01)
    assert lat.max_ms == pytest.approx(100.0)
    assert lat.mean_ms == pytest.approx(50.5)
    assert lat.sent_rate == pytest.approx(50.0)


def test_latency_with_unscored_transactions_gives_lower_bounds() -> None:
    lat = latency_from_samples(
        [0.01, 0.02], processes=1, offered_rate=10.0, sent=3, sent_seconds=0.3, warmup_s=0.0
    )
    assert lat.lower_bounds and lat.received == 2 and lat.sent == 3


def test_latency_without_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no score"):
        latency_from_samples(
            [], processes=1, offered_rate=1.0, sent=5, sent_seconds=1.0, warmup_s=0.0
        )


# -- ratios and report assembly ----------------------------------------------------------------


def _throughput(label: str, steady_eps: float, *, processes: int = 1) -> Throughput:
    # 100,000 events; 1 s startup; the steady span gives ``steady_eps``.
    steady_s = 90_000 / steady_eps
    return Throughput(
        label=label,
        processes=processes,
        expected=100_000,
        done=100_000,
        wall_s=1.0 + steady_s,
        startup_s=1.0,
        steady_events=90_000,
        steady_s=steady_s,
        complete=True,
        peak_rss_mib=tuple(300.0 + i for i in range(processes)),
    )


def _latency(p99_ms: float = 20.0) -> Latency:
    return Latency(
        processes=1,
        offered_rate=10_000.0,
        sent_rate=9_990.0,
        warmup_s=5.0,
        seconds=30.0,
        sent=300_000,
        received=300_000,
        lower_bounds=False,
        p50_ms=5.0,
        p95_ms=10.0,
        p99_ms=p99_ms,
        max_ms=80.0,
        mean_ms=6.0,
        peak_rss_mib=(250.0,),
        cpu_s=27.0,  # 0.9 of a core over the 30 s measured: 90 us a transaction
    )


def _kafka_client() -> KafkaClient:
    # 100,000 records each way: 8 us consuming, 12 us producing a record.
    return KafkaClient(
        consumed=100_000,
        consume_cpu_s=0.8,
        consume_wall_s=0.5,
        produced=100_000,
        produce_cpu_s=1.2,
        produce_wall_s=1.0,
    )


def _cards_rss(cards: int = 1_000_000, peak_mib: float = 700.0) -> CardsRss:
    run = replace(
        _throughput(f"pipeline-{cards}-cards", 10_000.0),
        expected=cards,
        done=cards,
        peak_rss_mib=(peak_mib,),
    )
    return CardsRss(cards=cards, run=run)


def _results(**kw: Any) -> Results:
    base = Results(
        config=BenchConfig(bootstrap="127.0.0.1:9092", events=100_000),
        started_at="2026-11-23T10:00:00+00:00",
        preload_s=3.0,
        passthrough=_throughput("passthrough", 200_000.0),
        pipeline_1p=_throughput("pipeline-1-process", 30_000.0),
        pipeline_2p=_throughput("pipeline-2-processes", 60_000.0, processes=2),
        quix=_throughput("quix", 12_000.0),
        kafka_streams=_throughput("kafka-streams", 40_000.0),
        kafka_client=_kafka_client(),
        latency=_latency(),
        rss=_cards_rss(),
    )
    return replace(base, **kw)


def test_throughput_rates_from_spawn_and_from_first_output() -> None:
    t = Throughput(
        label="x",
        processes=1,
        expected=1000,
        done=1000,
        wall_s=4.0,
        startup_s=2.0,
        steady_events=900,
        steady_s=1.5,
        complete=True,
    )
    assert t.raw_events_per_s == pytest.approx(250.0)
    assert t.steady_events_per_s == pytest.approx(600.0)
    assert replace(t, wall_s=0.0, steady_s=0.0).raw_events_per_s == 0.0


def test_ratio_needs_a_positive_denominator() -> None:
    assert ratio(50.0, 10.0) == pytest.approx(5.0)
    assert ratio(50.0, 0.0) is None


def test_report_holds_ratios_b_over_a_and_b_over_c_on_startup_excluded_rates() -> None:
    report = build_report(_results())
    ratios = report["ratios"]
    assert isinstance(ratios, dict)
    assert ratios["pipeline_2p_over_passthrough"] == pytest.approx(0.3)
    assert ratios["pipeline_2p_over_quix"] == pytest.approx(5.0)
    assert ratios["pipeline_1p_over_passthrough"] == pytest.approx(0.15)
    assert ratios["pipeline_1p_over_quix"] == pytest.approx(2.5)
    assert ratios["pipeline_2p_over_1p"] == pytest.approx(2.0)
    raw = report["ratios_raw"]
    assert isinstance(raw, dict)
    assert 0 < raw["pipeline_2p_over_quix"] < 5.0  # startup weighs on the raw figures


def test_report_checks_the_issues_targets() -> None:
    targets = build_report(_results())["targets"]
    assert isinstance(targets, dict)
    assert targets["pipeline_2p_events_per_s"]["met"] is True
    assert targets["pipeline_2p_over_quix"]["met"] is True
    assert targets["p99_ms_at_offered_rate"]["met"] is True
    assert targets["peak_rss_mib_per_process"]["met"] is True
    slow = build_report(
        _results(
            pipeline_2p=_throughput("pipeline-2-processes", 20_000.0, processes=2),
            latency=_latency(p99_ms=80.0),
        )
    )["targets"]
    assert isinstance(slow, dict)
    assert slow["pipeline_2p_events_per_s"]["met"] is False
    assert slow["pipeline_2p_over_quix"]["met"] is False
    assert slow["p99_ms_at_offered_rate"]["met"] is False
    # A fast p99 over only the transactions that came back does not count.
    partial = replace(_latency(p99_ms=10.0), received=200_000, lower_bounds=True)
    unmet = build_report(_results(latency=partial))["targets"]
    assert isinstance(unmet, dict)
    assert unmet["p99_ms_at_offered_rate"]["met"] is False


def test_p99_target_holds_only_if_it_holds_in_every_run() -> None:
    runs = (_latency(p99_ms=20.0), _latency(p99_ms=61.5), _latency(p99_ms=30.0))
    results = _results(latency=runs[0], latency_more=runs[1:])
    targets = build_report(results)["targets"]
    assert isinstance(targets, dict)
    p99 = targets["p99_ms_at_offered_rate"]
    assert (p99["measured"], p99["met"]) == (61.5, False)
    assert "worst of 3 runs" in p99["note"] and "20.0, 61.5, 30.0 ms" in p99["note"]
    assert "p99_ms_at_cluster_rate" not in targets
    fast = _results(latency_more=(_latency(p99_ms=25.0),))
    assert build_report(fast)["targets"]["p99_ms_at_offered_rate"]["met"] is True  # type: ignore[index]
    summary = "\n".join(summary_lines(results))
    assert summary.count("latency at 10,000 ev/s offered") == 3


def test_cluster_latency_and_cold_start_are_checked() -> None:
    cluster = replace(_latency(p99_ms=70.0), processes=2, offered_rate=25_000.0)
    results = _results(latency_cluster=cluster)
    report = build_report(results)
    targets = report["targets"]
    assert isinstance(targets, dict)
    assert targets["p99_ms_at_cluster_rate"]["met"] is False
    assert targets["p99_ms_at_cluster_rate"]["note"] == "2 process(es) at 25,000 ev/s"
    assert report["latency_cluster"]["offered_rate"] == 25_000.0  # type: ignore[index]
    cold = targets["cold_start_s"]
    assert cold["measured"] == results.pipeline_1p.startup_s
    assert cold["met"] is (results.pipeline_1p.startup_s < 5.0)
    slow_start = replace(results.pipeline_1p, startup_s=7.5)
    late = build_report(_results(pipeline_1p=slow_start))["targets"]
    assert late["cold_start_s"] == {"target": 5.0, "measured": 7.5, "met": False}  # type: ignore[index]


def test_report_peak_rss_per_process_and_summed() -> None:
    rss = build_report(_results())["peak_rss_mib"]
    assert rss == {
        "pipeline_1p": 300.0,
        "pipeline_2p_process_0": 300.0,
        "pipeline_2p_process_1": 301.0,
        "pipeline_2p_total": 601.0,
        "latency_run": 250.0,
        "rss_phase": 700.0,
        "max_per_process": 700.0,
    }


def test_report_says_what_each_figure_measures() -> None:
    report = build_report(_results())
    definitions = report["definitions"]
    assert isinstance(definitions, dict)
    assert {"latency", "raw_events_per_s", "steady_events_per_s", "peak_rss_mib"} <= set(
        definitions
    )
    assert "perf_counter" in definitions["latency"]


def test_report_round_trips_through_json(tmp_path: Path) -> None:
    report = build_report(_results())
    path = write_json(report, tmp_path / "deep" / "er" / "result.json")
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(json.dumps(report))
    assert loaded["throughput"]["quix"]["steady_events_per_s"] == pytest.approx(12_000.0)
    assert loaded["latency"]["p99_ms"] == 20.0
    assert not list(path.parent.glob("*.tmp"))


def test_latency_only_report_holds_the_latency_and_its_target(tmp_path: Path) -> None:
    config = _bench_config("--latency-only", "--rate", "2000", "--out", str(tmp_path / "l.json"))
    assert config.latency_only is True
    report = build_latency_report(config, "2026-11-23T10:00:00+00:00", [_latency(p99_ms=60.0)])
    loaded = json.loads(write_json(report, config.out).read_text())
    assert loaded["config"]["latency_only"] is True
    assert loaded["config"]["offered_rate"] == 2000.0
    assert loaded["latency"]["p99_ms"] == 60.0
    assert loaded["targets"] == {
        "p99_ms_at_offered_rate": {
            "target": 50.0,
            "measured": 60.0,
            "met": False,
            "note": "1 process(es) at 10,000 ev/s",
        }
    }
    assert [run["p99_ms"] for run in loaded["latency_runs"]] == [60.0]
    assert "throughput" not in loaded
    assert "perf_counter" in loaded["definitions"]["latency"]
    assert loaded["latency"]["pipeline_cores"] == pytest.approx(0.9)
    assert loaded["latency"]["cpu_us_per_event"] == pytest.approx(90.0)
    assert "/proc/<pid>/stat" in loaded["definitions"]["latency_cpu"]


def test_latency_line_gives_the_pipeline_cpu_when_measured() -> None:
    assert "pipeline CPU 0.90 cores (90 us an event)" in latency_line(_latency())
    assert "pipeline CPU" not in latency_line(replace(_latency(), cpu_s=0.0))


def test_summary_names_every_phase_and_flags_incomplete_ones() -> None:
    partial = replace(_throughput("quix", 12_000.0), done=50_000, complete=False)
    text = "\n".join(summary_lines(_results(quix=partial)))
    for label in (
        "passthrough",
        "pipeline-1-process",
        "pipeline-2-processes",
        "quix",
        "kafka-streams",
    ):
        assert label in text
    assert "INCOMPLETE: 50,000 of 100,000" in text
    assert "p99 20.0 ms" in text


def test_chart_is_a_png(tmp_path: Path) -> None:
    path = write_chart(_results(), tmp_path / "result.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- argument parsing --------------------------------------------------------------------------


def _bench_config(*argv: str) -> BenchConfig:
    args = build_parser().parse_args(["bench", *argv])
    return config_from_args(args, bootstrap=args.bootstrap_servers or "127.0.0.1:9092")


def test_bench_defaults_are_the_issues_full_run() -> None:
    config = _bench_config()
    assert config.events == 1_000_000
    assert config.partitions == 2
    assert config.cards == 100_000
    assert config.rate == 10_000.0
    assert config.out == DEFAULT_OUT
    assert config.chart == DEFAULT_OUT.with_suffix(".png")
    assert config.keep_topics is False
    assert config.latency_only is False


def test_bench_flags_for_a_smaller_run(tmp_path: Path) -> None:
    config = _bench_config(
        "--events",
        "50000",
        "--rate",
        "2000",
        "--latency-seconds",
        "10",
        "--partitions",
        "4",
        "--out",
        str(tmp_path / "r.json"),
        "--bootstrap-servers",
        "127.0.0.1:9999",
        "--keep-topics",
    )
    assert (config.events, config.rate, config.latency_seconds) == (50_000, 2000.0, 10.0)
    assert config.partitions == 4
    assert config.bootstrap == "127.0.0.1:9999"
    assert config.chart == tmp_path / "r.png"
    assert config.keep_topics is True


@pytest.mark.parametrize(
    "argv", [["--events", "0"], ["--rate", "0"], ["--latency-seconds", "-1"], ["--partitions", "x"]]
)
def test_bench_refuses_nonsense(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _bench_config(*argv)
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


# -- the pipeline's command lines and the latency run's records --------------------------------


def test_two_processes_form_one_bytewax_cluster() -> None:
    one, two = pipeline_argv(1, until_eof=True), pipeline_argv(2, until_eof=True)
    assert one == [[sys.executable, "-m", "flows.cli", "run", "--until-eof"]]
    assert [argv[argv.index("-i") + 1] for argv in two] == ["0", "1"]
    addresses = {argv[argv.index("-a") + 1] for argv in two}
    assert len(addresses) == 1
    hosts = addresses.pop().split(";")
    assert len(set(hosts)) == 2 and all(h.startswith("127.0.0.1:") for h in hosts)
    assert "--until-eof" not in pipeline_argv(1, until_eof=False)[0]


def test_pipeline_env_names_every_topic(tmp_path: Path) -> None:
    topics = TopicNames(**{k: f"{k}-x" for k in TopicNames.model_fields})
    env = pipeline_env("127.0.0.1:9092", topics, tmp_path / "state")
    assert env["STREAMSCORE_TOPICS__SCORES"] == "scores-x"
    assert env["STREAMSCORE_TOPICS__WINDOW_AGGREGATES"] == "window_aggregates-x"
    assert env["STREAMSCORE_METRICS_PORT"] == "0"
    assert env["STREAMSCORE_STATE_DIR"] == str((tmp_path / "state").resolve())


def test_latency_records_carry_their_index_and_a_valid_event_time() -> None:
    items = templates(SimConfig(seed=3, cards=500), 50)
    assert len(items) == 50
    for i in (0, 17, 49):
        txn = Transaction.model_validate_json(items[i].value(1_795_428_000_123))
        assert txn.event_id == f"L{i}"
        assert txn.event_time == 1_795_428_000_123
        assert items[i].key == txn.card_id.encode()


def test_score_seq_reads_the_index_back() -> None:
    assert score_seq(b'{"event_id": "L7", "score": 0.1}') == 7
    assert score_seq(b'{"event_id":"L123456"}') == 123_456
    assert score_seq(b'{"event_id": "tx-7-1"}') is None
    assert score_seq(b'{"event_id": "Lx"}') is None
    assert score_seq(b'{"card_id": "c-1"}') is None


def test_latency_plan_pregenerates_enough() -> None:
    plan = LatencyPlan(rate=1000.0, warmup_s=2.0, seconds=3.0, ready_timeout_s=10.0)
    assert plan.total == plan.probes + 5000
    assert plan.probes >= 10.0 / 0.2


def test_cpu_ticks_parsing_survives_odd_process_names() -> None:
    stat = "77 (a) b (c)) S 1 77 77 0 -1 4194560 100 0 0 0 321 45 0 0 20 0 3 0"
    assert parse_cpu_ticks(stat) == 366


def test_cpu_per_event_sums_every_process() -> None:
    t = replace(_throughput("x", 10_000.0, processes=2), cpu_s=(3.0, 1.0))
    assert t.cpu_us_per_event == pytest.approx(40.0)  # 4 s over 100,000 events


def test_host_cores_split_what_the_pipeline_used_from_the_rest() -> None:
    # 10 s from spawn to the last output; the host was busy 18 s, the processes 14 s of it.
    t = replace(
        _throughput("x", 10_000.0, processes=2), wall_s=10.0, cpu_s=(8.0, 6.0), host_busy_s=18.0
    )
    assert t.host_cores == pytest.approx(1.8)
    assert t.other_cores == pytest.approx(0.4)
    assert replace(t, host_busy_s=0.0).other_cores == 0.0  # not measured


def test_host_busy_ticks_leave_out_idle_and_iowait() -> None:
    line = "cpu  10 1 4 500 30 2 3 0 7 0\ncpu0 5 0 2 250 15 1 1 0 0 0\n"
    assert parse_host_busy_ticks(line) == 10 + 1 + 4 + 2 + 3 + 0


def test_vm_hwm_parsing() -> None:
    assert parse_vm_hwm_kib("Name:\tx\nVmPeak:\t 9 kB\nVmHWM:\t   2048 kB\n") == 2048
    assert parse_vm_hwm_kib("Name:\tx\nState:\tZ (zombie)\n") is None


# -- the whole benchmark, tiny, against the real broker ----------------------------------------


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _bench(bootstrap: str, out: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``streamscore bench`` with ``argv``, a 1 s warm-up, figures to ``out``; it must succeed."""
    command = [sys.executable, "-m", "flows.cli", "bench", "--bootstrap-servers", bootstrap]
    command += [*argv, "--latency-warmup", "1", "--out", str(out)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=180, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.integration
def test_tiny_benchmark_reports_a_positive_number_for_every_figure(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    jvm_peer.build()  # the first build on a machine fetches jars; the bench's own is then quick
    out = tmp_path / "bench" / "result.json"
    done = _bench(
        kafka_bootstrap,
        out,
        *("--events", "3000", "--rate", "500", "--latency-seconds", "3"),
        *("--latency-runs", "2", "--latency-warmup", "2", "--cluster-rate", "500"),
        *("--rss-cards", "2000", "--rss-events", "2500"),
    )
    assert "pipeline-2-processes:" in done.stdout  # progress while it ran
    report = json.loads(out.read_text())
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert _positive(report["preload_s"])
    labels = ("passthrough", "pipeline-1-process", "pipeline-2-processes", "quix", "kafka-streams")
    for label in labels:
        t = report["throughput"][label]
        assert t["complete"] is True and t["done"] == 3000, t
        for key in ("raw_events_per_s", "steady_events_per_s", "wall_s", "startup_s"):
            assert _positive(t[key]), (label, key, t[key])
        assert t["peak_rss_mib"] and all(_positive(v) for v in t["peak_rss_mib"])
    assert len(report["throughput"]["pipeline-2-processes"]["peak_rss_mib"]) == 2
    for key, value in {**report["ratios"], **report["ratios_raw"]}.items():
        assert _positive(value), key
    latency = report["latency"]
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms", "sent", "received"):
        assert _positive(latency[key]), key
    assert latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert [run["received"] for run in report["latency_runs"]] == [1500, 1500]
    assert report["latency_cluster"]["processes"] == 2
    assert report["latency_cluster"]["received"] == 1500
    assert {"p99_ms_at_cluster_rate", "cold_start_s"} <= set(report["targets"])
    assert _positive(report["targets"]["cold_start_s"]["measured"])
    for key, value in report["peak_rss_mib"].items():
        assert _positive(value), key
    client = report["kafka_client"]
    assert client["consumed"] == client["produced"] == 3000
    for key in (
        "consume_cpu_us_per_record",
        "produce_cpu_us_per_record",
        "share_of_pipeline_1p_cpu",
    ):
        assert _positive(client[key]), key
    rss = report["rss_phase"]
    assert (rss["cards"], rss["cards_done"], rss["run"]["done"]) == (2000, 2000, 2500)
    assert _positive(rss["peak_rss_mib"]) and rss["run"]["complete"] is True
    assert "whole-pipeline RSS with 2,000 distinct cards" in done.stdout
    # Too few cards for the 1 GiB target to count as met.
    assert report["targets"]["peak_rss_mib_per_process"]["met"] is False


@pytest.mark.integration
def test_tiny_latency_only_run_measures_only_latency(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "bench" / "latency.json"
    done = _bench(
        kafka_bootstrap,
        out,
        "--latency-only",
        "--cards",
        "500",
        "--rate",
        "300",
        "--latency-seconds",
        "2",
        "--latency-runs",
        "2",
        "--latency-warmup",
        "2",
    )
    assert "preload" not in done.stdout and "pipeline-1-process" not in done.stdout
    assert "latency at 300 ev/s offered" in done.stdout
    report = json.loads(out.read_text())
    latency = report["latency"]
    assert latency["sent"] == 600 and latency["received"] == 600
    assert [run["received"] for run in report["latency_runs"]] == [600, 600]
    for key in ("p50_ms", "p99_ms", "max_ms"):
        assert _positive(latency[key]), key
    assert _positive(latency["peak_rss_mib"][0])
    # The pipeline's CPU while the counted 600 were sent: some, and under two cores.
    assert 0 < latency["pipeline_cores"] < 2
    assert latency["cpu_us_per_event"] == pytest.approx(latency["cpu_s"] / 600 * 1e6)
    assert "pipeline CPU" in done.stdout
    assert set(report["targets"]) == {"p99_ms_at_offered_rate"}
    assert not out.with_suffix(".png").exists()
