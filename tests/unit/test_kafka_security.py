"""Kafka's SASL and TLS settings become aiokafka's options; a wrong one is named, not guessed."""

from __future__ import annotations

import ssl

import pytest

from mesh.events.security import KafkaSecurity
from mesh.settings import BackendSettings, from_env


def test_plaintext_by_default() -> None:
    assert KafkaSecurity().client_options() == {"security_protocol": "PLAINTEXT"}


def test_sasl_over_tls_from_the_settings() -> None:
    backends = from_env(
        BackendSettings,
        {
            "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "conductor",
            "KAFKA_SASL_PASSWORD": "pw-secret",
        },
    )
    security = KafkaSecurity.of(backends)
    options = security.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "conductor",
        "pw-secret",
    )
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "pw-secret" not in repr(security)
    assert "pw-secret" not in repr(backends)


@pytest.mark.parametrize(
    ("security", "complaint"),
    [
        (KafkaSecurity("TLS"), "KAFKA_SECURITY_PROTOCOL"),
        (KafkaSecurity("SASL_PLAINTEXT", "GSSAPI", "u", "p"), "KAFKA_SASL_MECHANISM"),
        (KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "u", ""), "KAFKA_SASL_PASSWORD"),
        (KafkaSecurity("SSL", cert_file="c.pem"), "KAFKA_SSL_KEY_FILE"),
        (KafkaSecurity("PLAINTEXT", ca_file="ca.pem"), "SSL or SASL_SSL"),
    ],
)
def test_inconsistent_settings_are_named(security: KafkaSecurity, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        security.client_options()
