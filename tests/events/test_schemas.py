"""The checked-in Avro schemas are the contract: models agree with them, and every
historical schema's events still decode with the current one (backward compatibility)."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
from fastavro import parse_schema, schemaless_reader
from fastavro.read import SchemaResolutionError

from driftline.events import EVENT_MODELS, Codec
from driftline.events.avro import SCHEMA_DIR, fingerprint, load_schema, schema_for, schema_path
from tests.events.examples import EXAMPLES

FIXTURES = Path(__file__).parent / "fixtures"
HISTORY = sorted((SCHEMA_DIR / "history").glob("*.avsc"))


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: m.TYPE)
def test_model_matches_checked_in_schema(model) -> None:  # type: ignore[no-untyped-def]
    assert schema_for(model) == load_schema(schema_path(model)), (
        f"{model.TYPE}: model and schemas/{model.TYPE}.avsc differ; if the change is intended and "
        "backward compatible, run `python -m driftline.events.avro` and add a history fixture"
    )


def test_every_event_type_has_history_and_a_fixture() -> None:
    for model in EVENT_MODELS:
        assert any(p.name.startswith(model.TYPE + "@") for p in HISTORY), model.TYPE
        assert (FIXTURES / f"{model.TYPE}.avro").exists(), model.TYPE


@pytest.mark.parametrize("path", HISTORY, ids=lambda p: p.name)
def test_old_events_decode_with_the_current_schema(path: Path) -> None:
    event_type, fp_hex = path.stem.split("@")
    old = load_schema(path)
    assert fingerprint(old).hex() == fp_hex, "history files are named by their fingerprint"
    written = [f.read_bytes() for f in FIXTURES.glob(f"{event_type}*.avro")]
    written = [v for v in written if v[2:10].hex() == fp_hex]
    assert written, f"no fixture was written with {path.name}: freeze one with write_fixtures()"
    for value in written:
        assert Codec().decode_value(value, event_type).TYPE == event_type


def test_an_incompatible_change_is_caught() -> None:
    """A new field without a default cannot be read from old events: the check must fail."""
    current = load_schema(schema_path(type(EXAMPLES["labels.received"])))
    broken = copy.deepcopy(current)
    broken["fields"].append({"name": "new_required", "type": "string"})
    value = (FIXTURES / "labels.received.avro").read_bytes()
    with pytest.raises(SchemaResolutionError, match="new_required"):
        schemaless_reader(io.BytesIO(value[10:]), parse_schema(current), parse_schema(broken))
    # while a field added with a default is fine
    compatible = copy.deepcopy(current)
    compatible["fields"].append(
        {"name": "new_optional", "type": ["null", "string"], "default": None}
    )
    record = schemaless_reader(
        io.BytesIO(value[10:]), parse_schema(current), parse_schema(compatible)
    )
    assert record["new_optional"] is None


def write_fixtures() -> None:
    """Freeze today's schemas and example events as history (run when adding a schema version)."""
    codec = Codec()
    for model in EVENT_MODELS:
        schema = schema_for(model)
        fp = fingerprint(schema).hex()
        (SCHEMA_DIR / "history" / f"{model.TYPE}@{fp}.avsc").write_text(
            json.dumps(schema, indent=2) + "\n"
        )
        (FIXTURES / f"{model.TYPE}.avro").write_bytes(codec.encode_value(EXAMPLES[model.TYPE]))


if __name__ == "__main__":
    write_fixtures()


def test_the_wheel_ships_every_schema_file() -> None:
    """A schema left out of package-data is missing from every `pip install` and image: events
    written with it could not be decoded there (history schemas matter in rolling upgrades)."""
    import tomllib
    from pathlib import PurePosixPath

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    globs = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]
    shipped = [PurePosixPath(g) for g in globs["driftline.events"]]
    for path in SCHEMA_DIR.rglob("*.avsc"):
        rel = PurePosixPath(path.relative_to(SCHEMA_DIR.parent).as_posix())
        assert any(len(rel.parts) == len(g.parts) and rel.match(str(g)) for g in shipped), rel
