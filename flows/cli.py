"""The ``streamscore`` command: run the flow, manage topics, replay traffic, train, demo.

Every subcommand reads the same settings (flags over ``STREAMSCORE_*`` env vars
over defaults) and exits with status 2 and a message naming the setting when
one is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from schemas.errors import StreamScoreError
from schemas.settings import Settings, load_settings

log = logging.getLogger("streamscore")


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", help="Kafka host:port list")
    parser.add_argument("--state-dir", type=Path, help="RocksDB state directory")
    parser.add_argument(
        "--recovery-dir", type=Path, help="bytewax recovery partitions (enables crash recovery)"
    )
    parser.add_argument("--model-dir", type=Path, help="model directory with manifest.json")
    parser.add_argument("--shadow-model-dir", type=Path, help="shadow model (never decides)")
    parser.add_argument("--canary-model-dir", type=Path, help="canary model for a share of cards")
    parser.add_argument("--canary-share", type=float, help="share of cards for the canary")
    parser.add_argument("--metrics-host", help="address the metrics endpoint binds to")
    parser.add_argument("--metrics-port", type=int, help="metrics port (0: no endpoint)")
    parser.add_argument("--topic-partitions", type=int, help="partitions of created topics")


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
    )
    given = {k: getattr(args, k, None) for k in keys}
    return load_settings(**given)


def _cmd_run(args: argparse.Namespace) -> int:
    from bytewax.run import cli_main

    from flows.main import start_service
    from flows.recovery import prepare_recovery
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
    cli_main(  # type: ignore[no-untyped-call]
        flow,
        workers_per_process=args.workers_per_process,
        process_id=args.process_id,
        addresses=addresses,
        epoch_interval=timedelta(seconds=args.epoch_interval),
        recovery_config=recovery,
    )
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from flows.tooling import contract_topics, create_topics

    settings = _settings(args)
    topics = contract_topics(settings.topics)
    create_topics(
        settings.bootstrap_servers, topics, settings.topic_partitions, recreate=args.recreate
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
    sent = publish(settings.bootstrap_servers, settings.topics, replay_records(config), args.rate)
    print(
        f"published {sent} records to {settings.topics.transactions} "
        f"and {settings.topics.chargebacks}"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from models.train import TrainConfig, train

    config = TrainConfig(version=args.version, seed=args.seed, events=args.events)
    manifest = train(config, args.out)
    print(json.dumps({"model_version": manifest.model_version, **manifest.metrics}, indent=2))
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="streamscore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the scoring dataflow")
    _settings_flags(run)
    run.add_argument("-w", "--workers-per-process", type=int, default=1)
    run.add_argument("-i", "--process-id", type=int, default=None)
    run.add_argument("-a", "--addresses", help="host:port of every process, ';'-separated")
    run.add_argument("--epoch-interval", type=float, default=10.0, help="seconds")
    run.add_argument("--until-eof", action="store_true", help="stop at the end of the input")
    run.add_argument(
        "--rebuild-state",
        action="store_true",
        help="delete the state and recovery store first; rebuild by replaying the inputs",
    )
    run.set_defaults(func=_cmd_run)

    topics = sub.add_parser("topics", help="create the contract's topics")
    _settings_flags(topics)
    topics.add_argument("--recreate", action="store_true", help="delete and create them anew")
    topics.set_defaults(func=_cmd_topics)

    produce = sub.add_parser("produce", help="replay synthetic transactions into Kafka")
    _settings_flags(produce)
    produce.add_argument("--count", type=int, default=10_000)
    produce.add_argument("--seed", type=int, default=7)
    produce.add_argument("--cards", type=int, default=2_000)
    produce.add_argument("--rate", type=float, default=0.0, help="events/s; 0: unpaced")
    produce.add_argument("--invalid-share", type=float, default=0.0)
    produce.add_argument(
        "--event-rate", type=float, default=200.0, help="simulated events per second of event time"
    )
    produce.set_defaults(func=_cmd_produce)

    train = sub.add_parser("train", help="train a model and write ONNX + manifest")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--version", type=int, default=1)
    train.add_argument("--seed", type=int, default=11)
    train.add_argument("--events", type=int, default=60_000)
    train.set_defaults(func=_cmd_train)

    schemas = sub.add_parser("schemas", help="export JSON Schemas of the wire records")
    schemas.add_argument("--out", type=Path, default=Path("schemas/json"))
    schemas.set_defaults(func=_cmd_schemas)

    demo = sub.add_parser("demo", help="end to end: topics, flow, replay, what came out")
    _settings_flags(demo)
    demo.add_argument("--count", type=int, default=5_000)
    demo.add_argument("--invalid-share", type=float, default=0.01)
    demo.add_argument("--train", action="store_true", help="retrain the model first")
    demo.set_defaults(func=_cmd_demo)

    from benchmarks.options import add_arguments as add_bench_arguments

    bench = sub.add_parser("bench", help="replay benchmark on the broker: throughput, latency, RSS")
    bench.add_argument("--bootstrap-servers", help="Kafka host:port list")
    add_bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)
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
