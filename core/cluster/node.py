"""This node's id: its name in leases and heartbeats, unique in the cluster."""

from __future__ import annotations

import os
import re
import secrets
import socket

# What [cluster] node_id accepts (settings/checks.py): it lands in Redis keys
# and values, so a derived id is made of the same characters.
_OUTSIDE = re.compile(r"[^A-Za-z0-9._-]+")
_LONGEST = 64


def node_id(configured: str = "") -> str:
    """The configured id, or one derived at start from the host name and the
    process id, with a few random characters: a container restarted keeps
    its host name and often its pid (1), yet is a new node."""
    if configured:
        return configured
    tail = f"-{os.getpid()}-{secrets.token_hex(3)}"
    host = _OUTSIDE.sub("-", socket.gethostname()).strip("-") or "node"
    return host[: _LONGEST - len(tail)] + tail
