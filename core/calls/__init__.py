"""Calls: WebRTC call signalling between subscribers.

- ``machine``: the rules of one call, a pure state machine returning effects.
- ``handler``: runs the machines against the store, the event log, timers,
  lost devices and in-call presence (``CallHandler``, started and stopped by
  the composition root).
- ``servicer``: CallsService, the thin gRPC adapter over the handler.
- ``messages``: machine values to and from wac.v1 messages.
- ``ice``: STUN/TURN servers with TURN REST API credentials.
- ``store``, ``tables``, ``writer``: call rows (kept as history), the
  snapshots of live calls, and group commit of their writes.
"""
