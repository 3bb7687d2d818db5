"""The one time type every API takes: UTC when naive, bounded so arithmetic never overflows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from neurostream.api import Timestamp

ts = TypeAdapter(Timestamp)


def test_naive_times_are_utc_and_aware_ones_keep_their_offset() -> None:
    assert ts.validate_python("2026-11-23T10:00:00") == datetime(2026, 11, 23, 10, tzinfo=UTC)
    plus2 = ts.validate_python("2026-11-23T12:00:00+02:00")
    assert plus2.utcoffset() == timedelta(hours=2)
    assert plus2 == datetime(2026, 11, 23, 10, tzinfo=UTC)
    assert ts.validate_python(1_700_000_000) == datetime.fromtimestamp(1_700_000_000, UTC)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "9999-12-31"])
def test_years_outside_the_range_are_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="between 1970 and 9998"):
        ts.validate_python(value)


def test_the_bounds_leave_room_for_window_arithmetic() -> None:
    lo = ts.validate_python("1970-01-01T00:00:00Z")
    hi = ts.validate_python(datetime(9998, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))))
    assert (lo - timedelta(days=1)).year == 1969
    assert (hi + timedelta(days=365)).year == 9999
