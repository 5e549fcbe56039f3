"""Training's features come from the serving flow and equal the pinned dataset, bit for bit.

``train_features.json`` holds the digests of the dataset of :func:`train_history.history`
as an independent wiring of the same operators computed it (named in the file);
training now runs the history through ``build_flow`` (:mod:`flows.testing`), so a
retrained model sees exactly the rows it did.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.train import dataset
from operators.watermarks import TimeConfig
from tests.unit.models.train_history import digests, history

FIXTURE = Path(__file__).with_name("train_features.json")


def test_training_dataset_equals_the_pinned_one() -> None:
    want = json.loads(FIXTURE.read_text())
    data = dataset(
        history(),
        time=TimeConfig(max_future_ms=want["time"]["max_future_ms"]),
        label_horizon_ms=want["label_horizon_ms"],
    )
    got = digests(data)
    assert got["dead_letters"] == want["dead_letters"] > 0
    assert got["rows"] == want["rows"]
    assert got["frauds"] == want["frauds"] > 0
    for name in ("x", "y", "event_times", "cards"):
        assert got[name] == want[name], name
