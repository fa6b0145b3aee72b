"""Domain failures: what went wrong, in the domain's words.

Rules, handlers, stores and connectors raise these; nothing here knows
gRPC. The interceptor maps them to gRPC statuses in one place
(``core/errors.py``: ``from_failure``), which Envoy turns into SAPI's JSON
error body and the WAPI edge into a JSON-RPC error. The call machine's own
``CallError`` is the model this follows.
"""

from __future__ import annotations


class Failure(Exception):
    """A failure to report to the client as it is.

    ``field`` names the request field at fault, ``reason`` is a stable
    machine-readable word (e.g. a token's ``REVOKED``), ``retry_after`` the
    seconds after which the same request may succeed.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason
        self.retry_after = retry_after


class Invalid(Failure):
    """The request is malformed; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)


class Malformed(Failure):
    """The request is not a message of the method's type: no one field is at fault."""


class NotFound(Failure):
    """The thing named does not exist."""


class AlreadyExists(Failure):
    """The thing to create exists already."""


class PermissionDenied(Failure):
    """The caller may not do this."""


class Unauthenticated(Failure):
    """The caller's credential is missing or not valid."""


class FailedPrecondition(Failure):
    """The request is fine but the state does not allow it now."""


class Aborted(Failure):
    """A concurrent change won; the caller may retry."""


class OutOfRange(Failure):
    """A position asked for is past what is kept (an event log's dropped events)."""


class Unimplemented(Failure):
    """The method exists but is not enabled in this deployment (a feature
    its configuration leaves out)."""


class Exhausted(Failure):
    """A bound is reached (a rate, a queue, a count)."""


class Unavailable(Failure):
    """A system wac depends on did not answer; the caller may retry."""
