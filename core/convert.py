"""Small conversions between stored values and protobuf well-known types."""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2

# Times are stored as float seconds, which hold microseconds exactly; going
# to nanoseconds would print float noise ("...37.320010752Z") in every JSON.


def timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(round(seconds * 1e6))
    return ts


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromMicroseconds(round(seconds * 1e6))
    return value
