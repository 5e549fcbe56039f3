"""load_settings: environment, overrides, and ConfigError naming the setting."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from schemas.errors import ConfigError, StreamScoreError
from schemas.settings import DEFAULT_MODEL, Settings, TopicNames, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STREAMSCORE_* variable of the caller's shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMSCORE_"):
            monkeypatch.delenv(name)


def _config_error(**overrides: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    return info.value


def test_defaults_follow_the_contract() -> None:
    settings = load_settings()
    assert settings.topics == TopicNames()
    assert settings.topics.dead_letters == "dead-letters"
    assert settings.topics.window_aggregates == "window-aggregates"
    assert settings.model_dir == DEFAULT_MODEL
    assert settings.brokers == ["127.0.0.1:9092"]


def test_reads_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_BOOTSTRAP_SERVERS", "kafka-1:9092, kafka-2:19092")
    monkeypatch.setenv("STREAMSCORE_METRICS_PORT", "9200")
    monkeypatch.setenv("STREAMSCORE_SHARDS", "32")
    monkeypatch.setenv("STREAMSCORE_STATE_DIR", "/var/lib/streamscore")
    settings = load_settings()
    assert settings.brokers == ["kafka-1:9092", "kafka-2:19092"]
    assert settings.metrics_port == 9200
    assert settings.shards == 32
    assert settings.state_dir == Path("/var/lib/streamscore")


def test_reads_nested_topic_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_TOPICS__SCORES", "scores-v2")
    settings = load_settings()
    assert settings.topics.scores == "scores-v2"
    # The other topics keep their contract names.
    assert settings.topics.transactions == "transactions"
    assert settings.topics.dead_letters == "dead-letters"


def test_explicit_overrides_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_METRICS_PORT", "9200")
    monkeypatch.setenv("STREAMSCORE_SHARDS", "32")
    settings = load_settings(metrics_port=9300)
    assert settings.metrics_port == 9300
    assert settings.shards == 32


def test_none_override_means_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_METRICS_PORT", "9200")
    assert load_settings(metrics_port=None).metrics_port == 9200


def test_bad_env_value_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_METRICS_PORT", "not-a-port")
    err = _config_error()
    assert isinstance(err, StreamScoreError)
    assert "STREAMSCORE_METRICS_PORT" in str(err)
    assert "STREAMSCORE_METRICS_PORT" in err.setting


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("STREAMSCORE_METRICS_PORT", "70000"),
        ("STREAMSCORE_SHARDS", "0"),
        ("STREAMSCORE_MAX_MESSAGE_BYTES", "10"),
        ("STREAMSCORE_TOPIC_PARTITIONS", "-1"),
        ("STREAMSCORE_SOURCE_LINGER_MS", "-1"),
        ("STREAMSCORE_SOURCE_LINGER_MS", "1001"),
    ],
)
def test_out_of_range_env_value_names_the_env_var(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str
) -> None:
    monkeypatch.setenv(env, value)
    assert env in str(_config_error())


def test_bad_nested_env_value_names_the_nested_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_TOPICS__SCORES", "scores with spaces")
    err = _config_error()
    assert "STREAMSCORE_TOPICS__SCORES" in str(err)


def test_bad_override_names_the_setting() -> None:
    err = _config_error(metrics_port=-1)
    assert "STREAMSCORE_METRICS_PORT" in str(err)
    assert "--metrics-port" in str(err)


def test_every_bad_setting_is_reported() -> None:
    err = _config_error(metrics_port=-1, shards=0)
    assert "STREAMSCORE_METRICS_PORT" in str(err)
    assert "STREAMSCORE_SHARDS" in str(err)
    assert len(err.problems) == 2


def test_a_backlog_batch_below_the_batch_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMSCORE_SOURCE_BATCH_SIZE", "500")
    monkeypatch.setenv("STREAMSCORE_SOURCE_BACKLOG_BATCH_SIZE", "400")
    err = _config_error()
    assert "STREAMSCORE_SOURCE_BACKLOG_BATCH_SIZE" in str(err)
    assert "at least STREAMSCORE_SOURCE_BATCH_SIZE (500)" in str(err)
    monkeypatch.setenv("STREAMSCORE_SOURCE_BACKLOG_BATCH_SIZE", "500")
    assert load_settings().backlog_batch_size() == 500
    # Unset, it follows a batch size raised above its default instead of refusing it.
    monkeypatch.delenv("STREAMSCORE_SOURCE_BACKLOG_BATCH_SIZE")
    monkeypatch.setenv("STREAMSCORE_SOURCE_BATCH_SIZE", "6000")
    assert load_settings().backlog_batch_size() == 6000


def test_unknown_setting_is_rejected() -> None:
    assert "STREAMSCORE_NO_SUCH_SETTING" in str(_config_error(no_such_setting=1))


@pytest.mark.parametrize(
    "bootstrap",
    [
        "localhost",
        "localhost:",
        ":9092",
        "localhost:abc",
        "localhost:0",
        "localhost:65536",
        "a:9092,b",
        "a:9092,,b:9092",
        "",
    ],
)
def test_bad_bootstrap_format_is_rejected(bootstrap: str) -> None:
    assert "STREAMSCORE_BOOTSTRAP_SERVERS" in str(_config_error(bootstrap_servers=bootstrap))


@pytest.mark.parametrize(
    ("bootstrap", "brokers"),
    [
        ("kafka:9092", ["kafka:9092"]),
        ("a:1,b:65535", ["a:1", "b:65535"]),
        ("[::1]:9092", ["[::1]:9092"]),
    ],
)
def test_good_bootstrap_formats_are_accepted(bootstrap: str, brokers: list[str]) -> None:
    assert load_settings(bootstrap_servers=bootstrap).brokers == brokers


def test_bad_bootstrap_from_env_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_BOOTSTRAP_SERVERS", "no-port-here")
    assert "STREAMSCORE_BOOTSTRAP_SERVERS" in str(_config_error())


def test_model_dir_without_manifest_is_rejected(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMSCORE_MODEL_DIR", str(tmp_path))
    err = _config_error()
    assert "STREAMSCORE_MODEL_DIR" in str(err)
    assert str(tmp_path) in str(err)


def test_model_dir_with_manifest_is_accepted(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model_dir)
    assert load_settings(model_dir=model_dir).model_dir == model_dir


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.shards = 3  # type: ignore[misc]
    assert isinstance(settings, Settings)
