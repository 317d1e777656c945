"""Assembly: a bus, a store and a registry from settings, and runners for functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from driftline.runtime.bus.base import Bus
from driftline.runtime.errors import ConfigError
from driftline.runtime.registry import Registry, RegistryFollower
from driftline.runtime.settings import Settings
from driftline.runtime.store import ObjectStore, open_store

if TYPE_CHECKING:
    from driftline.runtime.bus.confluent import ConfluentBus
    from driftline.runtime.bus.kafka import KafkaBus

BUS_FORMS = (
    "kafka://host:port[,host:port...] (kafka-python), confluent://host:port[,host:port...] "
    "(confluent-kafka, pip install 'driftline[fast]') or sqlite:///path/to/bus.db"
)


def open_bus(settings: Settings) -> Bus:
    """The bus the settings name; the embedded bus in ``<home>/bus.db`` by default."""
    url = settings.bus or f"sqlite://{(settings.home_dir / 'bus.db').resolve()}"
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from driftline.runtime.bus.embedded import EmbeddedBus

        path = parts.netloc + parts.path
        if not path:
            raise ConfigError(f"bus URL {url!r} has no file path; accepted: {BUS_FORMS}")
        return EmbeddedBus(Path(path), partitions=settings.partitions)
    if parts.scheme in ("kafka", "confluent"):
        servers = parts.netloc + parts.path.rstrip("/")
        if not servers:
            raise ConfigError(f"bus URL {url!r} names no broker; accepted: {BUS_FORMS}")
        return _kafka_bus(parts.scheme, servers, settings)
    raise ConfigError(f"unknown bus URL {url!r}; accepted: {BUS_FORMS}")


def _kafka_bus(scheme: str, servers: str, settings: Settings) -> Bus:
    """A Kafka bus on ``servers``: kafka-python for ``kafka://``, confluent-kafka for
    ``confluent://``; both take the same ``DRIFTLINE_KAFKA_*`` settings."""
    bus_class: type[KafkaBus | ConfluentBus]
    if scheme == "kafka":
        from driftline.runtime.bus.kafka import KafkaBus

        bus_class = KafkaBus
    else:
        try:
            from driftline.runtime.bus.confluent import ConfluentBus
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"bus URL confluent://{servers} needs confluent-kafka ({exc}); "
                "install it with pip install 'driftline[fast]', or use kafka://"
            ) from exc
        bus_class = ConfluentBus
    return bus_class(
        servers,
        partitions=settings.partitions,
        client_options=settings.kafka_client_options(),
        session_timeout_ms=settings.kafka_session_timeout_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
    )


def store_for(settings: Settings) -> ObjectStore:
    """The object store the settings name; the folder ``<home>/store`` by default."""
    return open_store(settings.store or str(settings.home_dir / "store"))


@dataclass
class Platform:
    """The shared parts one process needs: bus, store, and a live registry view."""

    settings: Settings
    bus: Bus
    store: ObjectStore
    follower: RegistryFollower
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def open(cls, settings: Settings | None = None) -> Platform:
        settings = settings or Settings()
        bus = open_bus(settings)
        try:
            store = store_for(settings)
        except Exception:
            bus.close()
            raise
        follower = RegistryFollower(bus, store=store)
        follower.start()
        return cls(settings, bus, store, follower)

    @property
    def registry(self) -> Registry:
        return self.follower.registry

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.follower.stop()
        self.store.close()
        self.bus.close()
