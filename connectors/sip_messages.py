"""Messages out through the SIP gateway: a SIP MESSAGE (RFC 3428) over
WebSocket (RFC 7118) into Kamailio's ``[gateway] ws_listen``, as a browser
sends one, with the sender's own access token as its bearer (RFC 8898).

The gateway runs its whole script on it: the token verified, From checked
against it, ``message.pstn`` asked for a number, then on to the trunk. So
wac holds no second policy for messages, and the trunk's answer (or the
gateway's refusal) comes back as the final response here. Each message is
one short connection: messages are rare next to calls, and a connection
of its own cannot mix up two senders' tokens.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import websockets
from websockets.exceptions import WebSocketException

from core import failures

log = logging.getLogger("wac.gateway")

# Kamailio answers on loopback within milliseconds, and a trunk within a
# second or two; RFC 3261's Timer F (32 s) is longer than anyone waits
# for a chat message's tick.
TIMEOUT = 10.0


class SipMessages:
    """The gateway's message sender (``core/chat/handler.py``'s ``MessageGateway``)."""

    def __init__(self, *, ws_listen: str, domain: str, timeout: float = TIMEOUT) -> None:
        self._url = f"ws://{ws_listen}/"
        self._domain = domain
        self._timeout = timeout

    async def send(self, *, token: str, sender: str, to: str, text: str) -> None:
        """Sends ``text`` from subscriber ``sender`` to ``to`` (a tel: or sip:
        URI). Returns once the far end took it (2xx); raises a ``failures``
        error saying why not."""
        request = self._request(token, sender, to, text)
        try:
            async with asyncio.timeout(self._timeout):
                async with websockets.connect(
                    self._url, subprotocols=[websockets.Subprotocol("sip")], open_timeout=None, max_size=65536
                ) as ws:
                    await ws.send(request)
                    while True:
                        status, reason = _status(await ws.recv())
                        if status >= 200:
                            break
        except TimeoutError:
            raise failures.Unavailable("the SIP gateway did not answer the message in time") from None
        except (OSError, WebSocketException) as exc:
            log.warning("SIP MESSAGE: the gateway at %s is out of reach: %s", self._url, type(exc).__name__)
            raise failures.Unavailable("the SIP gateway is out of reach") from None
        _raise_for(status, reason)

    def _request(self, token: str, sender: str, to: str, text: str) -> str:
        ruri = f"sip:{to[4:]}@{self._domain};user=phone" if to.startswith("tel:") else to
        call_id = f"{secrets.token_hex(12)}@wac"
        body = text.encode()
        head = "\r\n".join(
            [
                f"MESSAGE {ruri} SIP/2.0",
                f"Via: SIP/2.0/WS {secrets.token_hex(6)}.invalid;branch=z9hG4bK{secrets.token_hex(10)}",
                "Max-Forwards: 70",
                f"From: <sip:{sender}@{self._domain}>;tag={secrets.token_hex(5)}",
                f"To: <{ruri}>",
                f"Call-ID: {call_id}",
                "CSeq: 1 MESSAGE",
                f"Authorization: Bearer {token}",
                "Content-Type: text/plain;charset=UTF-8",
                f"Content-Length: {len(body)}",
            ]
        )
        return f"{head}\r\n\r\n{text}"


def _status(frame: str | bytes) -> tuple[int, str]:
    """A response's status and reason; (0, "") for anything else on the socket
    (the connection is this one message's: no other transaction is on it)."""
    text = frame.decode(errors="replace") if isinstance(frame, bytes) else frame
    parts = text.partition("\r\n")[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
        return 0, ""
    return int(parts[1]), parts[2] if len(parts) > 2 else ""


def _raise_for(status: int, reason: str) -> None:
    said = f"the gateway answered {status} {reason}".strip()
    if 200 <= status < 300:
        return
    if status == 401:
        raise failures.Unauthenticated(f"{said}: the access token was refused")
    if status == 403:
        raise failures.PermissionDenied(said)
    if status in (404, 410, 484, 604):
        raise failures.NotFound(said)
    if status in (408, 480, 486, 500, 502, 503, 504, 600):
        raise failures.Unavailable(said)
    raise failures.FailedPrecondition(said)
