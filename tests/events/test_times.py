"""A time per row: packed int64 microseconds on the wire, ISO timestamps in JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from driftline.events import Codec, RowTimes, ScoreCompleted, ScoreRequested

T = datetime(2024, 3, 1, 12, tzinfo=UTC)
TIMES = [T, T + timedelta(minutes=10, microseconds=7), T + timedelta(hours=1)]


def _request(**kw: object) -> ScoreRequested:
    fields: dict[str, object] = {
        "model": "m",
        "request_id": "r",
        "columns": ["x"],
        "rows": [[1.0], [2.0], [3.0]],
        "event_time": T,
    }
    return ScoreRequested(**{**fields, **kw})  # type: ignore[arg-type]


def test_row_times_travel_as_packed_int64_microseconds() -> None:
    event = _request(row_times=TIMES)
    assert event.row_times is not None and event.row_times.datetimes() == TIMES
    assert (
        event.model_dump()["row_times"]
        == np.array(
            [int(t.timestamp()) * 1_000_000 + t.microsecond for t in TIMES], dtype="<i8"
        ).tobytes()
    )
    codec = Codec()
    assert codec.decode_value(codec.encode_value(event), "score.requested") == event
    assert event.model_dump(mode="json")["row_times"] == [t.isoformat() for t in TIMES]
    assert ScoreRequested.model_validate_json(event.model_dump_json()) == event


def test_row_times_come_from_datetimes_strings_or_datetime64() -> None:
    naive = [t.replace(tzinfo=None) for t in TIMES]  # naive: UTC
    utc = pd.DatetimeIndex(TIMES).tz_convert(None).to_numpy()  # datetime64[ns], UTC
    expected = RowTimes.of(TIMES)
    assert RowTimes.of(naive) == RowTimes.of([t.isoformat() for t in TIMES]) == expected
    assert utc.dtype.kind == "M" and RowTimes.of(utc) == expected
    assert expected.seconds().tolist() == [t.timestamp() for t in TIMES]


def test_an_old_request_has_no_row_times_and_a_wrong_count_is_refused() -> None:
    assert _request().row_times is None
    with pytest.raises(ValidationError, match="row_times has 2 times for 3 rows"):
        _request(row_times=TIMES[:2])
    with pytest.raises(ValidationError, match="row_times must be a list of timestamps"):
        _request(row_times=["yesterday", "today", "tomorrow"])
    with pytest.raises(ValidationError, match="row_times has 3 times for 1 rows"):
        ScoreCompleted(model="m", request_id="r", version=1, predictions=[1.0], row_times=TIMES)
