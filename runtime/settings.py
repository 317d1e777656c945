"""Settings: environment variables with the ``DRIFTLINE_`` prefix, or CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where state lives and how to reach the bus and the store. Frozen once built."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", frozen=True, extra="ignore")

    home: Path = Field(default=Path("~/.driftline"), description="Folder for embedded state (bus file, local store).")
    bus: str | None = Field(
        default=None,
        description="Bus URL: kafka://host:port[,host:port] or sqlite:///path/bus.db; "
        "default: the embedded bus in <home>/bus.db.",
    )
    store: str | None = Field(
        default=None,
        description="Object store URL: a folder path, file:///path or s3://KEY:SECRET@host:port/bucket; "
        "default: <home>/store.",
    )
    partitions: int = Field(default=3, description="Partitions of each topic Driftline creates.")
    kafka_security_protocol: str = Field(default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: str | None = Field(default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: str | None = Field(default=None, description="CA bundle to verify the brokers.")
    kafka_ssl_certfile: str | None = Field(default=None, description="Client certificate (mutual TLS).")
    kafka_ssl_keyfile: str | None = Field(default=None, description="Client key (mutual TLS).")
    kafka_session_timeout_ms: int = Field(default=10_000, description="Consumer group session timeout.")
    kafka_max_poll_interval_ms: int = Field(default=300_000, description="Longest gap between polls.")
    api_token: SecretStr | None = Field(default=None, description="Bearer token required by write endpoints.")

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    def kafka_client_options(self) -> dict[str, object]:
        """Security settings passed through to every kafka-python client."""
        opts: dict[str, object] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            opts["sasl_mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            opts["sasl_plain_username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            opts["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, f"kafka_{name}")
            if value:
                opts[name] = value
        return opts
