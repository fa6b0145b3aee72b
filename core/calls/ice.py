"""ICE servers for a device: STUN as configured, TURN with time-limited
credentials in the TURN REST API form (coturn's ``use-auth-secret``).

The credential is ``base64(HMAC-SHA1(secret, "<expiry unix time>:<username>"))``:
the TURN server recomputes it from the shared secret, so wac keeps no TURN
state. Pure: the caller passes the time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from settings.config import IceConfig


@dataclass(frozen=True, slots=True)
class IceServer:
    """One RTCIceServer; username and credential empty for STUN."""

    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""


def turn_credentials(secret: str, username: str, expires_at: int) -> tuple[str, str]:
    """The TURN REST API (username, credential) valid until ``expires_at``."""
    turn_username = f"{expires_at}:{username}"
    digest = hmac.new(secret.encode(), turn_username.encode(), hashlib.sha1).digest()
    return turn_username, base64.b64encode(digest).decode()


def ice_servers(config: IceConfig, username: str, now: float) -> tuple[list[IceServer], int]:
    """The servers for ``username`` and how long their credentials last (seconds).

    Only TURN servers get credentials, and only when a secret is configured;
    TURN URLs without a secret are returned bare, for a TURN server that
    authenticates some other way. The ttl is 0 when no credential was issued.
    """
    servers: list[IceServer] = []
    if config.stun_urls:
        servers.append(IceServer(urls=tuple(config.stun_urls)))
    ttl = 0
    if config.turn_urls:
        if config.turn_secret:
            ttl = config.turn_ttl
            name, credential = turn_credentials(config.turn_secret, username, int(now) + ttl)
            servers.append(IceServer(tuple(config.turn_urls), name, credential))
        else:
            servers.append(IceServer(urls=tuple(config.turn_urls)))
    return servers, ttl
