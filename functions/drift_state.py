"""drift-check's saved state: a snapshot now and then, and a journal of inputs in between.

Each model's state lives under ``state/<model>/drift/`` as numbered objects
(``000000000001.json``, ...), each either a **snapshot** (the whole state, as
:meth:`_Model.to_state` gives it) or a **delta** (the scored rows and labels handled since
the object before, in order). A checkpoint writes one object per changed model: a delta,
whose size is that of the events it holds, unless a snapshot is due (a window closed, a
detection, a deploy or rejection: changes a replay of inputs could not redo without the
registry and the store; or the deltas since the last snapshot outweigh it, or number
:data:`MAX_DELTAS`). So the cost per event no longer grows with the window.

Restoring reads the newest snapshot and the deltas after it; drift-check replays their
records through the same code that handled them first. The drift monitor is deterministic,
so the state rebuilt is the state saved.

Every object is written only if its number is still free (``put_if`` with no etag): a
replica that stalled while another took its partitions over finds the next number taken
(:class:`StaleWriteError`), commits nothing and rejoins. Older objects are deleted after a
snapshot, keeping the previous snapshot and its deltas for a reader that listed them just
before. A state saved whole before the journal (``state/<model>/drift.json``) is read when
there is no numbered object, and deleted once the first snapshot replaces it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from driftline.events import Matrix, RowTimes
from driftline.runtime.errors import ObjectNotFoundError

MAX_DELTAS = 500
"""Deltas after a snapshot at most: a restore reads no more objects than this."""
_RESTORE_TRIES = 5


@dataclass(frozen=True)
class Scored:
    """A ``score.completed`` as drift-check applied it."""

    request_id: str
    version: int
    at: datetime | None
    """The event time the monitor filed the rows under (the event's, else the envelope's)."""
    event_time: datetime | None
    """The event's own time, kept with rows waiting for labels."""
    rows: Matrix
    predictions: list[float]
    row_times: RowTimes | None = None
    """Each row's own time, when the request carried them (else every row is at ``at``)."""
    row_ids: list[str] | None = None
    """Each row's request id, when the event carried several requests (captured /v2
    traffic): drift-check applies each request in turn, under its own id and at its first
    row's time (with no row times, at the event's)."""


@dataclass(frozen=True)
class Labeled:
    """A ``labels.received`` as drift-check applied it."""

    request_id: str
    labels: list[float]


Record = Scored | Labeled


def legacy_key(model: str) -> str:
    """Where the whole state was saved before the journal."""
    return f"state/{model}/drift.json"


def _prefix(model: str) -> str:
    return f"state/{model}/drift/"


def _key(model: str, seq: int) -> str:
    return f"{_prefix(model)}{seq:012d}.json"


@dataclass
class Log:
    """Where one model's saved state stands, as this process read or wrote it."""

    model: str
    seq: int = 0
    """The newest numbered object read or written (0: none)."""
    snapshots: list[int] = field(default_factory=list)
    """Numbers of the snapshots kept, oldest first."""
    kept: list[int] = field(default_factory=list)
    """Numbers of every object kept, oldest first."""
    snapshot_bytes: int = 0
    delta_bytes: int = 0
    """Bytes of the deltas after the newest snapshot."""
    legacy: bool = False
    """Whether the state was read from the whole-state object of before the journal."""

    def snapshot_due(self) -> bool:
        """Whether the next write should be a snapshot whatever the batch changed."""
        if not self.snapshots:
            return True
        deltas = self.seq - self.snapshots[-1]
        return deltas >= MAX_DELTAS or self.delta_bytes >= max(self.snapshot_bytes, 1 << 16)

    def write_snapshot(self, store: Any, state: dict[str, Any]) -> None:
        data = _dumps({"kind": "snapshot", "state": state}).encode()
        self._write(store, data)
        self.snapshots.append(self.seq)
        self.snapshot_bytes, self.delta_bytes = len(data), 0
        self._collect(store)

    def write_delta(self, store: Any, records: list[Record]) -> None:
        data = json.dumps({"kind": "delta", "records": [_encode(r) for r in records]}).encode()
        self._write(store, data)
        self.delta_bytes += len(data)

    def _write(self, store: Any, data: bytes) -> None:
        seq = self.seq + 1
        store.put_if(_key(self.model, seq), data, None, "application/json")
        self.seq = seq
        self.kept.append(seq)

    def _collect(self, store: Any) -> None:
        """Delete what came before the previous snapshot (and the whole-state object)."""
        if self.legacy:
            store.delete(legacy_key(self.model))
            self.legacy = False
        if len(self.snapshots) < 2:
            return
        floor = self.snapshots[-2]
        for seq in [s for s in self.kept if s < floor]:
            store.delete(_key(self.model, seq))
        self.kept = [s for s in self.kept if s >= floor]
        self.snapshots = self.snapshots[-2:]


@dataclass
class Saved:
    """A model's saved state: the base to start from and the records to replay on it."""

    state: dict[str, Any] | None
    records: list[Record]
    log: Log


def load(store: Any, model: str) -> Saved:
    """The newest snapshot (or the state saved before the journal) and the records after it.
    Objects that go while they are read (another process collected them) are read again."""
    for _ in range(_RESTORE_TRIES - 1):
        try:
            return _load(store, model)
        except ObjectNotFoundError:
            continue
    return _load(store, model)


def _load(store: Any, model: str) -> Saved:
    seqs = [int(info.key.rsplit("/", 1)[1].split(".")[0]) for info in store.list(_prefix(model))]
    log = Log(model, seq=seqs[-1] if seqs else 0, kept=seqs)
    deltas: list[list[Record]] = []
    for seq in reversed(seqs):
        data = store.get(_key(model, seq))
        saved = json.loads(data)
        if saved["kind"] == "snapshot":
            log.snapshots = [s for s in seqs if s <= seq][-1:]
            log.snapshot_bytes = len(data)
            return Saved(saved["state"], [r for d in reversed(deltas) for r in d], log)
        log.delta_bytes += len(data)
        deltas.append([_decode(r) for r in saved["records"]])
    if seqs:  # deltas with no snapshot before them: never written so
        raise ObjectNotFoundError(_key(model, seqs[0] - 1), repr(store))
    try:
        state = json.loads(store.get(legacy_key(model)))
    except ObjectNotFoundError:
        return Saved(None, [], log)
    log.legacy = True
    return Saved(state, [], log)


_CHUNK = 1_000
_LONG = 100_000
"""Characters past which a string in a list is encoded on its own."""


def _dumps(value: Any) -> str:
    """``json.dumps(value)``, with long lists encoded a thousand items at a time.

    The encoder is C code that holds the interpreter until it returns: a snapshot of a
    window of 50,000 rows took about 90 ms in one call, and every other thread of the
    process (the HTTP server's among them) waited that long. In pieces, the interpreter
    can switch threads between them. The pieces are gathered in one list and joined once:
    joined at every level of nesting, a 50 MB snapshot was copied once per level, which
    took longer than encoding it."""
    parts: list[str] = []
    _encode_into(value, parts)
    return "".join(parts)


def _encode_into(value: Any, parts: list[str]) -> None:
    if isinstance(value, dict):
        parts.append("{")
        for i, (k, v) in enumerate(value.items()):
            parts.append(f"{', ' if i else ''}{json.dumps(str(k))}: ")
            _encode_into(v, parts)
        parts.append("}")
    elif isinstance(value, list | tuple) and len(value) > _CHUNK:
        parts.append("[")
        for i in range(0, len(value), _CHUNK):
            parts.append((", " if i else "") + json.dumps(value[i : i + _CHUNK])[1:-1])
        parts.append("]")
    elif isinstance(value, list | tuple) and any(
        isinstance(v, dict | list | tuple) or (isinstance(v, str) and len(v) > _LONG) for v in value
    ):  # nested, or long strings (the base64 pieces of a window): an item at a time
        parts.append("[")
        for i, v in enumerate(value):
            if i:
                parts.append(", ")
            _encode_into(v, parts)
        parts.append("]")
    else:
        parts.append(json.dumps(value))


def _encode(r: Record) -> list[Any]:
    if isinstance(r, Labeled):
        return ["l", r.request_id, r.labels]
    rows = b64(r.rows.to_bytes())
    out = ["s", r.request_id, r.version, _iso(r.at), _iso(r.event_time), rows, r.predictions]
    if r.row_times is not None or r.row_ids is not None:
        out.append(None if r.row_times is None else b64(r.row_times.to_bytes()))
    if r.row_ids is not None:
        out.append(r.row_ids)
    return out


def b64(data: bytes) -> str:
    """Bytes as base64 text (how saved state holds arrays)."""
    return base64.b64encode(data).decode()


def _decode(r: list[Any]) -> Record:
    if r[0] == "l":
        return Labeled(r[1], r[2])
    rows = Matrix.from_bytes(base64.b64decode(r[5]))
    times = RowTimes.from_bytes(base64.b64decode(r[7])) if len(r) > 7 and r[7] else None
    ids = r[8] if len(r) > 8 else None
    return Scored(r[1], r[2], _time(r[3]), _time(r[4]), rows, r[6], times, ids)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
