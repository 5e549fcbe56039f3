"""A simulated history with every kind of reject mixed in, for the training-features test."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from models.history import Recorded, from_simulation
from models.realistic import RealisticConfig, simulate_realistic
from models.train import Dataset
from schemas.timefmt import format_ms, parse_event_time

SIM = RealisticConfig(
    cards=800, days=5, fraud_share=0.02, chargeback_delay_days=1.0, max_chargeback_delay_days=2.0
)


def history() -> Recorded:
    """The simulation, plus invalid records, duplicates and late copies every 97th record."""
    recorded = from_simulation(simulate_realistic(SIM), "fixture")
    out = []
    offsets = {"transaction": 0, "chargeback": 0}
    for i, rec in enumerate(recorded.records):
        extra = []
        if i % 97 == 0 and rec.kind == "transaction":
            body = json.loads(rec.value)
            hour_ago = format_ms(parse_event_time(body["event_time"]) - 3_600_000)
            late = {**body, "event_id": f"late-{i}", "event_time": hour_ago}
            extra = [
                b"{not json",
                b'{"event_id": "x", "amount": -1}',
                rec.value,  # a duplicate
                json.dumps(late).encode(),
            ]
        for value in [rec.value, *extra]:
            out.append(replace(rec, offset=offsets[rec.kind], value=value))
            offsets[rec.kind] += 1
    return replace(recorded, records=out)


def digests(data: Dataset) -> dict[str, object]:
    """sha256 of each array of a dataset, and its sizes."""

    def sha(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    return {
        "rows": len(data.y),
        "frauds": int(data.y.sum()),
        "dead_letters": data.dead_letters,
        "x": sha(data.x.tobytes()),
        "y": sha(data.y.tobytes()),
        "event_times": sha(data.event_times.tobytes()),
        "cards": sha("\n".join(data.cards).encode()),
    }
