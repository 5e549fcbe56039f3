"""The service over SASL_SSL (SCRAM-SHA-512, TLS with a test CA) with ACLs, on a real broker.

One broker for the module (tests/integration/secure_kafka.py). The flow runs as
``scorer``, which may read the inputs and write the outputs; ``reader`` may write
every output but ``scores``; ``admin`` (a super user) runs ``streamscore topics``
and ``streamscore produce``. The test's own producer and reader use the broker's
set-up listener. Every check also looks for the password in what the process
printed and in what it wrote to Kafka.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AclOperation

from benchmarks.replay import pipeline_env
from flows.tooling import INVALID_SAMPLES, contract_topics
from schemas.settings import TopicNames
from tests.conftest import ROOT
from tests.integration.crash_helpers import simulated_log
from tests.integration.kafka_helpers import produce, read_all
from tests.integration.secure_kafka import SecureBroker, start_secure_broker

pytestmark = pytest.mark.integration

SCORER_PASSWORD = "scorer-" + uuid.uuid4().hex
READER_PASSWORD = "reader-" + uuid.uuid4().hex
WRONG_PASSWORD = "wrong-" + uuid.uuid4().hex
ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex
GROUP = "streamscore-scoring"  # the source's consumer group (offsets for monitoring)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    started = start_secure_broker(tmp_path_factory.mktemp("secure-kafka"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def topics(broker: SecureBroker) -> TopicNames:
    suffix = uuid.uuid4().hex[:8]
    names = TopicNames(**{k: f"{v}-{suffix}" for k, v in TopicNames().model_dump().items()})
    every = contract_topics(names)
    inputs, outputs = every[:2], every[2:]
    broker.create_topics(every)
    broker.add_user("scorer", SCORER_PASSWORD)
    broker.allow("scorer", AclOperation.READ, inputs)
    broker.allow("scorer", AclOperation.WRITE, outputs)
    broker.allow_group("scorer", GROUP)
    broker.add_user("reader", READER_PASSWORD)
    broker.allow("reader", AclOperation.READ, inputs)
    broker.allow("reader", AclOperation.WRITE, [t for t in outputs if t != names.scores])
    broker.allow_group("reader", GROUP)
    return names


def _env(broker: SecureBroker, topics: TopicNames, state: Path, user: str) -> dict[str, str]:
    env = pipeline_env(broker.bootstrap, topics, state)
    env.update(
        STREAMSCORE_SECURITY_PROTOCOL="SASL_SSL",
        STREAMSCORE_SASL_MECHANISM="SCRAM-SHA-512",
        STREAMSCORE_SASL_USERNAME=user,
        STREAMSCORE_SSL_CA_FILE=str(broker.ca_file),
        STREAMSCORE_STARTUP_WAIT_S="30",
    )
    return env


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--until-eof"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_the_flow_scores_end_to_end_over_sasl_ssl(
    broker: SecureBroker, topics: TopicNames, tmp_path: Path
) -> None:
    valid = simulated_log(53, 200)
    key: bytes | None = b"c-x"
    invalid = [(key, value) for _, value in INVALID_SAMPLES]
    produce(broker.internal, topics.transactions, [*valid, *invalid])
    secret_file = tmp_path / "sasl-password"
    secret_file.write_text(SCORER_PASSWORD + "\n")
    env = _env(broker, topics, tmp_path / "state", "scorer")
    env["STREAMSCORE_SASL_PASSWORD_FILE"] = str(secret_file)

    done = _run(env)

    assert done.returncode == 0, done.stderr[-3000:]
    scores = read_all(broker.internal, topics.scores, expect=len(valid))
    assert sorted(s["event_id"] for s in scores) == sorted(
        json.loads(v)["event_id"] for _, v in valid
    )
    dead = read_all(broker.internal, topics.dead_letters, expect=len(invalid))
    assert len(dead) == len(invalid)
    for text in (done.stdout, done.stderr, json.dumps(scores), json.dumps(dead)):
        assert SCORER_PASSWORD not in text


def test_wrong_credentials_fail_at_startup_naming_the_setting_not_the_secret(
    broker: SecureBroker, topics: TopicNames, tmp_path: Path
) -> None:
    env = _env(broker, topics, tmp_path / "state", "scorer")
    env["STREAMSCORE_SASL_PASSWORD"] = WRONG_PASSWORD

    done = _run(env)

    assert done.returncode == 2, done.stderr[-3000:]
    assert "invalid setting STREAMSCORE_SASL_PASSWORD:" in done.stderr
    assert "refused the SASL login of user 'scorer'" in done.stderr
    assert "Traceback" not in done.stderr
    assert WRONG_PASSWORD not in done.stderr + done.stdout


def test_a_principal_that_may_not_write_scores_is_refused_at_startup(
    broker: SecureBroker, topics: TopicNames, tmp_path: Path
) -> None:
    env = _env(broker, topics, tmp_path / "state", "reader")
    env["STREAMSCORE_SASL_PASSWORD"] = READER_PASSWORD

    done = _run(env)

    assert done.returncode == 2, done.stderr[-3000:]
    assert "invalid setting STREAMSCORE_SASL_USERNAME:" in done.stderr
    assert f"User:reader may not write to topic '{topics.scores}'" in done.stderr
    assert "Traceback" not in done.stderr
    assert READER_PASSWORD not in done.stderr + done.stdout


def test_a_ca_file_that_is_no_certificate_is_one_line_naming_the_setting(
    broker: SecureBroker, topics: TopicNames, tmp_path: Path
) -> None:
    env = _env(broker, topics, tmp_path / "state", "scorer")
    env["STREAMSCORE_SASL_PASSWORD"] = SCORER_PASSWORD
    env["STREAMSCORE_SSL_CA_FILE"] = str(ROOT / "pyproject.toml")

    done = _run(env)

    assert done.returncode == 2, done.stderr[-3000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("streamscore:")]
    assert len(lines) == 1 and "invalid setting STREAMSCORE_SSL_CA_FILE:" in lines[0]
    assert "Traceback" not in done.stderr
    assert SCORER_PASSWORD not in done.stderr


def test_topics_and_produce_work_over_sasl_ssl(broker: SecureBroker, tmp_path: Path) -> None:
    broker.add_user("admin", ADMIN_PASSWORD)
    suffix = uuid.uuid4().hex[:8]
    names = TopicNames(**{k: f"{v}-{suffix}" for k, v in TopicNames().model_dump().items()})
    env = _env(broker, names, tmp_path / "state", "admin")
    env["STREAMSCORE_SASL_PASSWORD"] = ADMIN_PASSWORD
    cli = [sys.executable, "-m", "flows.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    made = run("topics")
    assert made.returncode == 0, made.stderr[-2000:]
    admin = broker.admin()
    assert set(contract_topics(names)) <= set(admin.list_topics(timeout=10).topics)
    sent = run("produce", "--count", "40")
    assert sent.returncode == 0, sent.stderr[-2000:]
    count = int(sent.stdout.split()[1])
    txns = read_all(broker.internal, names.transactions, timeout_s=10)
    chargebacks = read_all(broker.internal, names.chargebacks, timeout_s=10)
    assert len(txns) + len(chargebacks) == count
    assert ADMIN_PASSWORD not in made.stdout + made.stderr + sent.stdout + sent.stderr


def test_secrets_stay_out_of_the_settings_repr() -> None:
    env = {
        **os.environ,
        "STREAMSCORE_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMSCORE_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMSCORE_SASL_USERNAME": "scorer",
        "STREAMSCORE_SASL_PASSWORD": SCORER_PASSWORD,
    }
    code = "from schemas.settings import load_settings; print(repr(load_settings()))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "sasl_password=SecretStr('**********')" in done.stdout
    assert SCORER_PASSWORD not in done.stdout
