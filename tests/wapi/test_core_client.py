"""edges.wapi.core_client: gRPC statuses as JSON-RPC errors."""

from __future__ import annotations

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from core import errors, failures
from edges.wapi.core_client import call_metadata, rich_status, status_error


class Finished:
    """A finished call as grpc.aio.AioRpcError shows it: code, details, trailers."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, bytes], ...]) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailing


def trailer(error: errors.ApiError) -> status_pb2.Status | None:
    """What the edge reads back from the trailers the core's interceptor writes."""
    sent = rpc_status.to_status(error.status())
    return rich_status(Finished(sent.code, sent.details, sent.trailing_metadata))


def test_core_error_keeps_message_and_details() -> None:
    bad = errors.from_failure(failures.Invalid("subscriber.email", "is not an e-mail address"))
    failure = status_error("M.N", bad.code, bad.message, trailer(bad))
    assert failure.code == 3
    assert failure.message == "subscriber.email: is not an e-mail address"
    assert failure.data == {
        "status": "INVALID_ARGUMENT",
        "fieldViolations": [{"field": "subscriber.email", "description": "subscriber.email: is not an e-mail address"}],
    }
    slow = errors.from_failure(failures.Exhausted("too many", retry_after=1.5))
    assert status_error("M.N", slow.code, slow.message, trailer(slow)).data == {
        "status": "RESOURCE_EXHAUSTED",
        "retryDelay": "1.500s",
    }
    gone = errors.from_failure(failures.Unauthenticated("revoked", reason="REVOKED"))
    assert status_error("M.N", gone.code, gone.message, trailer(gone)).data == {
        "status": "UNAUTHENTICATED",
        "reason": "REVOKED",
        "domain": "wac",
    }


def test_transport_failures_get_a_clear_message_without_internals() -> None:
    down = status_error("A.B", grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; 10.1.2.3:50051", None)
    assert (down.code, down.message) == (14, "the wac core is unavailable; try again shortly")
    late = status_error("A.B", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", None, 10)
    assert (late.code, late.message) == (4, "the wac core did not answer within 10 s")
    missing = status_error("A.B", grpc.StatusCode.UNIMPLEMENTED, "Method not found!", None)
    assert (missing.code, missing.message) == (12, "A.B is not implemented by this core")
    crash = status_error("A.B", grpc.StatusCode.UNKNOWN, "Exception calling application: boom", None)
    assert crash.message == "internal error in the wac core"
    ref = status_error("A.B", grpc.StatusCode.INTERNAL, "internal error (ref 1234abcd); see the log", None)
    assert ref.message.startswith("internal error (ref 1234abcd)")
    garbled = Finished(grpc.StatusCode.NOT_FOUND, "no such", (("grpc-status-details-bin", b"\xff\x00"),))
    assert rich_status(garbled) is None
    assert (status_error("A.B", garbled.code(), garbled.details(), None).message) == "no such"
    other = errors.from_failure(failures.NotFound("another message")).status().SerializeToString()
    contradicting = Finished(grpc.StatusCode.NOT_FOUND, "no such", (("grpc-status-details-bin", other),))
    assert rich_status(contradicting) is None, "details that contradict the status are not the core's"


def test_call_metadata() -> None:
    assert call_metadata("t", "203.0.113.9") == (("authorization", "Bearer t"), ("x-forwarded-for", "203.0.113.9"))
    assert call_metadata(None, "") == ()
