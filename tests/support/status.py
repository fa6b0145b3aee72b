"""Reading the google.rpc details of a failed gRPC call."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2


def retry_after(err: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay of a failed call, in seconds, or None without one."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return float(info.retry_delay.ToTimedelta().total_seconds())
    return None
