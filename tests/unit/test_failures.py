"""Domain failures reach clients as the gRPC status their kind names, with
the same details an ApiError carries (core/errors.py from_failure)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from core import errors, failures


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (failures.Invalid("subscriber.email", "is not an address"), grpc.StatusCode.INVALID_ARGUMENT),
        (failures.Malformed("malformed request"), grpc.StatusCode.INVALID_ARGUMENT),
        (failures.NotFound("subscriber 'x' does not exist"), grpc.StatusCode.NOT_FOUND),
        (failures.AlreadyExists("exists"), grpc.StatusCode.ALREADY_EXISTS),
        (failures.PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
        (failures.Unauthenticated("expired", reason="EXPIRED"), grpc.StatusCode.UNAUTHENTICATED),
        (failures.FailedPrecondition("ended"), grpc.StatusCode.FAILED_PRECONDITION),
        (failures.Aborted("raced"), grpc.StatusCode.ABORTED),
        (failures.OutOfRange("expired", reason="EVENTS_EXPIRED"), grpc.StatusCode.OUT_OF_RANGE),
        (failures.Exhausted("slow down", retry_after=1.5), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (failures.Unavailable("gateway down"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_each_failure_maps_to_its_status_with_its_details(failure: failures.Failure, code: grpc.StatusCode) -> None:
    error = errors.from_failure(failure)
    assert (error.code, error.message, error.field, error.reason, error.retry_after) == (
        code,
        failure.message,
        failure.field,
        failure.reason,
        failure.retry_after,
    )
    assert error.status().code == code.value[0]


def test_an_invalid_field_is_named_in_the_message_and_the_details() -> None:
    error = errors.from_failure(failures.Invalid("offer.sdp", "is empty"))
    assert error.message == "offer.sdp: is empty"
    violation = error.status().details[0]
    bad = error_details_pb2.BadRequest()
    assert violation.Unpack(bad) and bad.field_violations[0].field == "offer.sdp"


def test_the_status_carries_each_detail_once_in_order() -> None:
    error = errors.ApiError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "q: too many", field="q", retry_after=1.5, reason="RATE"
    )
    status = error.status()
    assert (status.code, status.message) == (grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], "q: too many")
    bad, retry, info = error_details_pb2.BadRequest(), error_details_pb2.RetryInfo(), error_details_pb2.ErrorInfo()
    assert all(d.Unpack(m) for d, m in zip(status.details, (bad, retry, info), strict=True))
    assert [(v.field, v.description) for v in bad.field_violations] == [("q", "q: too many")]
    assert retry.retry_delay.ToMilliseconds() == 1500
    assert (info.reason, info.domain) == ("RATE", "wac")


def test_a_bare_status_has_no_details() -> None:
    assert not errors.from_failure(failures.NotFound("gone")).status().details
