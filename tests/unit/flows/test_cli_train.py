"""`streamscore simulate` and `streamscore train` from JSONL: files written, errors named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main


def test_simulate_writes_jsonl_and_train_names_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "history"
    assert main(["simulate", "--out", str(out), "--cards", "200", "--days", "2"]) == 0
    txns = (out / "transactions.jsonl").read_text().splitlines()
    cbs = (out / "chargebacks.jsonl").read_text().splitlines()
    assert len(txns) > 1_000
    assert all(json.loads(line)["event_id"].startswith("tx-") for line in txns)
    assert all(json.loads(line)["event_id"].startswith("cb-") for line in cbs)
    capsys.readouterr()

    # Two days cannot cover a day of warm-up plus a 14-day label horizon.
    code = main(
        [
            "train",
            "--transactions", str(out / "transactions.jsonl"),
            "--chargebacks", str(out / "chargebacks.jsonl"),
            "--out", str(tmp_path / "model"),
        ]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "--label-horizon-days" in err and "record more than 15 days" in err
    assert not (tmp_path / "model").exists()


def test_train_refuses_a_bad_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--from-topics", "--since", "yesterday", "--until", "today",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 2
    assert "--since/--until" in capsys.readouterr().err
    code = main(["simulate", "--out", str(tmp_path), "--days", "0"])
    assert code == 2
    assert "positive" in capsys.readouterr().err
