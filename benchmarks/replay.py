"""``streamscore bench``: the replay benchmark on the real broker, every figure in one run.

0. Host scaling, with the broker idle: one CPU-bound Python process against
   two at once (:mod:`benchmarks.host`), the ceiling the machine sets on two
   pipeline processes over one.
1. Preload N simulated transactions (``SimConfig(cards=...)``) into one input
   topic with confluent-kafka; every throughput phase reads it from the start.
2. (a) raw confluent-kafka consume -> produce passthrough: the ceiling.
3. (b) ``streamscore run --until-eof`` as 1 process, then as a 2-process
   bytewax cluster (``-i``/``-a``): events/s until every score is on the scores
   topic, from spawn (raw) and from the first score (startup excluded).
4. (c) a Quix Streams app (per-card tumbling count + sum) in its own process,
   then (d) the same job in Kafka Streams on the JVM (:mod:`benchmarks.jvm_peer`,
   built before the preload so a missing JDK or Maven fails the run at once).
5. The Kafka client's own CPU a record, consume and produce apart, over the
   same input (:mod:`benchmarks.kafka_client`).
6. End-to-end latency of ``streamscore run`` in tail mode at a fixed offered
   rate (see :mod:`benchmarks.latency`): ``--latency-runs`` consecutive runs
   (default 5) of ``--latency-processes`` at ``--rate``, each with fresh
   topics, state and processes, then one run of ``--cluster-processes`` (a
   bytewax cluster) at ``--cluster-rate``.
7. Whole-pipeline peak RSS with ``--rss-cards`` (default 1,000,000) distinct
   cards: ``streamscore run --until-eof`` as 1 process over a fresh input whose
   transactions take the cards in turn (``--rss-cards 0`` skips it).

``--latency-only`` (:func:`run_latency_bench`) runs step 6's consecutive runs alone, for the
latency figures without the minutes of the throughput phases; ``--rss-only``
(:func:`run_rss_bench`) runs step 7 alone.

Peak RSS of every pipeline process is polled (:mod:`benchmarks.procs`). The
figures go to JSON and a PNG chart (:mod:`benchmarks.report`). Every phase
has a time limit; the topics and state it created are removed afterwards and
its subprocesses are stopped on any error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from benchmarks import host, jvm_peer
from benchmarks.kafka_load import (
    BenchError,
    EndOffsets,
    check_broker,
    create_topics,
    delete_topics,
    distinct_card_payloads,
    preload,
    preload_sim,
    transaction_payloads,
)
from benchmarks.latency import LatencyPlan, broker_round_trip, measure_latency, templates
from benchmarks.options import BenchConfig
from benchmarks.procs import Children, read_host_busy_s, tail
from benchmarks.report import (
    CardsRss,
    KafkaClient,
    Latency,
    Results,
    Throughput,
    broker_line,
    build_latency_report,
    build_report,
    build_rss_report,
    latency_from_samples,
    latency_line,
    p99_target,
    rss_line,
    rss_target,
    summary_lines,
    target_lines,
    write_chart,
    write_json,
)
from models.simulator import SimConfig
from schemas.settings import TopicNames

PROGRESS_EVERY_S = 2.0
POLL_S = 0.05
# How long a finished --until-eof pipeline may take to exit before it is stopped.
EXIT_GRACE_S = 30.0
# How long a pipeline stopped by SIGINT may take to finish its epoch before SIGKILL; its
# figures are taken already, so there is no point in waiting long.
STOP_GRACE_S = 10.0
PEER_GRACE_S = 60.0
KAFKA_STREAMS = "kafka-streams"

Echo = Callable[[str], None]
T = TypeVar("T")


@dataclass
class _Session:
    """What one run owns: ids, folders, topics to delete, children to stop."""

    config: BenchConfig
    children: Children
    echo: Echo
    run_id: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    topics: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def work(self) -> Path:
        """Logs and state of this run."""
        return self.config.out.parent / self.run_id

    def state_dir(self, label: str) -> Path:
        """Where one phase keeps its state (removed when the phase ends)."""
        return self.work / f"{label}-state"

    def say(self, text: str) -> None:
        """A progress line, stamped with the seconds since the run started."""
        self.echo(f"[{time.perf_counter() - self.started:7.1f} s] {text}")

    def new_topics(self, names: list[str]) -> None:
        """Create fresh topics (``--partitions`` each) and remember them for clean-up."""
        self.topics.extend(names)
        create_topics(self.config.bootstrap, names, self.config.partitions)

    def pipeline_topics(self, label: str, *, transactions: str, chargebacks: str) -> TopicNames:
        """Fresh output topics for one pipeline run over the given inputs."""
        outputs = {
            k: f"{self.run_id}-{label}-{k.replace('_', '-')}"
            for k in TopicNames.model_fields
            if k not in ("transactions", "chargebacks")
        }
        names = TopicNames(transactions=transactions, chargebacks=chargebacks, **outputs)
        self.new_topics(list(outputs.values()))
        return names


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pipeline_env(bootstrap: str, topics: TopicNames, state_dir: Path) -> dict[str, str]:
    """Environment of a ``streamscore run`` child: its topics, no metrics, its own state."""
    env = dict(os.environ)
    env.update(
        {
            "STREAMSCORE_BOOTSTRAP_SERVERS": bootstrap,
            "STREAMSCORE_METRICS_PORT": "0",
            "STREAMSCORE_STATE_DIR": str(state_dir.resolve()),
            "STREAMSCORE_STARTUP_WAIT_S": "60",
        }
    )
    for key, name in topics.model_dump().items():
        env[f"STREAMSCORE_TOPICS__{key.upper()}"] = name
    return env


def pipeline_argv(processes: int, *, until_eof: bool) -> list[list[str]]:
    """One ``streamscore run`` command line per process (a bytewax cluster when > 1)."""
    base = [sys.executable, "-m", "flows.cli", "run"]
    if until_eof:
        base.append("--until-eof")
    if processes == 1:
        return [base]
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    return [[*base, "-i", str(i), "-a", addresses] for i in range(processes)]


def _pipeline_phase(
    s: _Session,
    *,
    label: str,
    processes: int,
    transactions: str,
    chargebacks: str,
    expected: int,
    timeout_s: float | None = None,
) -> Throughput:
    """Run ``streamscore run --until-eof`` over the preloaded input until every score is out."""
    config = s.config
    limit_s = config.phase_timeout_s if timeout_s is None else timeout_s
    topics = s.pipeline_topics(label, transactions=transactions, chargebacks=chargebacks)
    env = pipeline_env(config.bootstrap, topics, s.state_dir(label))
    scores = EndOffsets(config.bootstrap, topics.scores, config.partitions)
    logs = [s.work / f"{label}-process-{i}.log" for i in range(processes)]
    s.say(f"{label}: starting {processes} pipeline process(es); logs in {logs[0].parent}")
    try:
        spawned = time.perf_counter()
        host_busy_at_spawn = host_busy_at_change = read_host_busy_s()
        procs = [
            s.children.spawn(argv, env=env, log=log)
            for argv, log in zip(pipeline_argv(processes, until_eof=True), logs, strict=True)
        ]
        first: float | None = None
        timed_out = False
        first_count = count = last_count = 0
        last_change = spawned
        next_report = spawned + PROGRESS_EVERY_S
        reported = (spawned, 0, 0.0)  # (time, scores, CPU seconds) at the last progress line
        while True:
            count = scores.count()
            now = time.perf_counter()
            if count > last_count:
                last_count, last_change = count, now
                host_busy_at_change = read_host_busy_s()
                if first is None:
                    first, first_count = now, count
            exited = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(exited) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                msg = f"{label}: process {i} exited with {code}; last lines of {logs[i]}:\n"
                raise BenchError(msg + tail(logs[i]))
            if count >= expected or all(c == 0 for c in exited):
                break
            if now - spawned > limit_s:
                s.say(f"{label}: time limit of {limit_s:.0f} s reached; stopping")
                timed_out = True
                break
            if now >= next_report:
                next_report += PROGRESS_EVERY_S
                rss = " + ".join(f"{s.children.peak_rss_mib(p):.0f}" for p in procs)
                rate = (count - first_count) / (now - first) if first and now > first else 0.0
                cpu = sum(s.children.cpu_s(p) for p in procs)
                s.say(
                    f"{label}: {count:,}/{expected:,} scores, {rate:,.0f} ev/s since the first "
                    f"score ({_interval(now, count, cpu, reported)}), peak RSS {rss} MiB"
                )
                reported = (now, count, cpu)
            time.sleep(POLL_S)
        if first is None:
            msg = f"{label}: no score within {limit_s:.0f} s; see {logs[0]}"
            raise BenchError(msg + "\n" + tail(logs[0]))
        cpu_s = tuple(s.children.cpu_s(p) for p in procs)
        for i, proc in enumerate(procs):
            exit_code = None if timed_out else s.children.wait(proc, EXIT_GRACE_S)
            if exit_code is None:
                s.children.stop(proc, grace_s=STOP_GRACE_S)
            elif exit_code != 0:
                # Every score may be out and the process still fail (at its last commit,
                # or on the way out): a run that does not end cleanly is not a result.
                msg = f"{label}: process {i} exited with {exit_code} after its last score; "
                raise BenchError(msg + f"last lines of {logs[i]}:\n" + tail(logs[i]))
        count = max(count, scores.count())
        rss_mib = tuple(s.children.peak_rss_mib(p) for p in procs)
    finally:
        scores.close()
    shutil.rmtree(s.state_dir(label), ignore_errors=True)
    separated = last_change > first and last_count > first_count
    result = Throughput(
        label=label,
        processes=processes,
        expected=expected,
        done=last_count,
        wall_s=last_change - spawned,
        startup_s=first - spawned,
        steady_events=last_count - first_count if separated else last_count,
        steady_s=last_change - first if separated else last_change - spawned,
        complete=count >= expected,
        peak_rss_mib=rss_mib,
        cpu_s=cpu_s,
        startup_separated=separated,
        host_busy_s=host_busy_at_change - host_busy_at_spawn,
    )
    s.say(
        f"{label}: {result.done:,} scores; {result.raw_events_per_s:,.0f} ev/s from spawn, "
        f"{result.steady_events_per_s:,.0f} ev/s startup excluded (startup "
        f"{result.startup_s:.2f} s); peak RSS {' + '.join(f'{m:.0f}' for m in rss_mib)} MiB, "
        f"CPU {' + '.join(f'{c:.1f}' for c in cpu_s)} s"
    )
    return result


def _interval(now: float, count: int, cpu_s: float, last: tuple[float, int, float]) -> str:
    """Rate and CPU per event since the last progress line: how a run's speed drifts.

    >>> _interval(16.0, 100_000, 12.0, (0.0, 20_000, 4.0))
    'last 16 s: 5,000 ev/s, 100 us CPU an event'
    """
    seconds, events = now - last[0], count - last[1]
    per_event = (
        f"{(cpu_s - last[2]) / events * 1e6:,.0f} us CPU an event" if events else "no scores"
    )
    return f"last {seconds:.0f} s: {events / seconds:,.0f} ev/s, {per_event}"


class _LogFollower:
    """Echoes a child's progress lines (those starting with ``  [``) from its log."""

    def __init__(self, path: Path, echo: Callable[[str], None]) -> None:
        self._path = path
        self._echo = echo
        self._offset = 0

    def follow(self) -> None:
        try:
            with self._path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        complete = data.rfind(b"\n") + 1
        self._offset += complete
        for line in data[:complete].decode(errors="replace").splitlines():
            if line.startswith("  ["):
                self._echo(line.strip())


def peer_flags(
    *,
    bootstrap: str,
    topic: str,
    out_topic: str,
    events: int,
    max_seconds: float,
    group: str,
    state_dir: Path,
) -> list[str]:
    """The flags every peer takes (:mod:`benchmarks.peers` and the Kafka Streams peer)."""
    return [
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--out-topic",
        out_topic,
        "--events",
        str(events),
        "--max-seconds",
        str(max_seconds),
        "--group",
        group,
        "--state-dir",
        str(state_dir),
    ]


def peer_command(peer: str, flags: list[str]) -> list[str]:
    """The command line of one peer: a Python one of benchmarks.peers, or the JVM one.

    >>> peer_command("quix", ["--events", "5"])[1:]
    ['-m', 'benchmarks.peers', 'quix', '--events', '5']
    """
    if peer == KAFKA_STREAMS:
        return jvm_peer.peer_argv(flags)
    return [sys.executable, "-m", "benchmarks.peers", peer, *flags]


def _peer_phase(
    s: _Session, *, peer: str, label: str, transactions: str, expected: int
) -> Throughput:
    """Run one peer in its own process over the preloaded input; the same figures for each."""
    config = s.config
    out_topic = f"{s.run_id}-{label}-out"
    s.new_topics([out_topic])
    log = s.work / f"{label}.log"
    flags = peer_flags(
        bootstrap=config.bootstrap,
        topic=transactions,
        out_topic=out_topic,
        events=expected,
        max_seconds=config.phase_timeout_s,
        group=f"{s.run_id}-{label}",
        state_dir=s.state_dir(label).resolve(),
    )
    argv = peer_command(peer, flags)
    s.say(f"{label}: starting; log in {log}")
    spawned = time.time()
    r, proc = _child_result(s, label, argv, log)
    shutil.rmtree(s.state_dir(label), ignore_errors=True)
    if not r["events"] or not r["first"]:
        raise BenchError(f"{label}: handled no record; see {log}")
    result = Throughput(
        label=label,
        processes=1,
        expected=expected,
        done=r["events"],
        wall_s=r["last"] - spawned,
        startup_s=r["first"] - spawned,
        steady_events=r["steady_events"],
        steady_s=r["last"] - r["first"],
        complete=r["events"] >= expected,
        peak_rss_mib=(s.children.peak_rss_mib(proc),),
        cpu_s=(s.children.cpu_s(proc),),
    )
    s.say(
        f"{label}: {result.done:,} events; {result.raw_events_per_s:,.0f} ev/s from spawn, "
        f"{result.steady_events_per_s:,.0f} ev/s startup excluded"
    )
    return result


def _child_result(
    s: _Session, label: str, argv: list[str], log: Path
) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    """Run a child that prints one JSON line last; that line, and the finished child."""
    proc = s.children.spawn(argv, env=os.environ, log=log, capture_stdout=True)
    follower = _LogFollower(log, s.say)
    deadline = time.monotonic() + s.config.phase_timeout_s + PEER_GRACE_S
    while proc.poll() is None:
        follower.follow()
        if time.monotonic() > deadline:
            s.children.stop(proc)
            raise BenchError(f"{label}: did not finish in time; see {log}")
        time.sleep(0.2)
    follower.follow()
    assert proc.stdout is not None
    out = proc.stdout.read().decode(errors="replace")
    s.children.wait(proc, 0)
    if proc.returncode != 0:
        msg = f"{label}: exited with {proc.returncode}; last lines of {log}:\n{tail(log)}"
        raise BenchError(msg)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"{label}: printed no result; see {log}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result, proc


def _kafka_client_phase(s: _Session, *, transactions: str, expected: int) -> KafkaClient:
    """The Kafka client's CPU a record, consume and produce apart (benchmarks.kafka_client)."""
    config = s.config
    label = "kafka-client"
    out_topic = f"{s.run_id}-{label}-out"
    s.new_topics([out_topic])
    log = s.work / f"{label}.log"
    argv = [
        sys.executable,
        "-m",
        "benchmarks.kafka_client",
        "--bootstrap",
        config.bootstrap,
        "--topic",
        transactions,
        "--out-topic",
        out_topic,
        "--partitions",
        str(config.partitions),
        "--events",
        str(expected),
    ]
    s.say(f"{label}: consuming the input, then producing as many records; log in {log}")
    r, _proc = _child_result(s, label, argv, log)
    result = KafkaClient(
        consumed=r["consumed"],
        consume_cpu_s=r["consume_cpu_s"],
        consume_wall_s=r["consume_wall_s"],
        produced=r["produced"],
        produce_cpu_s=r["produce_cpu_s"],
        produce_wall_s=r["produce_wall_s"],
    )
    if result.consumed < expected:
        raise BenchError(f"{label}: read {result.consumed:,} of {expected:,} records; see {log}")
    s.say(
        f"{label}: consume {result.consume_cpu_us:.1f} us + produce {result.produce_cpu_us:.1f} "
        f"us CPU a record"
    )
    return result


def _rss_phase(s: _Session) -> CardsRss:
    """Whole-pipeline peak RSS with ``--rss-cards`` distinct cards in one process."""
    config = s.config
    cards, events = config.rss_cards, config.rss_transactions
    label = f"pipeline-{cards}-cards"
    transactions = f"{s.run_id}-rss-transactions"
    chargebacks = f"{s.run_id}-rss-chargebacks"
    s.new_topics([transactions, chargebacks])
    sim = preload_sim(
        seed=config.seed + 2,
        cards=config.cards,
        events=events,
        now_ms=time.time_ns() // 10**6,
    )
    t0 = time.perf_counter()
    expected = preload(
        config.bootstrap,
        transactions,
        distinct_card_payloads(sim, events, cards),
        progress=lambda n: s.say(f"rss preload: {n:,}/{events:,} events"),
    )
    s.say(
        f"rss preload: {expected:,} transactions over {min(cards, expected):,} distinct cards "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    run = _pipeline_phase(
        s,
        label=label,
        processes=1,
        transactions=transactions,
        chargebacks=chargebacks,
        expected=expected,
        timeout_s=config.rss_timeout_s,
    )
    # The input is gigabytes at a million cards: free the broker's disk now.
    if not config.keep_topics:
        delete_topics(config.bootstrap, [transactions])
    return CardsRss(cards=cards, run=run)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt (main thread only) so clean-up runs."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_bench(config: BenchConfig, *, echo: Echo = print) -> Results:
    """Run every phase, write the JSON and the chart, print the summary; return the figures."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    say = _flushing(echo)
    results = _in_session(config, say, lambda s: _run_phases(s, started_at))
    write_json(build_report(results), config.out)
    write_chart(results, config.chart)
    for line in summary_lines(results):
        say(line)
    say(f"figures: {config.out}, chart: {config.chart}")
    return results


def run_latency_bench(config: BenchConfig, *, echo: Echo = print) -> list[Latency]:
    """Only the consecutive latency runs (``--latency-only``): write their JSON, print them."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    say = _flushing(echo)

    def phases(s: _Session) -> tuple[Latency | None, list[Latency]]:
        broker = _broker_round_trip(s) if config.broker_warmup_s > 0 else None
        return broker, _latency_runs(s)

    broker, runs = _in_session(config, say, phases)
    write_json(build_latency_report(config, started_at, runs, broker), config.out)
    if broker is not None:
        say(broker_line(broker))
    for latency in runs:
        say(latency_line(latency))
    for line in target_lines({"p99_ms_at_offered_rate": p99_target(runs)}):
        say(line)
    say(f"figures: {config.out}")
    return runs


def run_rss_bench(config: BenchConfig, *, echo: Echo = print) -> CardsRss:
    """Only the whole-pipeline RSS phase (``--rss-only``): write its JSON, print it."""
    if config.rss_cards < 1:
        raise BenchError("--rss-only needs --rss-cards of 1 or more")
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    say = _flushing(echo)
    rss = _in_session(config, say, _rss_phase)
    write_json(build_rss_report(config, started_at, rss), config.out)
    say(rss_line(rss))
    for line in target_lines({"peak_rss_mib_per_process": rss_target(rss, 0.0, 0)}):
        say(line)
    say(f"figures: {config.out}")
    return rss


def _flushing(echo: Echo) -> Echo:
    def say_flush(text: str) -> None:
        echo(text)
        sys.stdout.flush()

    return say_flush


def _in_session(config: BenchConfig, echo: Echo, phases: Callable[[_Session], T]) -> T:
    """Run ``phases`` in a session; its children, topics and state go away however it ends."""
    check_broker(config.bootstrap)
    with _sigterm_as_interrupt(), Children() as children:
        s = _Session(config=config, children=children, echo=echo)
        try:
            return phases(s)
        finally:
            children.close()
            if not config.keep_topics and s.topics:
                s.say(f"deleting the run's {len(s.topics)} topics")
                delete_topics(config.bootstrap, s.topics)
            for state in s.work.glob("*-state"):
                shutil.rmtree(state, ignore_errors=True)


def _run_phases(s: _Session, started_at: str) -> Results:
    config = s.config
    transactions = f"{s.run_id}-transactions"
    chargebacks = f"{s.run_id}-chargebacks"
    s.say(
        f"run {s.run_id} on {config.bootstrap}: {config.events:,} events, "
        f"{config.cards:,} cards, {config.partitions} partitions"
    )
    s.say(f"{KAFKA_STREAMS}: building the peer (jars and class cached after the first build)")
    jvm_peer.build()
    s.say("host: one CPU-bound Python process, then two at once (the ceiling on 2 over 1)")
    host_scaling = host.measure(2)
    s.say(host.line(host_scaling))
    s.new_topics([transactions, chargebacks])
    sim = preload_sim(
        seed=config.seed, cards=config.cards, events=config.events, now_ms=time.time_ns() // 10**6
    )
    t0 = time.perf_counter()
    expected = preload(
        config.bootstrap,
        transactions,
        transaction_payloads(sim, config.events),
        progress=lambda n: s.say(f"preload: {n:,}/{config.events:,} events"),
    )
    preload_s = time.perf_counter() - t0
    s.say(f"preload: {expected:,} transactions in {preload_s:.1f} s (chargebacks topic empty)")
    passthrough = _peer_phase(
        s, peer="passthrough", label="passthrough", transactions=transactions, expected=expected
    )
    pipeline_1p = _pipeline_phase(
        s,
        label="pipeline-1-process",
        processes=1,
        transactions=transactions,
        chargebacks=chargebacks,
        expected=expected,
    )
    pipeline_2p = _pipeline_phase(
        s,
        label="pipeline-2-processes",
        processes=2,
        transactions=transactions,
        chargebacks=chargebacks,
        expected=expected,
    )
    quix = _peer_phase(s, peer="quix", label="quix", transactions=transactions, expected=expected)
    kafka_streams = _peer_phase(
        s, peer=KAFKA_STREAMS, label=KAFKA_STREAMS, transactions=transactions, expected=expected
    )
    kafka_client = _kafka_client_phase(s, transactions=transactions, expected=expected)
    if not config.keep_topics:
        delete_topics(config.bootstrap, [transactions])  # free the broker's disk for the rest
    latency, *more = _latency_runs(s)
    cluster = (
        _latency_phase(
            s,
            label="latency-cluster",
            processes=config.cluster_processes,
            rate=config.cluster_rate,
        )
        if config.cluster_processes > 0
        else None
    )
    rss = _rss_phase(s) if config.rss_cards > 0 else None
    return Results(
        config=config,
        started_at=started_at,
        preload_s=preload_s,
        passthrough=passthrough,
        pipeline_1p=pipeline_1p,
        pipeline_2p=pipeline_2p,
        quix=quix,
        kafka_streams=kafka_streams,
        kafka_client=kafka_client,
        latency=latency,
        latency_more=tuple(more),
        latency_cluster=cluster,
        rss=rss,
        host=host_scaling,
    )


def _latency_runs(s: _Session) -> list[Latency]:
    """The consecutive latency runs at ``--rate``, each from a fresh start."""
    config = s.config
    return [
        _latency_phase(
            s,
            label=f"latency-{run}" if config.latency_runs > 1 else "latency",
            processes=config.latency_processes,
            rate=config.rate,
        )
        for run in range(1, config.latency_runs + 1)
    ]


def _broker_round_trip(s: _Session) -> Latency:
    """``--rate`` through the broker alone for ``--broker-warmup`` seconds: its share, warmed."""
    config = s.config
    topic = f"{s.run_id}-broker-round-trip"
    s.new_topics([topic])
    sim = SimConfig(seed=config.seed + 2, cards=config.cards, events_per_second=config.rate)
    items = templates(sim, round(config.rate * config.broker_warmup_s) + 1)
    s.say(f"broker round trip: {config.rate:,.0f} ev/s for {config.broker_warmup_s:.0f} s")
    samples = broker_round_trip(
        bootstrap=config.bootstrap,
        topic=topic,
        partitions=config.partitions,
        rate=config.rate,
        seconds=config.broker_warmup_s,
        items=items,
        say=s.say,
    )
    return latency_from_samples(
        samples.samples_s,
        processes=0,
        offered_rate=config.rate,
        sent=samples.sent,
        sent_seconds=samples.sent_seconds,
        warmup_s=0.0,
    )


def _latency_phase(s: _Session, *, label: str, processes: int, rate: float) -> Latency:
    """Offer transactions at ``rate`` to ``processes`` of ``streamscore run`` in tail mode."""
    config = s.config
    plan = LatencyPlan(rate=rate, warmup_s=config.latency_warmup_s, seconds=config.latency_seconds)
    transactions = f"{s.run_id}-{label}-transactions"
    chargebacks = f"{s.run_id}-{label}-chargebacks"
    s.new_topics([transactions, chargebacks])
    topics = s.pipeline_topics(label, transactions=transactions, chargebacks=chargebacks)
    env = pipeline_env(config.bootstrap, topics, s.state_dir(label))
    logs = [s.work / f"{label}-process-{i}.log" for i in range(processes)]
    s.say(f"{label}: starting {processes} pipeline process(es) in tail mode, {rate:,.0f} ev/s")
    procs = [
        s.children.spawn(argv, env=env, log=log)
        for argv, log in zip(pipeline_argv(processes, until_eof=False), logs, strict=True)
    ]
    # Generated while the pipeline starts up, so the sender only formats and produces.
    sim = SimConfig(seed=config.seed + 1, cards=config.cards, events_per_second=rate)
    items = templates(sim, plan.total)
    s.say(f"{label}: {len(items):,} transactions generated")

    def check_alive() -> None:
        for i, proc in enumerate(procs):
            if proc.poll() is not None:
                msg = f"{label}: process {i} exited with {proc.returncode}; last lines:\n"
                raise BenchError(msg + tail(logs[i]))

    samples = measure_latency(
        bootstrap=config.bootstrap,
        transactions=transactions,
        scores=topics.scores,
        partitions=config.partitions,
        plan=plan,
        items=items,
        say=s.say,
        check_alive=check_alive,
        cpu_s=lambda: sum(s.children.cpu_s(p) for p in procs),
        host_busy_s=read_host_busy_s,
    )
    rss_mib = tuple(s.children.peak_rss_mib(p) for p in procs)
    for proc in procs:
        s.children.stop(proc, grace_s=STOP_GRACE_S)
    shutil.rmtree(s.state_dir(label), ignore_errors=True)
    result = latency_from_samples(
        samples.samples_s,
        processes=processes,
        offered_rate=rate,
        sent=samples.sent,
        sent_seconds=samples.sent_seconds,
        warmup_s=config.latency_warmup_s,
        peak_rss_mib=rss_mib,
        cpu_s=samples.cpu_s,
        host_busy_s=samples.host_busy_s,
    )
    s.say(
        f"{label}: p50 {result.p50_ms:.1f} ms, p95 {result.p95_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms ({result.received:,} of {result.sent:,} scored)"
    )
    return result
