"""The ``streamscore`` command: run the flow, manage topics, replay traffic, train, demo.

Subcommands read settings as flags over ``STREAMSCORE_*`` env vars over
defaults, each offering flags only for the settings it uses, and exit with
status 2 and a message naming the setting when one is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import json
import logging
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Literal

from schemas.errors import StreamScoreError
from schemas.settings import Settings, load_settings

log = logging.getLogger("streamscore")


# Settings flags by what they configure; a subcommand offers only the groups it reads.
FlagGroup = Literal["kafka", "topics", "state", "model", "deployment", "metrics", "delivery"]


def _settings_flags(parser: argparse.ArgumentParser, *groups: FlagGroup) -> None:
    """Add the settings flags of ``groups`` to a subcommand's parser."""
    if "kafka" in groups:
        parser.add_argument("--bootstrap-servers", help="Kafka host:port list")
    if "topics" in groups:
        parser.add_argument("--topic-partitions", type=int, help="partitions of created topics")
    if "state" in groups:
        parser.add_argument("--state-dir", type=Path, help="RocksDB state directory")
        parser.add_argument(
            "--recovery-dir", type=Path, help="bytewax recovery partitions (enables crash recovery)"
        )
    if "model" in groups:
        parser.add_argument("--model-dir", type=Path, help="model directory with manifest.json")
    if "deployment" in groups:
        parser.add_argument("--shadow-model-dir", type=Path, help="shadow model (never decides)")
        parser.add_argument(
            "--canary-model-dir", type=Path, help="canary model for a share of cards"
        )
        parser.add_argument("--canary-share", type=float, help="share of cards for the canary")
    if "metrics" in groups:
        parser.add_argument("--metrics-host", help="address the metrics endpoint binds to")
        parser.add_argument("--metrics-port", type=int, help="metrics port (0: no endpoint)")
    if "delivery" in groups:
        parser.add_argument(
            "--delivery",
            choices=("at-least-once", "exactly-once"),
            help="output delivery (docs/delivery.md); exactly-once needs --recovery-dir",
        )
        parser.add_argument(
            "--flow-name", help="names the consumer group streamscore-<name> and transactional ids"
        )


def _settings(args: argparse.Namespace) -> Settings:
    keys = (
        "bootstrap_servers",
        "state_dir",
        "recovery_dir",
        "model_dir",
        "shadow_model_dir",
        "canary_model_dir",
        "canary_share",
        "metrics_host",
        "metrics_port",
        "topic_partitions",
        "delivery",
        "flow_name",
    )
    given = {k: getattr(args, k, None) for k in keys}  # flags a subcommand lacks are None
    return load_settings(**given)


def epoch_interval_s(given: float | None, settings: Settings) -> float:
    """The epoch length: as given, else 10 s, or 1 s with exactly-once delivery.

    With exactly-once a ``read_committed`` consumer sees output only when its
    epoch's transaction commits, so the epoch bounds the latency.

    >>> epoch_interval_s(None, Settings(delivery="exactly-once"))
    1.0
    """
    if given is not None:
        return given
    return 1.0 if settings.delivery == "exactly-once" else 10.0


def _cmd_run(args: argparse.Namespace) -> int:
    from bytewax.run import cli_main

    # A crash in native code (librdkafka, RocksDB, onnxruntime, bytewax) prints every
    # thread's Python stack to stderr before the process dies (where stderr is a file).
    with contextlib.suppress(io.UnsupportedOperation, ValueError):
        faulthandler.enable()

    from flows.main import start_service
    from flows.recovery import prepare_recovery
    from flows.timer_slack import coarse_main_thread
    from schemas.errors import ConfigError

    settings = _settings(args)
    addresses = args.addresses.split(";") if args.addresses else None
    process_id = args.process_id or 0
    processes = len(addresses) if addresses else 1
    if args.workers_per_process < 1:
        raise ConfigError("--workers-per-process (-w)", "must be at least 1")
    workers = processes * args.workers_per_process
    recovery = prepare_recovery(
        settings,
        process_id=process_id,
        processes=processes,
        workers=workers,
        rebuild=args.rebuild_state,
    )
    flow = start_service(
        settings, process_id=process_id, workers=workers, stop_at_eof=args.until_eof
    )
    # In a cluster bytewax's main thread only waits for the workers, waking every
    # millisecond to check for signals: its timers may run late (flows.timer_slack).
    cluster = addresses is not None or args.workers_per_process > 1
    try:
        with coarse_main_thread() if cluster else contextlib.nullcontext():
            cli_main(  # type: ignore[no-untyped-call]
                flow,
                workers_per_process=args.workers_per_process,
                process_id=args.process_id,
                addresses=addresses,
                epoch_interval=timedelta(seconds=epoch_interval_s(args.epoch_interval, settings)),
                recovery_config=recovery,
            )
    except Exception as exc:
        return _flow_failed(exc, settings)
    return 0


def _flow_failed(exc: Exception, settings: Settings) -> int:
    """Report why the running flow stopped; exit status 1 (an orchestrator restarts it).

    bytewax wraps what a step raised; StreamScore's own errors say what to do
    in one line. A record that made a step raise (a bug) is counted in the
    quarantine ledger, with the traceback, and skipped once it has crashed
    ``quarantine_after`` starts. Anything else is re-raised as it is.
    """
    from operators.quarantine import PoisonRecordError, record_crash
    from state.rocksdb import is_disk_full

    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None:
        chain.append(link)
        link = link.__cause__ or link.__context__
    cause = next((e for e in chain if isinstance(e, StreamScoreError)), None)
    if cause is None:
        if any(is_disk_full(e) for e in chain):
            # bytewax's recovery store (SQLite in the recovery dir) ran out of space.
            print(
                f"streamscore: no space left on a device the flow writes to ({chain[-1]}): "
                f"free space under {settings.recovery_dir} and {settings.state_dir} and start "
                "again; nothing is damaged, the flow resumes from its last snapshot",
                file=sys.stderr,
            )
            return 1
        raise exc
    if isinstance(cause, PoisonRecordError):
        crashes = record_crash(settings.state_dir, cause)
        after = settings.quarantine_after
        log.error(
            "%s (crash %d; after %d the record is skipped as a 'quarantined' dead letter). "
            "This is a bug: please report it with this traceback",
            cause,
            crashes,
            after,
            exc_info=cause,
        )
        return 1
    print(f"streamscore: {cause}", file=sys.stderr)
    return 1


def _cmd_topics(args: argparse.Namespace) -> int:
    from flows.tooling import contract_topics, create_topics

    settings = _settings(args)
    topics = contract_topics(settings.topics)
    create_topics(
        settings.bootstrap_servers,
        topics,
        settings.topic_partitions,
        recreate=args.recreate,
        security=settings.kafka_python_security(),
    )
    print(f"topics ready on {settings.bootstrap_servers}: {', '.join(topics)}")
    return 0


def _cmd_produce(args: argparse.Namespace) -> int:
    from flows.tooling import ReplayConfig, publish, replay_records
    from models.simulator import SimConfig

    settings = _settings(args)
    config = ReplayConfig(
        count=args.count,
        sim=SimConfig(seed=args.seed, cards=args.cards, events_per_second=args.event_rate),
        invalid_share=args.invalid_share,
        chargebacks=True,
    )
    records = replay_records(config)
    security = settings.kafka_python_security()
    sent = publish(
        settings.bootstrap_servers, settings.topics, records, args.rate, security=security
    )
    print(
        f"published {sent} records to {settings.topics.transactions} "
        f"and {settings.topics.chargebacks}"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from flows.dataflow import event_time_config
    from models.history import Recorded, from_jsonl, from_simulation, from_topics
    from models.realistic import RealisticConfig, simulate_realistic
    from models.train import TrainConfig, train
    from operators.card_features import DAY
    from schemas.errors import ConfigError
    from schemas.timefmt import parse_event_time

    settings = _settings(args)
    config = TrainConfig(
        version=args.version,
        seed=args.seed,
        trees=args.trees,
        label_horizon_ms=round(args.label_horizon_days * DAY),
        review_budget=args.review_budget,
    )
    time = event_time_config(settings)
    recorded: Recorded
    if args.from_topics:
        if not args.since or not args.until:
            raise ConfigError("--since/--until", "both are needed with --from-topics")
        try:
            since, until = parse_event_time(args.since), parse_event_time(args.until)
        except ValueError as exc:
            raise ConfigError("--since/--until", str(exc)) from None
        recorded = from_topics(
            settings.bootstrap_servers,
            settings.topics,
            since_ms=since,
            until_ms=until,
            label_horizon_ms=config.label_horizon_ms,
            consumer_config=settings.consumer_client_config(),
            slack_ms=time.out_of_orderness_ms + time.allowed_lateness_ms,
        )
    elif args.transactions:
        recorded = from_jsonl(args.transactions, args.chargebacks)
    else:
        try:
            sim = RealisticConfig(
                seed=args.sim_seed,
                cards=args.sim_cards,
                days=args.sim_days,
                txns_per_card_day=args.sim_txns_per_card_day,
            )
        except ValueError as exc:
            raise ConfigError("--sim-*", str(exc)) from None
        source = f"realistic-sim:seed={sim.seed},cards={sim.cards},days={sim.days:g}"
        recorded = from_simulation(simulate_realistic(sim), source)
    manifest = train(config, args.out, recorded, time=time, report=not args.no_report)
    print(json.dumps({"model_version": manifest.model_version, **manifest.metrics}, indent=2))
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from models.realistic import RealisticConfig, simulate_realistic
    from schemas.errors import ConfigError

    try:
        sim = RealisticConfig(
            seed=args.seed,
            cards=args.cards,
            days=args.days,
            txns_per_card_day=args.txns_per_card_day,
            fraud_share=args.fraud_share,
        )
    except ValueError as exc:
        raise ConfigError("simulate", str(exc)) from None
    args.out.mkdir(parents=True, exist_ok=True)
    counts = {"transaction": 0, "chargeback": 0}
    with (
        (args.out / "transactions.jsonl").open("w") as txns,
        (args.out / "chargebacks.jsonl").open("w") as cbs,
    ):
        for event in simulate_realistic(sim):
            out = txns if event.kind == "transaction" else cbs
            out.write(json.dumps(event.payload, separators=(",", ":")) + "\n")
            counts[event.kind] += 1
    print(
        f"wrote {counts['transaction']} transactions and {counts['chargeback']} chargebacks "
        f"({sim.days:g} days) to {args.out}"
    )
    return 0


def _cmd_schemas(args: argparse.Namespace) -> int:
    from schemas.export import write_json_schemas

    for path in write_json_schemas(args.out):
        print(path)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import DemoConfig, run_demo

    settings = _settings(args)
    return run_demo(
        settings,
        DemoConfig(count=args.count, invalid_share=args.invalid_share, retrain=args.train),
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.options import config_from_args
    from benchmarks.replay import run_bench, run_latency_bench, run_rss_bench

    settings = _settings(args)
    config = config_from_args(args, bootstrap=settings.bootstrap_servers)
    if config.latency_only:
        run_latency_bench(config)
    elif config.rss_only:
        run_rss_bench(config)
    else:
        run_bench(config)
    return 0


def _cmd_bench_delivery(args: argparse.Namespace) -> int:
    from benchmarks.delivery import config_from_args, run_delivery_bench

    settings = _settings(args)
    run_delivery_bench(config_from_args(args, bootstrap=settings.bootstrap_servers))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="streamscore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the scoring dataflow")
    _settings_flags(run, "kafka", "state", "model", "deployment", "metrics", "delivery")
    run.add_argument("-w", "--workers-per-process", type=int, default=1)
    run.add_argument("-i", "--process-id", type=int, default=None)
    run.add_argument("-a", "--addresses", help="host:port of every process, ';'-separated")
    run.add_argument(
        "--epoch-interval",
        type=float,
        default=None,
        help="seconds (default 10; 1 with exactly-once delivery)",
    )
    run.add_argument("--until-eof", action="store_true", help="stop at the end of the input")
    run.add_argument(
        "--rebuild-state",
        action="store_true",
        help="delete the state and recovery store first; rebuild by replaying the inputs",
    )
    run.set_defaults(func=_cmd_run)

    topics = sub.add_parser("topics", help="create the contract's topics")
    _settings_flags(topics, "kafka", "topics")
    topics.add_argument("--recreate", action="store_true", help="delete and create them anew")
    topics.set_defaults(func=_cmd_topics)

    produce = sub.add_parser("produce", help="replay synthetic transactions into Kafka")
    _settings_flags(produce, "kafka")
    produce.add_argument("--count", type=int, default=10_000)
    produce.add_argument("--seed", type=int, default=7)
    produce.add_argument("--cards", type=int, default=2_000)
    produce.add_argument("--rate", type=float, default=0.0, help="events/s; 0: unpaced")
    produce.add_argument("--invalid-share", type=float, default=0.0)
    produce.add_argument(
        "--event-rate", type=float, default=200.0, help="simulated events per second of event time"
    )
    produce.set_defaults(func=_cmd_produce)

    train = sub.add_parser(
        "train",
        help="train a model on recorded history (topics or JSONL; default: the realistic "
        "simulator) and write ONNX, manifest and evaluation.png",
    )
    _settings_flags(train, "kafka")
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    train.add_argument("--version", type=int, default=1)
    train.add_argument("--seed", type=int, default=11, help="model fitting seed")
    train.add_argument("--trees", type=int, default=150)
    source = train.add_mutually_exclusive_group()
    source.add_argument(
        "--from-topics",
        action="store_true",
        help="read the transactions and chargebacks topics over --since/--until",
    )
    source.add_argument("--transactions", type=Path, help="JSONL file, one transaction a line")
    train.add_argument("--chargebacks", type=Path, help="JSONL file, one chargeback a line")
    train.add_argument("--since", help="start of the range (RFC 3339), record timestamps")
    train.add_argument("--until", help="end of the range (RFC 3339, exclusive)")
    train.add_argument(
        "--label-horizon-days",
        type=float,
        default=14.0,
        help="a chargeback within this long of its transaction labels it fraud",
    )
    train.add_argument("--review-budget", type=int, default=10, help="cards reviewed a day (k)")
    train.add_argument("--sim-seed", type=int, default=7)
    train.add_argument("--sim-cards", type=int, default=4_000)
    train.add_argument("--sim-days", type=float, default=42.0)
    train.add_argument("--sim-txns-per-card-day", type=float, default=3.0)
    train.add_argument("--no-report", action="store_true", help="skip evaluation.png")
    train.set_defaults(func=_cmd_train)

    simulate = sub.add_parser(
        "simulate", help="write realistic simulated history as JSONL (transactions, chargebacks)"
    )
    simulate.add_argument("--out", type=Path, required=True, help="directory to write")
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument("--cards", type=int, default=4_000)
    simulate.add_argument("--days", type=float, default=42.0)
    simulate.add_argument("--txns-per-card-day", type=float, default=3.0)
    simulate.add_argument("--fraud-share", type=float, default=0.002)
    simulate.set_defaults(func=_cmd_simulate)

    schemas = sub.add_parser("schemas", help="export JSON Schemas of the wire records")
    schemas.add_argument("--out", type=Path, default=Path("schemas/json"))
    schemas.set_defaults(func=_cmd_schemas)

    demo = sub.add_parser("demo", help="end to end: topics, flow, replay, what came out")
    _settings_flags(demo, "kafka", "topics", "model", "metrics")
    demo.add_argument("--count", type=int, default=5_000)
    demo.add_argument("--invalid-share", type=float, default=0.01)
    demo.add_argument("--train", action="store_true", help="retrain the model first")
    demo.set_defaults(func=_cmd_demo)

    from benchmarks.options import add_arguments as add_bench_arguments

    bench = sub.add_parser("bench", help="replay benchmark on the broker: throughput, latency, RSS")
    _settings_flags(bench, "kafka")
    add_bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)

    from benchmarks.delivery import add_arguments as add_delivery_arguments

    delivery = sub.add_parser(
        "bench-delivery", help="at-least-once vs exactly-once: throughput, latency per epoch"
    )
    _settings_flags(delivery, "kafka")
    add_delivery_arguments(delivery)
    delivery.set_defaults(func=_cmd_bench_delivery)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamscore`` console script."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except StreamScoreError as exc:
        print(f"streamscore: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
