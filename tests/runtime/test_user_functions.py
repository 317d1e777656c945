"""Users' own functions and event types beside the built-ins, as ``driftline runner`` and
``driftline up`` run them: two user files on the embedded bus, and the CLI's refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from driftline.events import Codec, ScoreCompleted
from driftline.runtime.bus.base import Bus
from driftline.runtime.bus.embedded import EmbeddedBus
from driftline.runtime.cli import main
from driftline.runtime.cluster.heartbeat import LiveRunners
from driftline.runtime.cluster.placement import Placement
from driftline.runtime.http.gateway import ADDRESS_FILE
from driftline.runtime.loader import load_functions
from driftline.runtime.platform import Platform
from driftline.runtime.runner import Runner, output_id
from driftline.runtime.schemas import SchemaRegistry
from driftline.runtime.settings import Settings
from driftline.runtime.store import LocalStore
from tests.conftest import wait_for
from tests.fixtures.kafka import free_port, make_test_bus
from tests.runtime.runner_helpers import read_all

SHOP = '''
from typing import ClassVar
from driftline.events import Event, ScoreCompleted
from driftline.runtime import Context, function

class Scored(Event):
    """A score, tagged by the shop."""

    TYPE: ClassVar[str] = "shop.scored"
    request_id: str
    prediction: float

@function(subscribes="score.completed", emits="shop.scored")
def tag(event: ScoreCompleted, ctx: Context) -> Scored:
    return Scored(model=event.model, request_id=event.request_id, prediction=event.predictions[0])
'''

# A second file that never imports the first: it declares the same type again.
ALERTS = '''
from typing import ClassVar
from driftline.events import Event
from driftline.runtime import Context, PermanentError, function

class Scored(Event):
    """A score, tagged by the shop."""

    TYPE: ClassVar[str] = "shop.scored"
    request_id: str
    prediction: float

class Alerted(Event):
    TYPE: ClassVar[str] = "shop.alerted"
    request_id: str

@function(subscribes="shop.scored", emits=Alerted)
def alert(event: Scored, ctx: Context) -> Alerted:
    if event.prediction < 0:
        raise PermanentError(f"{event.request_id}: a negative score")
    ctx.store.put(f"alerts/{event.request_id}", type(event).__module__.encode())
    return Alerted(model=event.model, request_id=event.request_id)
'''


def write(folder: Path, stem: str, source: str) -> Path:
    path = folder / f"{stem}_{uuid.uuid4().hex[:8]}.py"  # each file is imported once per process
    path.write_text(source)
    return path


def publish_scores(bus: Bus, predictions: dict[str, float], model: str = "shop") -> dict[str, str]:
    """score.completed events, one per request id; returns their event ids."""
    codec, producer, ids = Codec(), bus.producer(), {}
    for request_id, prediction in predictions.items():
        event = ScoreCompleted(
            model=model, request_id=request_id, version=1, predictions=[prediction]
        )
        ids[request_id] = str(uuid.uuid4())
        value, headers = codec.encode(event, id=ids[request_id])
        producer.send(event.TYPE, value, key=event.partition_key(), headers=headers)
    producer.flush()
    producer.close()
    return ids


def test_user_functions_chain_their_own_types_on_the_embedded_bus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shop, alerts = write(tmp_path, "shop", SHOP), write(tmp_path, "alerts", ALERTS)
    selected = load_functions(f"{shop}:tag,{alerts}")
    platform = Platform.open(Settings(home=tmp_path / "home"))
    placement = Placement.on_platform(platform, [s.handler for s in selected])
    try:
        placement.start()
        assert placement.wait_placed(timeout_s=20)
        ids = publish_scores(platform.bus, {"r1": 0.5, "r2": 2.0, "bad": -1.0})
        stats = placement.runner.stats
        wait_for(lambda: stats["alert"].succeeded == 2 and stats["alert"].dead_lettered == 1)
        assert stats["tag"].succeeded == 3 and placement.beat().serves == ("alert", "tag")
        alerted = sys.modules[selected[1].handler.__module__].Alerted
        records = read_all(platform.bus, "shop.alerted", 2)
        envelopes = [Codec([alerted]).decode(r.value, r.headers) for r in records]
        dead = read_all(platform.bus, "shop.scored.dlq", 1)
        store = platform.store.get("alerts/r1")
    finally:
        placement.stop()
        platform.close()
    assert {e.data.request_id: e.id for e in envelopes} == {
        r: output_id(output_id(ids[r], "tag", 0), "alert", 0) for r in ("r1", "r2")
    }
    assert all(type(e.data) is alerted for e in envelopes)
    assert store == selected[1].handler.__module__.encode()  # alert got its own Scored class
    assert [d.header("dlq_function") for d in dead] == [b"alert"]
    assert b"bad: a negative score" in (dead[0].header("dlq_error") or b"")
    capsys.readouterr()
    assert main(["dlq", "list", "--home", str(tmp_path / "home"), "--wait", "1", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(d["topic"], d["function"]) for d in listed] == [("shop.scored", "alert")]


def _keyed(bus: Bus, topic: str, key: bytes, want: int, timeout_s: float = 30.0) -> list[Any]:
    """The records of ``topic`` with ``key``: a shared broker's topic holds others too."""
    reader, got = bus.reader([topic]), []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(r for r in reader.poll(0.3) if r.key == key)
    reader.close()
    return got


def test_user_types_travel_on_both_buses(tmp_path: Path, bus: Bus) -> None:
    shop, alerts = write(tmp_path, "shop", SHOP), write(tmp_path, "alerts", ALERTS)
    selected = load_functions(f"{shop},{alerts}")
    store = LocalStore(tmp_path / "store")
    runner = Runner(bus, [s.handler for s in selected], store=store, poll_timeout_s=0.2)
    runner.start()  # creates shop.scored, shop.alerted and the dead-letter topics
    try:
        model = f"shop-{uuid.uuid4().hex[:6]}"
        # unique request ids: on a shared broker score.completed holds other tests' events too
        wanted = [f"{model}-r1", f"{model}-r2"]
        ids = publish_scores(bus, {wanted[0]: 1.0, wanted[1]: 2.0}, model)
        wait_for(lambda: all(store.exists(f"alerts/{r}") for r in wanted), timeout_s=60)
    finally:
        runner.stop()
    alerted = sys.modules[selected[1].handler.__module__].Alerted
    records = _keyed(bus, "shop.alerted", model.encode(), 2)
    envelopes = [Codec([alerted]).decode(r.value, r.headers) for r in records]
    assert {e.data.request_id: e.id for e in envelopes} == {
        r: output_id(output_id(ids[r], "tag", 0), "alert", 0) for r in wanted
    }
    assert bus.partition_count("shop.scored.dlq") > 0


@pytest.mark.kafka
def test_json_cloudevents_from_kafka_python_reach_a_user_function(
    tmp_path: Path, kafka_bus: Bus, kafka_bootstrap: str
) -> None:
    """Another producer (here kafka-python itself) writes JSON CloudEvents, structured and
    binary, straight onto the user type's topic; the function takes them like Avro ones."""
    from kafka import KafkaProducer

    [alert] = load_functions(str(write(tmp_path, "alerts", ALERTS)))
    store = LocalStore(tmp_path / "store")
    runner = Runner(kafka_bus, [alert.handler], store=store, poll_timeout_s=0.2)
    runner.start()
    ids = [f"json-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    data = [{"model": "m", "request_id": i, "prediction": 1.0} for i in ids]
    event = {"specversion": "1.0", "id": ids[0], "source": "shop/go", "type": "shop.scored"}
    binary = [("ce_specversion", b"1.0"), ("ce_id", ids[1].encode()), ("ce_source", b"shop/js")]
    binary += [("ce_type", b"shop.scored"), ("content-type", b"application/json")]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        structured = [("content-type", b"application/cloudevents+json")]
        producer.send(
            "shop.scored", json.dumps({**event, "data": data[0]}).encode(), headers=structured
        )
        producer.send("shop.scored", json.dumps(data[1]).encode(), headers=binary)
        producer.flush()
        wait_for(lambda: all((tmp_path / "store" / "alerts" / i).exists() for i in ids), 30)
    finally:
        producer.close()
        runner.stop()
    assert runner.stats["alert"].dead_lettered == 0


def test_a_function_gets_its_own_class_of_a_type_another_file_declares_too(
    tmp_path: Path, embedded_bus: Bus
) -> None:
    shop, alerts = write(tmp_path, "shop", SHOP), write(tmp_path, "alerts", ALERTS)
    scored = sys.modules[load_functions(str(shop))[0].handler.__module__].Scored
    [alert] = load_functions(str(alerts))
    store = LocalStore(tmp_path / "store")
    runner = Runner(embedded_bus, [alert.handler], codec=Codec([scored]), store=store)
    runner.start()
    try:
        producer = embedded_bus.producer()
        value, headers = runner.codec.encode(scored(model="m", request_id="r1", prediction=1.0))
        producer.send("shop.scored", value, key=b"m", headers=headers)
        producer.flush()
        wait_for(lambda: runner.stats["alert"].succeeded == 1)
    finally:
        runner.stop()
    assert store.get("alerts/r1") == alert.handler.__module__.encode()


def test_runner_refuses_a_broken_file_with_exit_2_and_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = write(tmp_path, "broken", SHOP.replace('emits="shop.scored"', 'emits="shop.scord"'))
    home = str(tmp_path / "home")
    assert main(["runner", "--functions", f"{broken}:tag", "--home", home]) == 2
    err = capsys.readouterr().err
    assert f"{broken}: tag: emits 'shop.scord', an unknown event type" in err


def test_runner_refuses_an_incompatible_change_of_a_registered_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    old = write(tmp_path, "shop", SHOP)
    bus = EmbeddedBus(home / "bus.db")
    SchemaRegistry(bus).register(load_functions(str(old))[0].spec.event_types)
    bus.close()
    new = write(tmp_path, "shop", SHOP.replace("    prediction: float\n", "    prediction: str\n"))
    assert main(["runner", "--functions", str(new), "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert "function tag: " in err and "an incompatible change of 'shop.scored'" in err
    assert 'field \'prediction\' changes type from "double" to "string"' in err


def test_up_takes_the_selection_from_driftline_functions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLINE_FUNCTIONS", f"all,{tmp_path / 'gone.py'}")
    assert main(["up", "--home", str(tmp_path / "home"), "--port", "1"]) == 2
    assert f"{tmp_path / 'gone.py'}: no such file" in capsys.readouterr().err


def test_the_command_refuses_a_file_that_fails_to_import_without_a_traceback(
    tmp_path: Path,
) -> None:
    source = SHOP + "raise RuntimeError('no database here')\n"
    (tmp_path / "shop.py").write_text(source)
    done = subprocess.run(
        [sys.executable, "-m", "driftline.runtime.cli", "runner", "--functions", "./shop.py:tag"],
        cwd=tmp_path,
        env={**os.environ, "DRIFTLINE_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    line = len(source.splitlines())
    assert f"./shop.py: importing it failed (line {line}): RuntimeError: no database" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_driftline_up_runs_two_user_files_beside_a_builtin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case through the real command: ``up --functions ingest,./shop.py,./alerts.py``
    in its own process, an event published through its gateway, the second file's object
    in the store."""
    (tmp_path / "shop.py").write_text(SHOP)
    (tmp_path / "alerts.py").write_text(ALERTS)
    home = tmp_path / "home"
    command = [sys.executable, "-m", "driftline.runtime.cli", "up", "--home", str(home)]
    command += ["--port", str(free_port()), "--functions", "ingest,./shop.py,./alerts.py"]
    env = {**os.environ, "DRIFTLINE_HEARTBEAT_INTERVAL_S": "0.5"}
    up = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (home / ADDRESS_FILE).exists() or up.poll() is not None, 60)
        assert up.poll() is None, "up did not start"
        score = {"model": "shop", "request_id": "r1", "version": 1, "predictions": [2.0]}
        assert (
            main(["publish", "score.completed", "--home", str(home), "--data", json.dumps(score)])
            == 0
        )
        wait_for(lambda: (home / "store" / "alerts" / "r1").exists(), 30)
        scored = {"model": "shop", "request_id": "r2", "prediction": 3.0}  # a user type, too
        assert (
            main(["publish", "shop.scored", "--home", str(home), "--data", json.dumps(scored)]) == 0
        )
        wait_for(lambda: (home / "store" / "alerts" / "r2").exists(), 30)
        expect = f"ingest,{tmp_path / 'shop.py'},{tmp_path / 'alerts.py'}"

        def served() -> dict[str, bool]:  # as the heartbeats say (every 0.5 s here)
            capsys.readouterr()
            assert main(["status", "--home", str(home), "--expect", expect]) == 0
            report = json.loads(capsys.readouterr().out)["functions"]
            return {f["function"]: bool(f["served_by"]) for f in report}

        wait_for(lambda: served() == dict.fromkeys(("alert", "ingest", "tag"), True), 20)
        assert main(["events", "schemas", "--home", str(home), "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(r["type"], r["version"]) for r in listed] == [
            ("shop.alerted", 1),
            ("shop.scored", 1),
        ]
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0
    assert "(alert, ingest, tag;" in out


@pytest.mark.kafka
@pytest.mark.slow
def test_two_user_files_in_two_runner_processes_on_kafka(tansu_broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each file in its own ``driftline runner`` on Kafka: the second declares the first's
    type again (it never imports the first file) and decodes what the first writes."""
    (tmp_path / "shop.py").write_text(SHOP)
    (tmp_path / "alerts.py").write_text(ALERTS)
    env = {
        **os.environ,
        "DRIFTLINE_BUS": f"kafka://{tansu_broker.bootstrap}",
        "DRIFTLINE_STORE": str(tmp_path / "store"),
        "DRIFTLINE_HEARTBEAT_INTERVAL_S": "0.5",
        "DRIFTLINE_KAFKA_SESSION_TIMEOUT_MS": "4000",
    }
    runners = [
        subprocess.Popen(
            [sys.executable, "-m", "driftline.runtime.cli", "runner", "--functions", f"./{f}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for f in ("shop.py", "alerts.py")
    ]
    bus = make_test_bus(tansu_broker.bootstrap)
    view = LiveRunners(bus, timeout_s=3.0)
    view.start(poll_s=0.2)
    try:
        ready = lambda: {f for b in view.runners() for f in b.ready}  # noqa: E731
        wait_for(lambda: ready() >= {"tag", "alert"}, timeout_s=60)
        publish_scores(bus, {"r1": 1.0})
        wait_for(lambda: (tmp_path / "store" / "alerts" / "r1").exists(), timeout_s=30)
    finally:
        view.close()
        bus.close()
        for runner in runners:
            runner.send_signal(signal.SIGTERM)
        outputs = [runner.communicate(timeout=60)[0] for runner in runners]
    assert [r.returncode for r in runners] == [0, 0], outputs
    assert "offers tag;" in outputs[0] and "offers alert;" in outputs[1]


def test_the_gateway_and_publish_take_the_user_types_of_its_functions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from driftline.functions.ml.serving import ModelServer
    from driftline.runtime.http.app import create_app

    shop = write(tmp_path, "shop", SHOP)
    [tag] = load_functions(str(shop))
    scored = sys.modules[tag.handler.__module__].Scored
    data = {"model": "m", "request_id": "http-1", "prediction": 1.5}
    platform = Platform.open(Settings(home=tmp_path / "home"))
    try:
        app = create_app(
            platform, ModelServer(platform.store, platform.registry), functions=[tag.handler]
        )
        with TestClient(app) as client:
            answer = client.post("/v1/events/shop.scored", json=data)
            assert answer.status_code == 202, answer.json()
            assert "Scored" in client.get("/openapi.json").json()["components"]["schemas"]
        [record] = read_all(platform.bus, "shop.scored", 1)
    finally:
        platform.close()
    assert Codec([scored]).decode(record.value, record.headers).data == scored(**data)
    monkeypatch.setenv("DRIFTLINE_FUNCTIONS", str(shop))  # publish without a gateway
    args = ["publish", "shop.scored", "--data", json.dumps({**data, "request_id": "cli-1"})]
    assert main([*args, "--home", str(tmp_path / "home")]) == 0
    event_id = capsys.readouterr().out.strip()
    bus = EmbeddedBus(tmp_path / "home" / "bus.db")
    try:
        found = [
            Codec([scored]).decode(r.value, r.headers) for r in read_all(bus, "shop.scored", 2)
        ]
    finally:
        bus.close()
    assert [(e.id, e.data.request_id) for e in found][-1] == (event_id, "cli-1")
