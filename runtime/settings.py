"""Settings: environment variables with the ``DRIFTLINE_`` prefix, or CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class HookSettings(BaseModel):
    """One webhook trigger: ``POST /v1/hooks/<name>`` publishes its JSON body as ``event``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: str = Field(description="Event type the payload becomes, e.g. dataset.uploaded.")
    secret: SecretStr = Field(description="Standard Webhooks signing secret: whsec_<base64 key>.")
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description='Fields merged under the payload, e.g. {"model": "bikes"}; the payload wins.',
    )

    @field_validator("event")
    @classmethod
    def _known_type(cls, value: str) -> str:
        from driftline.events.models import BY_TYPE

        if value not in BY_TYPE:
            raise ValueError(f"unknown event type {value!r}; known: {sorted(BY_TYPE)}")
        return value


NOTIFY_EVENTS = ("drift.detected", "model.deployed", "model.rejected")
"""The events the notify function can send (it subscribes to these)."""


class Settings(BaseSettings):
    """Where state lives and how to reach the bus and the store. Frozen once built."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", frozen=True, extra="ignore")

    home: Path = Field(
        default=Path("~/.driftline"),
        description="Folder for embedded state (bus file, local store).",
    )
    bus: str | None = Field(
        default=None,
        description="Bus URL: kafka://host:port[,host:port] (kafka-python), "
        "confluent://host:port[,host:port] (confluent-kafka, the [fast] extra) or "
        "sqlite:///path/bus.db; "
        "default: the embedded bus in <home>/bus.db.",
    )
    store: str | None = Field(
        default=None,
        description="Object store URL: a folder path, file:///path or s3://KEY:SECRET@host:port/bucket; "
        "default: <home>/store.",
    )
    functions: str | None = Field(
        default=None,
        description="The functions `driftline up` and `driftline runner` run when --functions "
        "is not given, comma-separated: all (the built-ins), a built-in name, "
        "./file.py[:name] or package.module[:name]; default: all.",
    )
    partitions: int = Field(default=3, description="Partitions of each topic Driftline creates.")
    kafka_security_protocol: str = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: str | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: str | None = Field(
        default=None, description="CA bundle to verify the brokers."
    )
    kafka_ssl_certfile: str | None = Field(
        default=None, description="Client certificate (mutual TLS)."
    )
    kafka_ssl_keyfile: str | None = Field(default=None, description="Client key (mutual TLS).")
    kafka_session_timeout_ms: int = Field(
        default=10_000, description="Consumer group session timeout."
    )
    kafka_max_poll_interval_ms: int = Field(
        default=300_000, description="Longest gap between polls."
    )
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token required by write endpoints."
    )
    gpus: int | None = Field(
        default=None,
        ge=0,
        description="Pin how many GPUs this runner reports: 0 hides a machine's GPUs, N claims N "
        "(for tests, or a runner that must stay on CPU work); default: detect them.",
    )
    capabilities_override: dict[str, Any] | None = Field(
        default=None,
        description="Capability fields to replace after detection, as JSON, e.g. "
        '{"cpu_cores": 4, "gpu_trainer": null, "onnx_providers": ["CPUExecutionProvider"]}.',
    )
    heartbeat_interval_s: float = Field(
        default=5.0, gt=0, description="How often a runner announces itself on the control topic."
    )
    heartbeat_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="A runner silent this long counts as gone: its GPU-preferred work falls back "
        "to CPU runners. Keep it at least three heartbeat intervals.",
    )
    hooks: dict[str, HookSettings] = Field(
        default_factory=dict,
        description="Webhook triggers by name, as JSON: "
        '{"<name>": {"event": "<type>", "secret": "whsec_...", "defaults": {...}}}.',
    )
    webhook_tolerance_s: int = Field(
        default=300, description="Largest gap between a webhook's timestamp and now, either way."
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        description="Largest request body the gateway reads; bigger ones get 413.",
    )
    notify_urls: list[str] = Field(
        default_factory=list,
        description="Where the notify function sends its webhooks, as a JSON list: "
        '["https://hooks.example.com/driftline"]; empty (the default): notify does nothing.',
    )
    notify_secret: SecretStr | None = Field(
        default=None,
        description="Standard Webhooks signing secret of the notifications (whsec_<base64 "
        "key>); the receivers verify with it. Needed when notify_urls is set.",
    )
    notify_events: list[str] = Field(
        default_factory=lambda: list(NOTIFY_EVENTS),
        description=f"Which events notify sends, among {', '.join(NOTIFY_EVENTS)}.",
    )
    notify_timeout_s: float = Field(
        default=10.0, gt=0, description="How long one webhook call may take."
    )

    @field_validator("notify_events")
    @classmethod
    def _notifiable(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in NOTIFY_EVENTS]
        if unknown:
            raise ValueError(f"notify cannot send {unknown}; it sends {list(NOTIFY_EVENTS)}")
        return value

    max_upload_bytes: int = Field(
        default=268_435_456,
        description="Largest data file or ONNX model the gateway takes on the lifecycle "
        "endpoints (uploads, external versions); bigger ones get 413.",
    )
    capture_rate: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of /v2 inference requests published as score.completed, so "
        "drift-check monitors HTTP traffic like bus traffic (1: all; 0: none).",
    )
    capture_queue: int = Field(
        default=10_000,
        ge=1,
        description="Captured requests waiting to be published; when full, more are dropped "
        '(counted in driftline_capture_events{outcome="dropped"}), never the requests.',
    )
    monitor_process: bool = Field(
        default=True,
        description="`driftline up` runs drift-check in a runner process of its own (as "
        "`--replicas drift-check=1` would; on the embedded bus too, which it shares with "
        "that process), so monitoring the captured /v2 traffic never holds the interpreter "
        "that serves it; false keeps it in the gateway's process.",
    )
    monitor_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="How much lower than the gateway's the CPU priority of drift-check's "
        "process under `driftline up` is (its niceness, as `nice -n`): monitoring takes "
        "the CPU that serving leaves first, so it does not lengthen /v2's tail on a busy "
        "machine; on one kept busy it falls behind (the bus keeps what it has not read yet) "
        "and catches up when the load drops. 0: the same priority as the gateway.",
    )
    gil_switch_ms: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="How long `driftline up` lets one thread hold the interpreter before "
        "another may run (sys.setswitchinterval; Python's own is 5 ms): the HTTP server "
        "waits at most about this long for the functions' threads, which bounds /v2's tail "
        "latency under load.",
    )
    s3_notification_topic: str | None = Field(
        default=None,
        description="Topic where MinIO's Kafka target sends bucket notifications; "
        "when set, `driftline up` turns them into dataset.uploaded events.",
    )

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def on_kafka(self) -> bool:
        """Whether the bus is a Kafka cluster (``kafka://`` or ``confluent://``), which
        several processes share, rather than the embedded one-process bus."""
        return (self.bus or "").startswith(("kafka://", "confluent://"))

    def kafka_client_options(self) -> dict[str, object]:
        """Security settings passed through to every Kafka client, by kafka-python's names
        (the confluent bus translates them to librdkafka's)."""
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
