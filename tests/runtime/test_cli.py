"""The command line: exit codes and messages people can script against."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driftline.runtime.cli import main


def test_publish_then_dlq_list_on_the_embedded_bus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "home")
    event = {"model": "m", "request_id": "r1", "labels": [1.0]}
    assert main(["publish", "labels.received", "--data", json.dumps(event), "--home", home]) == 0
    event_id = capsys.readouterr().out.strip()
    assert len(event_id) == 36
    assert main(["dlq", "list", "--home", home, "--wait", "0.3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_publish_refuses_a_bad_event_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "e.json"
    data.write_text(json.dumps({"model": "m", "request_id": "r1", "labels": "oops"}))
    assert main(["publish", "labels.received", "--data", f"@{data}", "--home", str(tmp_path)]) == 2
    assert "labels" in capsys.readouterr().err


def test_publish_refuses_an_unknown_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["publish", "nope.never", "--data", "{}", "--home", str(tmp_path)]) == 2
    assert "unknown event type 'nope.never'" in capsys.readouterr().err


def test_a_bad_bus_url_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "list", "--bus", "redis://x", "--home", str(tmp_path)]) == 2
    assert "unknown bus URL" in capsys.readouterr().err


def test_dlq_replay_sends_a_dead_letter_back_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from driftline.runtime.bus.embedded import EmbeddedBus
    from driftline.runtime.runner import Runner
    from tests.conftest import wait_for
    from tests.runtime.runner_helpers import echo, publish, read_all, request

    home = tmp_path / "home"
    bus = EmbeddedBus(home / "bus.db", partitions=1)
    runner = Runner(bus, [echo], poll_timeout_s=0.1)
    runner.start()
    publish(bus, [request("poison-1")])
    wait_for(lambda: runner.stats["echo"].dead_lettered == 1)
    runner.stop()
    bus.close()
    assert main(["dlq", "list", "--home", str(home), "--wait", "0.3", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["function"] == "echo" and entry["error_type"] == "PermanentError"
    for expected in (1, 0):  # a second replay finds nothing new
        assert main(["dlq", "replay", "--home", str(home), "--wait", "0.3"]) == 0
        assert capsys.readouterr().out.strip() == f"replayed {expected} dead-lettered event(s)"
    bus = EmbeddedBus(home / "bus.db", partitions=1)
    back = [r for r in read_all(bus, "score.requested", 2) if b"poison-1" in r.value]
    bus.close()
    assert len(back) == 2 and back[0].header("ce_id") == back[1].header("ce_id")
    assert not any(k.startswith("dlq_") for k, _ in back[1].headers)


def test_a_replay_shorter_than_the_first_training_window_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    assert main(["demo", "--home", str(tmp_path / "h"), "--out", out, "--days", "20"]) == 2
    assert "--days 20: the first 28 days (training.days) train v1" in capsys.readouterr().err


def test_models_promote_makes_a_chosen_version_production(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.runtime.http.helpers import MODEL, new_home, trained

    model = trained(tmp_path_factory)
    home = str(new_home(model, tmp_path_factory.mktemp("promote") / "home", [*model.v1, *model.v2]))
    assert main(["models", "promote", MODEL, "--home", home]) == 2
    assert "say which version" in capsys.readouterr().err
    assert main(["models", "promote", MODEL, "9", "--home", home]) == 2
    assert "no version 9; registered: [1, 2]" in capsys.readouterr().err
    assert main(["models", "promote", MODEL, "1", "--home", home]) == 0
    assert f"{MODEL}: production 2 -> 1 (promote)" in capsys.readouterr().out
    assert main(["models", "promote", MODEL, "1", "--home", home]) == 1
    assert "v1 is production already" in capsys.readouterr().err
