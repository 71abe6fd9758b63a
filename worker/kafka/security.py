"""TLS and SASL (PLAIN, SCRAM) settings, mapped onto kafka-python and confluent-kafka alike.

Secrets (SASL password, private-key password) are given as `{file: PATH}`, `{env: NAME}` or,
discouraged, `{value: ...}`. They are read when a client is built, never stored in plain
attributes, and never logged: `describe()` is the only text about security that goes to logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from contracts.errors import VbwError

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class SecretError(VbwError, ValueError):
    """A secret could not be read. The message names the file or variable, never the value.
    Not retriable: the variable or the mounted file must be fixed first."""


class SecretRef(BaseModel):
    """Where a secret comes from: exactly one of file, env, value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    file: Path | None = Field(None, description="read from this file (trailing newline stripped)")
    env: str | None = Field(None, description="read from this environment variable")
    value: SecretStr | None = Field(None, description="inline (discouraged: config files get copied)")

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if sum(x is not None for x in (self.file, self.env, self.value)) != 1:
            raise ValueError("give exactly one of file, env, value")
        return self

    def resolve(self) -> str:
        if self.value is not None:
            return self.value.get_secret_value()
        if self.env is not None:
            got = os.environ.get(self.env)
            if got is None:
                raise SecretError(f"environment variable {self.env} is not set")
            return got
        assert self.file is not None
        try:
            return self.file.read_text().rstrip("\r\n")
        except OSError as e:
            raise SecretError(f"cannot read secret file {self.file}: {e.strerror or e}") from None

    def where(self) -> str:
        return f"file {self.file}" if self.file else f"env {self.env}" if self.env else "inline"


class KafkaSecurity(BaseModel):
    """How clients authenticate and encrypt. PLAINTEXT (the default) needs nothing else."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    protocol: Protocol = Field("PLAINTEXT", description="SSL = TLS; SASL_* = with SASL authentication")
    ca_file: Path | None = Field(None, description="PEM CA bundle to verify the brokers (TLS)")
    cert_file: Path | None = Field(None, description="PEM client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="PEM client private key (mutual TLS)")
    key_password: SecretRef | None = Field(None, description="password of the private key")
    check_hostname: bool = Field(True, description="verify the broker certificate's host name")
    sasl_mechanism: Mechanism | None = Field(None, description="SASL mechanism (SASL_* protocols)")
    username: str | None = Field(None, description="SASL user name")
    password: SecretRef | None = Field(None, description="SASL password: {file: ...} or {env: ...}")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        problems = []
        sasl = self.protocol.startswith("SASL")
        tls = self.protocol.endswith("SSL")
        if sasl and (self.sasl_mechanism is None or not self.username or self.password is None):
            problems.append(f"{self.protocol} needs sasl_mechanism, username and password")
        if not sasl and (self.sasl_mechanism or self.username or self.password):
            problems.append(f"SASL settings given but protocol is {self.protocol}")
        if not tls and (self.ca_file or self.cert_file or self.key_file or self.key_password):
            problems.append(f"TLS files given but protocol is {self.protocol}")
        if (self.cert_file is None) != (self.key_file is None):
            problems.append("cert_file and key_file go together")
        for name, path in (
            ("ca_file", self.ca_file),
            ("cert_file", self.cert_file),
            ("key_file", self.key_file),
        ):
            if path is not None and not path.is_file():
                problems.append(f"{name} {path} does not exist")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def describe(self) -> str:
        """Safe for logs: protocol, mechanism, user and where the secrets come from, no values."""
        parts = [self.protocol]
        if self.sasl_mechanism:
            pw = self.password.where() if self.password else "none"
            parts.append(f"{self.sasl_mechanism} user={self.username} password<{pw}>")
        if self.ca_file:
            parts.append(f"ca={self.ca_file}")
        if self.cert_file:
            parts.append(f"cert={self.cert_file}")
        return " ".join(parts)

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for KafkaProducer / KafkaConsumer / KafkaAdminClient."""
        out: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol.endswith("SSL"):
            out["ssl_check_hostname"] = self.check_hostname
            if self.ca_file:
                out["ssl_cafile"] = str(self.ca_file)
            if self.cert_file:
                out["ssl_certfile"] = str(self.cert_file)
                out["ssl_keyfile"] = str(self.key_file)
            if self.key_password:
                out["ssl_password"] = self.key_password.resolve()
        if self.protocol.startswith("SASL"):
            assert self.password is not None
            out["sasl_mechanism"] = self.sasl_mechanism
            out["sasl_plain_username"] = self.username
            out["sasl_plain_password"] = self.password.resolve()
        return out

    def confluent(self) -> dict[str, Any]:
        """librdkafka properties for confluent_kafka.Producer / Consumer / AdminClient."""
        out: dict[str, Any] = {"security.protocol": self.protocol.lower()}
        if self.protocol.endswith("SSL"):
            out["ssl.endpoint.identification.algorithm"] = "https" if self.check_hostname else "none"
            if self.ca_file:
                out["ssl.ca.location"] = str(self.ca_file)
            if self.cert_file:
                out["ssl.certificate.location"] = str(self.cert_file)
                out["ssl.key.location"] = str(self.key_file)
            if self.key_password:
                out["ssl.key.password"] = self.key_password.resolve()
        if self.protocol.startswith("SASL"):
            assert self.password is not None
            out["sasl.mechanism"] = self.sasl_mechanism
            out["sasl.username"] = self.username
            out["sasl.password"] = self.password.resolve()
        return out
