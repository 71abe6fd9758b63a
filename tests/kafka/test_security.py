"""TLS/SASL settings: validation, secrets from files/env, mapping onto both clients, never logged."""

from __future__ import annotations

import logging
import time

import pytest
from pydantic import ValidationError

from worker.kafka.config import KafkaConnectionConfig, ProducerTuning
from worker.kafka.producer import ResilientProducer
from worker.kafka.security import KafkaSecurity, SecretError, SecretRef

PASSWORD = "pa55-w0rd-never-logged"


def test_secret_from_file_env_or_value(tmp_path, monkeypatch):
    f = tmp_path / "pw"
    f.write_text(PASSWORD + "\n")
    assert SecretRef(file=f).resolve() == PASSWORD
    monkeypatch.setenv("VBW_TEST_KAFKA_PW", PASSWORD)
    assert SecretRef(env="VBW_TEST_KAFKA_PW").resolve() == PASSWORD
    assert SecretRef(value=PASSWORD).resolve() == PASSWORD
    assert PASSWORD not in repr(SecretRef(value=PASSWORD))
    with pytest.raises(ValidationError, match="exactly one"):
        SecretRef(file=f, env="X")
    monkeypatch.delenv("VBW_TEST_KAFKA_PW")
    with pytest.raises(SecretError, match="VBW_TEST_KAFKA_PW is not set"):
        SecretRef(env="VBW_TEST_KAFKA_PW").resolve()
    with pytest.raises(SecretError, match="cannot read secret file"):
        SecretRef(file=tmp_path / "missing").resolve()


def test_inconsistent_settings_are_all_reported(tmp_path):
    with pytest.raises(ValidationError) as e:
        KafkaSecurity(protocol="SASL_PLAINTEXT", ca_file=tmp_path / "nope.pem", cert_file=tmp_path / "c.pem")
    msg = str(e.value)
    assert "needs sasl_mechanism, username and password" in msg
    assert "TLS files given but protocol is SASL_PLAINTEXT" in msg
    assert "cert_file and key_file go together" in msg
    assert "does not exist" in msg
    with pytest.raises(ValidationError, match="SASL settings given but protocol is PLAINTEXT"):
        KafkaSecurity(username="u")


def test_sasl_ssl_maps_onto_kafka_python_and_librdkafka(tmp_path, monkeypatch):
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    for p in (ca, cert, key):
        p.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("KAFKA_PW", PASSWORD)
    sec = KafkaSecurity(
        protocol="SASL_SSL",
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        key_password=SecretRef(value="keypw"),
        check_hostname=False,
        sasl_mechanism="SCRAM-SHA-512",
        username="vbw",
        password=SecretRef(env="KAFKA_PW"),
    )
    assert sec.kafka_python() == {
        "security_protocol": "SASL_SSL",
        "ssl_check_hostname": False,
        "ssl_cafile": str(ca),
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
        "ssl_password": "keypw",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "vbw",
        "sasl_plain_password": PASSWORD,
    }
    assert sec.confluent() == {
        "security.protocol": "sasl_ssl",
        "ssl.endpoint.identification.algorithm": "none",
        "ssl.ca.location": str(ca),
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key),
        "ssl.key.password": "keypw",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "vbw",
        "sasl.password": PASSWORD,
    }
    text = sec.describe()
    assert "SCRAM-SHA-512" in text and "user=vbw" in text and "env KAFKA_PW" in text
    assert PASSWORD not in text and PASSWORD not in repr(sec) and PASSWORD not in sec.model_dump_json()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_both_real_clients_accept_the_settings(mechanism):
    """librdkafka and kafka-python validate their property names and values at construction."""
    from confluent_kafka import Producer
    from kafka import KafkaProducer

    sec = KafkaSecurity(
        protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism, username="u", password=SecretRef(value=PASSWORD)
    )
    Producer({"bootstrap.servers": "127.0.0.1:1", **sec.confluent()}).flush(0)
    p = KafkaProducer(bootstrap_servers="127.0.0.1:1", api_version=(2, 5, 0), **sec.kafka_python())
    p.close(timeout=0)


def test_password_never_reaches_the_logs(broker, caplog):
    """A SASL producer against a broker that does not speak SASL: it fails, logs, retries; the
    password is in none of those lines, kafka-python's debug lines included."""
    caplog.set_level(logging.DEBUG)
    conn = KafkaConnectionConfig(
        bootstrap_servers=[broker.bootstrap],
        request_timeout_ms=2000,
        security=KafkaSecurity(
            protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            username="vbw",
            password=SecretRef(value=PASSWORD),
        ),
    )
    producer = ResilientProducer(conn, ProducerTuning(delivery_timeout_ms=3000), name="secure")
    producer.send("labels", b"k", b"v", [], lambda err: None)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        producer.poll()
        time.sleep(0.1)
    producer.close(timeout=0.5)
    assert caplog.records, "expected the failing connection to be logged"
    assert PASSWORD not in caplog.text
