"""Domain failures reach clients as the gRPC status their kind names, with
the same details an ApiError carries (core/errors.py from_failure)."""

from __future__ import annotations

import grpc
import pytest

from core import errors, failures


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (failures.Invalid("subscriber.email", "is not an address"), grpc.StatusCode.INVALID_ARGUMENT),
        (failures.NotFound("subscriber 'x' does not exist"), grpc.StatusCode.NOT_FOUND),
        (failures.AlreadyExists("exists"), grpc.StatusCode.ALREADY_EXISTS),
        (failures.PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
        (failures.Unauthenticated("expired", reason="EXPIRED"), grpc.StatusCode.UNAUTHENTICATED),
        (failures.FailedPrecondition("ended"), grpc.StatusCode.FAILED_PRECONDITION),
        (failures.Aborted("raced"), grpc.StatusCode.ABORTED),
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
    assert "offer.sdp" in error.status_details().decode(errors="replace")
