"""How Kafka clients authenticate and encrypt: SASL (PLAIN, SCRAM) and TLS, from the settings.

Every Kafka client of the mesh (producer, consumers, admin, the ``huleedu dlq`` commands) is
built with the same ``KafkaSecurity``; ``client_options`` turns it into aiokafka's keyword
arguments. The default is PLAINTEXT, what the devstack's loopback broker speaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka.helpers import create_ssl_context

from mesh.settings import BackendSettings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ca_file: str = ""  # PEM CA of the brokers; the system's when empty
    cert_file: str = ""  # PEM client certificate, when the brokers require one
    key_file: str = ""

    @classmethod
    def of(cls, backends: BackendSettings) -> KafkaSecurity:
        return cls(
            backends.kafka_security_protocol,
            backends.kafka_sasl_mechanism,
            backends.kafka_sasl_username,
            backends.kafka_sasl_password,
            backends.kafka_ssl_ca_file,
            backends.kafka_ssl_cert_file,
            backends.kafka_ssl_key_file,
        )

    def client_options(self) -> dict[str, Any]:
        """aiokafka's keyword arguments; ``ValueError`` naming the setting that is wrong."""
        protocol = self.protocol.strip().upper()
        if protocol not in PROTOCOLS:
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}")
        options: dict[str, Any] = {"security_protocol": protocol}
        if protocol.startswith("SASL_"):
            mechanism = self.sasl_mechanism.strip().upper() or "PLAIN"
            if mechanism not in MECHANISMS:
                raise ValueError(f"KAFKA_SASL_MECHANISM must be one of {', '.join(MECHANISMS)}")
            if not (self.sasl_username and self.sasl_password):
                raise ValueError(f"{protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
            options |= {
                "sasl_mechanism": mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password,
            }
        if protocol.endswith("SSL"):
            if bool(self.cert_file) != bool(self.key_file):
                raise ValueError("set both KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE, or neither")
            options["ssl_context"] = create_ssl_context(
                cafile=self.ca_file or None,
                certfile=self.cert_file or None,
                keyfile=self.key_file or None,
            )
        elif self.ca_file or self.cert_file:
            raise ValueError("KAFKA_SSL_* files need KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL")
        return options


PLAINTEXT = KafkaSecurity()
