"""Drift flags of a model's monitor on fresh realistic traffic, from a cold start.

Simulates ``--days`` of the realistic profile (another seed than training),
replays it through the serving operators, scores it with the model and feeds
the drift monitor in batches, as the flow does. Prints how many records were
flagged per signal, the first flagged event per signal and the warming-up
records, as JSON.

    .venv/bin/python -m benchmarks.drift_realistic --days 8 --window-events 2000
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from models.history import from_simulation
from models.onnx_scorer import load_model
from models.realistic import RealisticConfig, simulate_realistic
from models.train import dataset
from operators.card_features import DAY
from operators.drift import DriftConfig, DriftMonitor, DriftSample
from operators.features import ALL_FEATURES
from operators.watermarks import TimeConfig
from schemas.settings import DEFAULT_MODEL


def main() -> None:
    """Parse flags, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--days", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--no-cycles", action="store_true", help="stationary traffic")
    parser.add_argument("--window-events", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()

    model = load_model(args.model_dir)
    manifest = model.manifest
    sim = RealisticConfig(
        seed=args.seed,
        days=args.days,
        daily_cycle=not args.no_cycles,
        weekly_cycle=not args.no_cycles,
    )
    recorded = from_simulation(simulate_realistic(sim), "bench")
    data = dataset(recorded, time=TimeConfig(), label_horizon_ms=14 * DAY)
    monitor = DriftMonitor(DriftConfig(topic="drift", window_events=args.window_events), manifest)
    flags: Counter[str] = Counter()
    warming: Counter[str] = Counter()
    first: dict[str, int] = {}
    for start in range(0, len(data.y), args.batch):
        rows = data.x[start : start + args.batch]
        sample = DriftSample(
            manifest.model_version,
            ALL_FEATURES,
            rows.astype(np.float64),
            model.predict(rows),
            data.event_times[start : start + args.batch],
        )
        for stat in monitor.observe(sample, manifest):
            if stat.drift:
                flags[stat.signal] += 1
                first.setdefault(stat.signal, start + len(rows))
            warming[stat.signal] += stat.warming_up
    print(
        json.dumps(
            {
                "model_version": manifest.model_version,
                "events": len(data.y),
                "days": args.days,
                "cycles": not args.no_cycles,
                "window_events": args.window_events,
                "flagged_records": sum(flags.values()),
                "flags_by_signal": dict(flags),
                "first_flag_at_event": first,
                "warming_up_records": dict(warming),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
