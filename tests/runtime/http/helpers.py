"""Shared set-up of the gateway tests: real models trained by the real functions, and live servers.

:func:`trained` trains ``synth`` once per session with ingest → retrain → register (v1 on
two weeks of data, then v2 on newer data with another relation, which wins the gate) and
keeps the store as a template; :func:`new_home` copies it into a fresh ``--home`` and
publishes the chosen registry events onto that home's embedded bus.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from driftline.events import Codec, DatasetUploaded, Event, ModelDeployed, ModelRegistered
from driftline.functions.ingest import ingest
from driftline.functions.ml.layout import spec_key
from driftline.functions.register import register
from driftline.functions.retrain import retrain
from driftline.runtime.bus.base import Bus
from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.context import Context
from driftline.runtime.http.gateway import ADDRESS_FILE
from driftline.runtime.registry import Registry
from driftline.runtime.store import LocalStore
from tests.functions.synthetic import SPEC_TOML, frame

MODEL = "synth"
FEATURES = ["x1", "x2", "x3"]


@dataclass(frozen=True)
class Trained:
    store_dir: Path
    v1: list[Event]
    """model.registered and model.deployed of version 1."""
    v2: list[Event]
    """model.registered and model.deployed of version 2 (not published by default)."""


_cache: dict[str, Trained] = {}


def _upload(ctx: Context, key: str, data: bytes, event_id: str) -> list[Event]:
    ctx.store.put(key, data)
    ctx.begin(f"upload-{event_id}", "dataset.uploaded", None, None)
    ingested = ingest(DatasetUploaded(model=MODEL, key=key), ctx)
    ctx.begin(f"ingested-{event_id}", "dataset.ingested", None, None)
    trained = retrain(ingested, ctx)
    assert trained is not None
    ctx.begin(f"trained-{event_id}", "model.trained", None, None)
    return list(register(trained, ctx))


def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """synth v1 and v2, trained once per test session."""
    if "synth" not in _cache:
        store_dir = tmp_path_factory.mktemp("trained") / "store"
        ctx = Context(function="test", store=LocalStore(store_dir), registry=Registry())
        ctx.store.put(spec_key(MODEL), SPEC_TOML.encode())
        v1 = _upload(
            ctx,
            f"uploads/{MODEL}/first.csv",
            frame(24 * 14, seed=5).to_csv(index=False).encode(),
            "1",
        )
        newer = frame(24 * 14, seed=6, start="2024-01-15", shift=1.5, coef=6.0)
        v2 = _upload(ctx, f"uploads/{MODEL}/second.csv", newer.to_csv(index=False).encode(), "2")
        assert [type(e) for e in v1 + v2] == [ModelRegistered, ModelDeployed] * 2, v1 + v2
        assert [e.version for e in v2] == [2, 2]  # type: ignore[attr-defined]
        _cache["synth"] = Trained(store_dir, v1, v2)
    return _cache["synth"]


def publish(bus: Bus, events: Sequence[Event]) -> list[str]:
    codec, producer, ids = Codec(), bus.producer(), []
    for event in events:
        ids.append(str(uuid.uuid4()))
        value, headers = codec.encode(event, id=ids[-1], source="tests")
        producer.send(event.TYPE, value, key=event.model.encode(), headers=headers)
    producer.flush()
    producer.close()
    return ids


def new_home(model: Trained, home: Path, events: Sequence[Event] = ()) -> Path:
    """A ``--home`` holding the trained store (less the uploads, which a watcher would
    ingest again) and, on its bus, ``events``."""
    shutil.copytree(model.store_dir, home / "store", ignore=shutil.ignore_patterns("uploads"))
    bus = EmbeddedBus(home / "bus.db", partitions=3)
    try:
        bus.create_topics([e.TYPE for e in events])
        publish(bus, events)
    finally:
        bus.close()
    return home


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def live(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


ROOT = Path(__file__).resolve().parents[3]


def start_up(
    home: Path, functions: str, *, log: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``driftline up`` on ``home`` in a subprocess, once it has written its address (its
    output to ``log`` when given, else a pipe; ``env`` added to the environment)."""
    out = log.open("w") if log is not None else subprocess.PIPE
    try:
        up = _popen_up(home, functions, out, env)
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]  # the child holds its own copy
    deadline = time.monotonic() + 60
    try:
        while not (home / ADDRESS_FILE).exists():
            assert up.poll() is None and time.monotonic() < deadline, "up did not start"
            time.sleep(0.2)
    except BaseException:
        up.kill()
        up.wait()
        raise
    return up


def _popen_up(
    home: Path, functions: str, out: Any, env: dict[str, str] | None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftline.runtime.cli",
            "up",
            "--home",
            str(home),
            "--port",
            str(free_port()),
            "--functions",
            functions,
        ],  # fmt: skip
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def stop_up(up: subprocess.Popen[str]) -> None:
    """SIGTERM, and wait for the clean stop."""
    up.send_signal(signal.SIGTERM)
    up.wait(timeout=30)
    if up.stdout is not None:
        up.stdout.close()
