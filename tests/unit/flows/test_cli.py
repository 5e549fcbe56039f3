"""The ``streamscore`` CLI offers each subcommand only the settings flags it reads."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from flows import cli
from schemas.settings import DEFAULT_MODEL, Settings

# Every flag that sets a field of Settings, with a valid value and what the field becomes.
SETTINGS_FLAGS: dict[str, tuple[str, object]] = {
    "--bootstrap-servers": ("broker-a:9093", "broker-a:9093"),
    "--topic-partitions": ("7", 7),
    "--state-dir": ("/tmp/ss-state", Path("/tmp/ss-state")),
    "--recovery-dir": ("/tmp/ss-recovery", Path("/tmp/ss-recovery")),
    "--model-dir": (str(DEFAULT_MODEL), DEFAULT_MODEL),
    "--shadow-model-dir": (str(DEFAULT_MODEL), DEFAULT_MODEL),
    "--canary-model-dir": (str(DEFAULT_MODEL), DEFAULT_MODEL),
    "--canary-share": ("0.25", 0.25),
    "--metrics-host": ("0.0.0.0", "0.0.0.0"),
    "--metrics-port": ("9200", 9200),
    "--delivery": ("exactly-once", "exactly-once"),
    "--flow-name": ("payments", "payments"),
}

# What each subcommand reads from Settings, and so the settings flags it may offer.
EXPECTED: dict[str, set[str]] = {
    "run": {
        "--bootstrap-servers",
        "--state-dir",
        "--recovery-dir",
        "--model-dir",
        "--shadow-model-dir",
        "--canary-model-dir",
        "--canary-share",
        "--metrics-host",
        "--metrics-port",
        "--delivery",
        "--flow-name",
    },
    "topics": {"--bootstrap-servers", "--topic-partitions"},
    "produce": {"--bootstrap-servers"},
    "train": {"--bootstrap-servers"},
    "simulate": set(),
    "schemas": set(),
    "demo": {
        "--bootstrap-servers",
        "--topic-partitions",
        "--model-dir",
        "--metrics-host",
        "--metrics-port",
    },
    "bench": {"--bootstrap-servers"},
    "bench-delivery": {"--bootstrap-servers"},
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _settings_fields() -> set[str]:
    return set(Settings.model_fields)


def test_every_subcommand_is_covered() -> None:
    assert set(_subparsers()) == set(EXPECTED)


def test_every_settings_flag_is_known() -> None:
    # A flag whose dest is a Settings field must be in SETTINGS_FLAGS, so the
    # tests below cover it.
    fields = _settings_fields()
    for name, parser in _subparsers().items():
        for action in parser._actions:
            if action.dest in fields:
                assert set(action.option_strings) <= set(SETTINGS_FLAGS), (name, action.dest)


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_subcommand_offers_only_the_settings_it_reads(command: str) -> None:
    offered = _options(_subparsers()[command]) & set(SETTINGS_FLAGS)
    assert offered == EXPECTED[command]


@pytest.mark.parametrize(
    "command", ["topics", "produce", "train", "schemas", "bench", "bench-delivery"]
)
def test_help_lists_no_model_state_recovery_canary_or_metrics_option(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    for flag in ("--model-dir", "--state-dir", "--recovery-dir", "--canary", "--metrics"):
        assert flag not in shown, (command, flag)


@pytest.mark.parametrize(
    ("command", "flag"),
    [(c, f) for c, flags in sorted(EXPECTED.items()) for f in sorted(flags)],
)
def test_each_offered_flag_reaches_the_settings(command: str, flag: str) -> None:
    value, expected = SETTINGS_FLAGS[flag]
    required = ["--out", "x"] if command == "train" else []
    args = cli.build_parser().parse_args([command, *required, flag, value])
    settings = cli._settings(args)
    dest = flag.removeprefix("--").replace("-", "_")
    assert getattr(settings, dest) == expected


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        (c, f)
        for c in sorted(EXPECTED)
        for f in sorted(set(SETTINGS_FLAGS) - EXPECTED[c])
        if c not in ("train", "schemas", "simulate")  # they require --out first
    ],
)
def test_a_flag_the_subcommand_does_not_read_is_refused(
    command: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    value, _ = SETTINGS_FLAGS[flag]
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args([command, flag, value])
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
