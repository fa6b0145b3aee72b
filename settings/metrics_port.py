"""The /metrics HTTP listener that the core and the edge each serve their
registry on (prometheus_client's, on a daemon thread). Imported only by
their metrics modules: the supervisor never loads prometheus_client."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

from settings import checks

log = logging.getLogger("wac.metrics")


class Listener:
    def __init__(self, address: str, registry: CollectorRegistry) -> None:
        host, port = checks.split_address(address, any_port=True)  # checked with the configuration
        self._server, self._thread = start_http_server(port, host, registry=registry)
        self.port: int = self._server.server_port
        self.address = f"{host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def listen(address: str, registry: CollectorRegistry, role: str) -> Listener | None:
    """Serve ``registry`` on ``address``; None when it is empty (off), or
    when the port is taken: metrics are the operator's view, not the
    service, so the ``role`` process still serves, and says so."""
    if not address:
        return None
    try:
        listener = Listener(address, registry)
    except OSError as exc:
        log.error("%s metrics not served: cannot listen on %s: %s", role, address, exc)
        return None
    log.info("%s metrics on http://%s/metrics", role, listener.address)
    return listener
