"""A real broker with a SASL_SSL listener (SCRAM-SHA-512), TLS certificates and ACLs.

The certificates are made here with openssl: a throwaway CA, and a broker
certificate for 127.0.0.1 signed by it. The broker (scripts/kafka with
``KAFKA_EXTRA_PROPERTIES``) has three listeners: SASL_SSL for clients, and
PLAINTEXT ones for the controller and for this module's set-up (users and ACLs),
whose anonymous principal is a super user, as is the SASL user ``admin``. Other
clients on SASL_SSL get only what the ACLs grant.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from tests.conftest import ROOT
from tests.integration.kafka_helpers import free_port

SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@dataclass(frozen=True)
class SecureBroker:
    """Where the secured broker listens and how to reach it."""

    bootstrap: str  # SASL_SSL
    internal: str  # PLAINTEXT, super user: set-up only
    ca_file: Path
    home: Path
    env: dict[str, str]

    def client_config(self, user: str, password: str) -> dict[str, str]:
        """librdkafka properties of a SASL_SSL client logged in as ``user``."""
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "sasl_ssl",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": str(self.ca_file),
        }

    def admin(self) -> AdminClient:
        """An admin client on the set-up listener."""
        return AdminClient({"bootstrap.servers": self.internal})

    def add_user(self, user: str, password: str) -> None:
        """Create a SCRAM-SHA-512 credential."""
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        upsert = UserScramCredentialUpsertion(user, info, password.encode())
        admin = self.admin()  # alive until the futures are done
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result()

    def create_topics(self, names: Iterable[str], partitions: int = 2) -> None:
        """Create topics (replication factor 1)."""
        admin = self.admin()
        futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        for future in futures.values():
            future.result()

    def allow(self, user: str, operation: AclOperation, topics: Iterable[str]) -> None:
        """Grant ``user`` an operation on each topic."""
        bindings = [
            AclBinding(
                ResourceType.TOPIC,
                topic,
                ResourcePatternType.LITERAL,
                f"User:{user}",
                "*",
                operation,
                AclPermissionType.ALLOW,
            )
            for topic in topics
        ]
        admin = self.admin()
        for future in admin.create_acls(bindings).values():
            future.result()

    def allow_group(self, user: str, group: str) -> None:
        """Grant ``user`` READ on a consumer group."""
        binding = AclBinding(
            ResourceType.GROUP,
            group,
            ResourcePatternType.LITERAL,
            f"User:{user}",
            "*",
            AclOperation.READ,
            AclPermissionType.ALLOW,
        )
        admin = self.admin()
        for future in admin.create_acls([binding]).values():
            future.result()

    def stop(self) -> None:
        """Stop the broker."""
        subprocess.run([str(ROOT / "scripts" / "kafka"), "stop"], env=self.env, check=False)


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A CA and a broker key + certificate for 127.0.0.1 signed by it: (ca.pem, broker.pem)."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    days = "2"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", days, "-subj", "/CN=streamscore-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out",
            "broker.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "broker.crt", "-days", days,
            "-extfile", "san.ext")  # fmt: skip
    # Kafka's PEM key store: the PKCS#8 key, then the certificate chain, in one file.
    key = (directory / "broker.key").read_text()
    (directory / "broker.pem").write_text(key + (directory / "broker.crt").read_text())
    return directory / "ca.pem", directory / "broker.pem"


def start_secure_broker(home: Path) -> SecureBroker:
    """Start the broker with its data, logs and certificates under ``home``."""
    ca, keystore = make_certificates(home / "tls")
    port, internal, controller = free_port(), free_port(), free_port()
    extra = home / "secure.properties"
    extra.write_text(
        f"""
listeners=SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal}
listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=INTERNAL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={SCRAM_LOGIN}
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:admin
allow.everyone.if.no.acl.found=false
"""
    )
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "KAFKA_HOME_DIR": str(home / "kafka"),
        "KAFKA_EXTRA_PROPERTIES": str(extra),
    }
    subprocess.run([str(ROOT / "scripts" / "kafka"), "start"], env=env, check=True)
    return SecureBroker(
        bootstrap=f"127.0.0.1:{port}",
        internal=f"127.0.0.1:{internal}",
        ca_file=ca,
        home=home,
        env=env,
    )
