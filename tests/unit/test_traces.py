"""W3C traceparent reading (settings/traces.py), the [tracing] endpoint's
check, and the WAPI's traceparent member: the parts of tracing that need
no collector."""

from __future__ import annotations

import pytest

from edges.wapi import rpc
from settings import checks, traces
from settings.fields import Invalid

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("header", "trace"),
    [
        (f"00-{TRACE}-{SPAN}-01", TRACE),
        (f"00-{TRACE}-{SPAN}-00", TRACE),  # not sampled: still the request's trace
        (f"01-{TRACE}-{SPAN}-01-what-comes-later", TRACE),  # a future version may add fields
        (f"00-{TRACE}-{SPAN}-01-extra", ""),  # version 00 has none
        (f"ff-{TRACE}-{SPAN}-01", ""),  # the forbidden version
        (f"00-{'0' * 32}-{SPAN}-01", ""),  # an all-zero trace id
        (f"00-{TRACE}-{'0' * 16}-01", ""),  # an all-zero parent id
        (f"00-{TRACE.upper()}-{SPAN}-01", ""),  # upper case is not allowed
        (f"00-{TRACE[:-1]}-{SPAN}-01", ""),
        ("", ""),
        ("garbage", ""),
        (f"00-{TRACE}-{SPAN}-01\n", ""),
        (f"01-{TRACE}-{SPAN}-01-" + "x" * 600, ""),  # beyond any header a hop passes on
    ],
)
def test_trace_id_of_a_traceparent(header: str, trace: str) -> None:
    assert traces.trace_id_of(header) == trace


def test_serving_names_the_trace_for_the_log_lines_then_forgets_it() -> None:
    assert traces.current_trace_id() == ""
    with traces.Serving(f"00-{TRACE}-{SPAN}-01") as trace:
        assert trace == traces.current_trace_id() == TRACE
        with traces.Serving("malformed") as other:
            assert other == ""
            assert traces.current_trace_id() == TRACE
    assert traces.current_trace_id() == ""


def test_serving_lets_a_frozen_exception_through() -> None:
    # The edge's RpcError is a frozen dataclass: a generator-based context
    # manager would fail setting its __traceback__ instead of raising it.
    with pytest.raises(rpc.RpcError), traces.Serving(f"00-{TRACE}-{SPAN}-01"):
        raise rpc.RpcError(5, "not found")


@pytest.mark.parametrize(
    "endpoint", ["", "http://127.0.0.1:4317", "https://otel.example.com:4317", "http://[::1]:4317/"]
)
def test_otlp_endpoints_accepted(endpoint: str) -> None:
    assert checks.otlp_endpoint(endpoint) == endpoint


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("127.0.0.1:4317", "http://host:port"),
        ("grpc://127.0.0.1:4317", "http://host:port"),
        ("http://127.0.0.1", "port"),
        ("http://127.0.0.1:99999", "port"),
        ("http://127.0.0.1:4318/v1/traces", "no path"),
        ("http://user:secret@127.0.0.1:4317", "alone"),
    ],
)
def test_otlp_endpoints_refused(endpoint: str, reason: str) -> None:
    with pytest.raises(Invalid, match=reason):
        checks.otlp_endpoint(endpoint)


def test_a_wapi_request_carries_its_traceparent() -> None:
    header = f"00-{TRACE}-{SPAN}-01"
    frame = rpc.parse(f'{{"jsonrpc":"2.0","id":1,"method":"A.B","traceparent":"{header}"}}', max_batch=1)
    (request,) = frame.requests
    assert request.traceparent == header
    assert rpc.parse('{"jsonrpc":"2.0","id":1,"method":"A.B"}', max_batch=1).requests[0].traceparent == ""


def test_a_traceparent_that_is_not_a_string_is_an_invalid_request() -> None:
    frame = rpc.parse('{"jsonrpc":"2.0","id":3,"method":"A.B","traceparent":7}', max_batch=1)
    (item,) = frame.items
    assert isinstance(item, rpc.Invalid)
    assert item.id == 3
    assert item.error.code == rpc.INVALID_REQUEST
    assert item.error.message == 'invalid request: "traceparent" must be a string'
