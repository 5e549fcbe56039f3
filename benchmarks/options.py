"""Options of ``streamscore bench``: one frozen config and its command-line flags.

Kept free of heavy imports so building the CLI parser stays cheap.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_arguments(parser)
>>> config_from_args(parser.parse_args(["--events", "5000"]), bootstrap="127.0.0.1:9092").events
5000
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUT = Path(".local/bench/result.json")


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One benchmark run: data size, offered rate, time limits, where results go."""

    bootstrap: str
    events: int = 1_000_000
    partitions: int = 2
    cards: int = 100_000
    seed: int = 7
    rate: float = 10_000.0
    latency_seconds: float = 30.0
    latency_warmup_s: float = 5.0
    latency_processes: int = 1
    # Consecutive latency runs at ``rate`` (the p99 target must hold in each), then one run
    # of ``cluster_processes`` processes at ``cluster_rate`` (0 processes skips it).
    latency_runs: int = 5
    # --latency-only: seconds at ``rate`` through the broker alone before the runs (0: none).
    broker_warmup_s: float = 15.0
    cluster_rate: float = 25_000.0
    cluster_processes: int = 2
    phase_timeout_s: float = 120.0
    out: Path = DEFAULT_OUT
    keep_topics: bool = False
    # Only the latency phase: no preload, no throughput phases, no chart.
    latency_only: bool = False
    # The whole-pipeline RSS phase: distinct cards (0 skips it), its transactions (0: one a
    # card) and its own time limit; rss_only runs it alone.
    rss_cards: int = 1_000_000
    rss_events: int = 0
    rss_timeout_s: float = 600.0
    rss_only: bool = False

    @property
    def rss_transactions(self) -> int:
        """Transactions of the RSS phase: ``rss_events``, or one for every card."""
        return self.rss_events or self.rss_cards

    @property
    def chart(self) -> Path:
        """The PNG chart, next to the JSON."""
        return self.out.with_suffix(".png")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"must be at least 1, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        msg = f"must be greater than 0, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        msg = f"must be 0 or more, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        msg = f"must be 0 or more, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's flags (defaults: the full run of the performance issue)."""
    d = BenchConfig(bootstrap="")
    parser.add_argument(
        "--events", type=_positive_int, default=d.events, help="transactions preloaded"
    )
    parser.add_argument(
        "--partitions", type=_positive_int, default=d.partitions, help="partitions of every topic"
    )
    parser.add_argument(
        "--cards", type=_positive_int, default=d.cards, help="distinct simulated cards"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="simulator seed")
    parser.add_argument(
        "--rate", type=_positive_float, default=d.rate, help="offered events/s in the latency run"
    )
    parser.add_argument(
        "--latency-seconds",
        type=_positive_float,
        default=d.latency_seconds,
        help="measured seconds of the latency run",
    )
    parser.add_argument(
        "--latency-warmup",
        type=_non_negative_float,
        default=d.latency_warmup_s,
        help="seconds offered before latencies count",
    )
    parser.add_argument(
        "--latency-processes",
        type=_positive_int,
        default=d.latency_processes,
        help="pipeline processes in the latency run",
    )
    parser.add_argument(
        "--latency-runs",
        type=_positive_int,
        default=d.latency_runs,
        help="consecutive latency runs at --rate (the p99 target must hold in each)",
    )
    parser.add_argument(
        "--broker-warmup",
        type=_non_negative_float,
        default=d.broker_warmup_s,
        help="with --latency-only: seconds at --rate through the broker alone before the runs, "
        "reported as its round trip (0 skips it)",
    )
    parser.add_argument(
        "--cluster-rate",
        type=_positive_float,
        default=d.cluster_rate,
        help="offered events/s in the cluster latency run",
    )
    parser.add_argument(
        "--cluster-processes",
        type=_non_negative_int,
        default=d.cluster_processes,
        help="pipeline processes in the cluster latency run (0 skips it)",
    )
    parser.add_argument(
        "--phase-timeout",
        type=_positive_float,
        default=d.phase_timeout_s,
        help="seconds one throughput phase may take; then its partial figure is reported",
    )
    parser.add_argument(
        "--out", type=Path, default=d.out, help="JSON result (the PNG chart goes next to it)"
    )
    parser.add_argument(
        "--keep-topics", action="store_true", help="do not delete the benchmark's topics"
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--latency-only",
        action="store_true",
        help="run only the latency phase (no preload, no throughput phases); figures to --out",
    )
    parser.add_argument(
        "--rss-cards",
        type=_non_negative_int,
        default=d.rss_cards,
        help="distinct cards of the whole-pipeline RSS phase (0 skips the phase)",
    )
    parser.add_argument(
        "--rss-events",
        type=_non_negative_int,
        default=d.rss_events,
        help="transactions of the RSS phase, cards in turn (default: one a card)",
    )
    parser.add_argument(
        "--rss-timeout",
        type=_positive_float,
        default=d.rss_timeout_s,
        help="seconds the RSS phase's pipeline may take; then its partial figure is reported",
    )
    only.add_argument(
        "--rss-only",
        action="store_true",
        help="run only the whole-pipeline RSS phase with --rss-cards cards; figures to --out",
    )


def config_from_args(args: argparse.Namespace, *, bootstrap: str) -> BenchConfig:
    """The config the parsed flags describe."""
    return BenchConfig(
        bootstrap=bootstrap,
        events=args.events,
        partitions=args.partitions,
        cards=args.cards,
        seed=args.seed,
        rate=args.rate,
        latency_seconds=args.latency_seconds,
        latency_warmup_s=args.latency_warmup,
        latency_processes=args.latency_processes,
        latency_runs=args.latency_runs,
        broker_warmup_s=args.broker_warmup,
        cluster_rate=args.cluster_rate,
        cluster_processes=args.cluster_processes,
        phase_timeout_s=args.phase_timeout,
        out=args.out,
        keep_topics=args.keep_topics,
        latency_only=args.latency_only,
        rss_cards=args.rss_cards,
        rss_events=args.rss_events,
        rss_timeout_s=args.rss_timeout,
        rss_only=args.rss_only,
    )
