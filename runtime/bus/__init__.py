"""The event bus: one interface, three implementations. Read in this order:

1. :mod:`.base`: the contract (:class:`Bus`, :class:`Producer`, :class:`Consumer`,
   :class:`Record`, :class:`TopicPartition`), with Kafka's meaning of offsets and groups;
2. :mod:`.embedded`: the zero-set-up default, durable in one SQLite file, one process;
3. :mod:`.kafka`: any Kafka-protocol broker, via kafka-python (the default for Kafka);
4. :mod:`.confluent`: the same, via confluent-kafka (optional: the ``fast`` extra); its
   clients in :mod:`.confluent_producer` and :mod:`.confluent_consumer`, its settings in
   :mod:`.confluent_options`.

:func:`driftline.runtime.platform.open_bus` picks one from the settings' URL.
"""

from __future__ import annotations

from driftline.runtime.bus.base import Bus, Consumer, Headers, Producer, Record, TopicPartition

__all__ = ["Bus", "Consumer", "Headers", "Producer", "Record", "TopicPartition"]
