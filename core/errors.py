"""Canonical errors: every failure a client sees is a gRPC status with a
precise message, and where a field is at fault, a google.rpc.BadRequest
detail naming it. Envoy's transcoder turns the same status into SAPI's JSON
error body, and the WAPI edge into a JSON-RPC error, so it is built once here.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from core import failures


class ApiError:
    """A failure as the client sees it: a status code, a precise message and
    the details (the field at fault, a retry delay, a reason). Built only by
    ``from_failure``; handlers raise the domain failures of core/failures.py."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        field: str | None = None,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.reason = reason

    def status(self) -> status_pb2.Status:
        """The failure as a google.rpc.Status, with its details."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.field is not None:
            violation = error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.message)
            status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        if self.retry_after is not None:
            info = error_details_pb2.RetryInfo()
            info.retry_delay.FromMilliseconds(int(self.retry_after * 1000))
            status.details.add().Pack(info)
        if self.reason is not None:
            status.details.add().Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain="wac"))
        return status


_CODES: dict[type[failures.Failure], grpc.StatusCode] = {
    failures.Invalid: grpc.StatusCode.INVALID_ARGUMENT,
    failures.Malformed: grpc.StatusCode.INVALID_ARGUMENT,
    failures.NotFound: grpc.StatusCode.NOT_FOUND,
    failures.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    failures.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    failures.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    failures.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    failures.Aborted: grpc.StatusCode.ABORTED,
    failures.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    failures.Exhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    failures.Unavailable: grpc.StatusCode.UNAVAILABLE,
    failures.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}


def from_failure(failure: failures.Failure) -> ApiError:
    """The one mapping of a domain failure to the API's error (the interceptor applies it)."""
    code = next((c for kind, c in _CODES.items() if isinstance(failure, kind)), grpc.StatusCode.UNKNOWN)
    return ApiError(code, failure.message, field=failure.field, retry_after=failure.retry_after, reason=failure.reason)
