"""Reading the google.rpc details of a failed gRPC call, as a client of the
core would: with grpcio-status, which also checks that the details agree
with the call's own status."""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

M = TypeVar("M", bound=Message)


def _detail(err: grpc.aio.AioRpcError, kind: type[M]) -> M | None:
    status = rpc_status.from_call(err)
    for detail in status.details if status is not None else ():
        if detail.Is(kind.DESCRIPTOR):
            found = kind()
            detail.Unpack(found)
            return found
    return None


def retry_after(err: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay of a failed call, in seconds, or None without one."""
    info = _detail(err, error_details_pb2.RetryInfo)
    return None if info is None else float(info.retry_delay.ToTimedelta().total_seconds())


def field_violations(err: grpc.aio.AioRpcError) -> list[str]:
    """The fields a google.rpc.BadRequest detail names."""
    bad = _detail(err, error_details_pb2.BadRequest)
    return [] if bad is None else [v.field for v in bad.field_violations]
