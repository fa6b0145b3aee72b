"""The vendor connector to the SIP gateway: Kamailio's JSON-RPC over HTTP
(``POST http://<[gateway] jsonrpc_listen>/RPC``, loopback only).

Kamailio answers a JSON-RPC error with its code as the HTTP status and the
JSON-RPC error in the body, so the body is read whatever the status.
Everything that goes wrong is a ``KamailioError``; nothing here knows gRPC.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.calls.gateway import CallReport, GatewayError, ReportKind
from core.identity.revocations import SessionsRevoked

log = logging.getLogger("wac.gateway")

# The usrloc table the script saves registrations in (save("location")).
LOCATION = "location"
# The Contact URI parameter in which the script records the session whose
# token saved the binding (gateway/kamailio.cfg.tmpl, route[REGISTRAR]).
SESSION_PARAM = "wac-session"
# Kamailio answers within milliseconds on loopback; longer is a gateway
# that is down or stuck.
TIMEOUT = 2.0


class KamailioError(Exception):
    """A JSON-RPC call failed: Kamailio unreachable, too slow, or answering
    an error. ``code`` is the JSON-RPC error code, None when there was no
    answer (unreachable, timed out, not JSON-RPC)."""

    def __init__(self, method: str, message: str, code: int | None = None) -> None:
        super().__init__(f"Kamailio {method}: {message}")
        self.method = method
        self.code = code
        self.detail = message

    @property
    def not_found(self) -> bool:
        """Kamailio holds no such thing (an AoR without contacts): usrloc
        says so with a plain 500, told apart by its message only."""
        return self.code is not None and "not found" in self.detail.lower()


@dataclass(frozen=True, slots=True)
class Registration:
    """One contact bound to a subscriber's address of record."""

    contact: str
    # Seconds until it expires, as Kamailio counts them.
    expires: int
    call_id: str
    user_agent: str
    # Kamailio's unique id of the binding (usrloc ruid).
    ruid: str
    # The wac session whose token saved it; "" if the script recorded none.
    session_id: str


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a dialog as Kamailio reaches it (dlg.list's "caller" or
    "callee"): what an in-dialog request to that side is built from."""

    tag: str = ""
    contact: str = ""
    cseq: int = 0
    # The Route set of requests to this side: "<sip:...;lr>,<sip:...;lr>".
    route_set: str = ""
    # Kamailio's socket towards this side: "udp:127.0.0.1:5060".
    socket: str = ""


@dataclass(frozen=True, slots=True)
class Dialog:
    """A call through the gateway, as Kamailio's dialog module tracks it."""

    # Kamailio's handle of the dialog (dlg.end_dlg takes both).
    h_entry: int
    h_id: int
    call_id: str
    from_uri: str
    to_uri: str
    # 1 unconfirmed, 2 early, 3 confirmed, 4 confirmed and ACKed, 5 deleted.
    state: int
    # Unix seconds; 0 until the call is answered.
    start_time: int
    # Unix seconds: when the INVITE came.
    init_time: int = 0
    # The caller's From tag, and its INVITE's CSeq number.
    from_tag: str = ""
    cseq: int = 0
    # The script's dialog variables ($dlg_var): wac_caller, wac_callee, ...
    variables: dict[str, str] = field(default_factory=dict)
    callee: Leg = field(default_factory=Leg)

    def report(self) -> CallReport | None:
        """The dialog as the report wac would have had of it: INVITE while
        it rings, ANSWER once confirmed; None for a dialog the script did
        not describe (not one of wac's calls)."""
        caller, callee = self.variables.get("wac_caller"), self.variables.get("wac_callee")
        if not caller or not callee or not self.from_tag:
            return None
        answered = self.state in (3, 4)
        return CallReport(
            kind=ReportKind.ANSWER if answered else ReportKind.INVITE,
            sip_call_id=self.call_id,
            from_tag=self.from_tag,
            caller=caller,
            callee=callee,
            caller_session=self.variables.get("wac_session", ""),
            video=self.variables.get("wac_video") == "1",
            at=float(self.start_time if answered and self.start_time else self.init_time),
            cseq=self.cseq,
        )


class KamailioRpc:
    """JSON-RPC 2.0 client of one Kamailio. Keyword-only options; one
    connection pool, closed by ``close()`` (idempotent)."""

    def __init__(self, listen: str, *, timeout: float = TIMEOUT) -> None:
        self._url = f"http://{listen}/RPC"
        self._client = httpx.AsyncClient(timeout=timeout)
        self._ids = itertools.count(1)

    async def close(self) -> None:
        await self._client.aclose()

    async def call(self, method: str, *params: str | int) -> Any:
        """The ``result`` of ``method(params)``; KamailioError otherwise."""
        body = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": next(self._ids)}
        try:
            answer = await self._client.post(self._url, json=body)
        except httpx.HTTPError as exc:
            raise KamailioError(method, f"no answer from {self._url} ({type(exc).__name__}: {exc})") from None
        try:
            decoded = answer.json()
        except ValueError:
            raise KamailioError(method, f"HTTP {answer.status_code}, not a JSON-RPC answer") from None
        if not isinstance(decoded, dict):
            raise KamailioError(method, f"HTTP {answer.status_code}, not a JSON-RPC answer")
        error = decoded.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise KamailioError(
                method, str(error.get("message", "error")), code if isinstance(code, int) else answer.status_code
            )
        if answer.status_code != 200 or "result" not in decoded:
            raise KamailioError(method, f"HTTP {answer.status_code} without a result", answer.status_code)
        return decoded["result"]

    async def registrations(self, username: str) -> list[Registration]:
        """The contacts bound to username's address of record (``ul.lookup``);
        empty when none."""
        try:
            result = await self.call("ul.lookup", LOCATION, username)
        except KamailioError as exc:
            if exc.not_found:
                return []
            raise
        return [_registration(entry) for entry in _contacts(result)]

    async def remove_session_registrations(self, username: str, session_ids: Collection[str]) -> None:
        """Remove username's contacts saved with a token of one of
        session_ids (``ul.rm_contact``), and those that name no session: a
        binding that cannot be told apart goes with any revocation."""
        for registration in await self.registrations(username):
            if registration.session_id in session_ids or not registration.session_id:
                try:
                    await self.call("ul.rm_contact", LOCATION, username, registration.contact)
                except KamailioError as exc:
                    # Gone meanwhile (expired, its connection dropped).
                    if not exc.not_found:
                        raise

    async def remove_registrations(self, username: str) -> None:
        """Remove every contact of username's address of record (``ul.rm``);
        none to remove is no error."""
        try:
            await self.call("ul.rm", LOCATION, username)
        except KamailioError as exc:
            if not exc.not_found:
                raise

    async def dialogs(self) -> list[Dialog]:
        """The dialogs Kamailio tracks (``dlg.list``): calls ringing or up."""
        result = await self.call("dlg.list")
        return [_dialog(entry) for entry in result or [] if isinstance(entry, dict)]

    async def end_dialog(self, dialog: Dialog) -> None:
        """End a call (``dlg.end_dlg``): Kamailio sends BYE to both sides,
        the caller's first. It does not always send the second: when the
        caller's 200 to its BYE is handled (by another Kamailio process)
        before the dialog module gets to the callee, the dialog is already
        deleted and the callee's BYE is dropped with "terminating
        non-confirmed dialogs not supported" (kamailio/kamailio#4169,
        #4268). So the callee's BYE is looked for among Kamailio's
        transactions and, when missing, sent here (``bye_callee``)."""
        await self.call("dlg.end_dlg", dialog.h_entry, dialog.h_id)
        if dialog.state in (3, 4) and dialog.callee.contact and not await self.callee_bye_sent(dialog):
            log.warning("Kamailio dropped the callee's BYE of %s; sending it", dialog.call_id)
            await self.bye_callee(dialog)

    async def callee_bye_sent(self, dialog: Dialog) -> bool:
        """Whether Kamailio holds a BYE transaction towards the callee of
        this dialog (``tm.list``; a completed one is kept for its wait
        timer, seconds after the answer)."""
        for cell in await self.call("tm.list") or []:
            if not isinstance(cell, dict) or str(cell.get("method", "")) != "BYE":
                continue
            # Whole header lines: "Call-ID: abc\r\n", "To: <sip:...>;tag=x\r\n".
            if _header_value(cell.get("callid")) != dialog.call_id:
                continue
            # The BYE to the callee carries the callee's tag in its To.
            if f"tag={dialog.callee.tag}" in str(cell.get("to", "")):
                return True
        return False

    async def bye_callee(self, dialog: Dialog) -> None:
        """Send the callee the BYE the dialog module would have (``tm.t_uac_start``):
        the callee's contact as Request-URI, its route set, the dialog's
        tags, the caller's next CSeq."""
        leg = dialog.callee
        headers = [
            f"From: <{dialog.from_uri}>;tag={dialog.from_tag}",
            f"To: <{dialog.to_uri}>;tag={leg.tag}",
            f"Call-ID: {dialog.call_id}",
            f"CSeq: {dialog.cseq + 1} BYE",
            "Max-Forwards: 70",
        ]
        routes = [route.strip() for route in leg.route_set.split(",") if route.strip()]
        if routes:
            headers.append(f"Route: {', '.join(routes)}")
        next_hop = routes[0].strip("<>") if routes else "."
        await self.call(
            "tm.t_uac_start", "BYE", leg.contact, next_hop, leg.socket or ".", "\r\n".join(headers) + "\r\n"
        )

    async def dialog(self, call_id: str, from_tag: str) -> Dialog | None:
        """The dialog of that Call-ID and From tag (``dlg.dlg_list``); None
        when Kamailio holds none."""
        try:
            result = await self.call("dlg.dlg_list", call_id, from_tag)
        except KamailioError as exc:
            if exc.not_found:
                return None
            raise
        entries = result if isinstance(result, list) else [result]
        for entry in entries:
            if isinstance(entry, dict) and entry.get("call-id") == call_id:
                return _dialog(entry)
        return None

    async def cancel(self, call_id: str, cseq: int) -> None:
        """Cancel the INVITE transaction of that Call-ID and CSeq number
        (``tm.cancel``): CANCEL to its branches, 487 to the caller."""
        await self.call("tm.cancel", call_id, str(cseq))


class KamailioCallControl:
    """Ends gateway calls for wac's HangupCall (core.calls.gateway.GatewayControl)."""

    def __init__(self, rpc: KamailioRpc) -> None:
        self._rpc = rpc

    async def end_call(self, sip_call_id: str, from_tag: str) -> None:
        try:
            dialog = await self._rpc.dialog(sip_call_id, from_tag)
            if dialog is None:
                raise GatewayError("the gateway holds no such call")
            await self._rpc.end_dialog(dialog)
        except KamailioError as exc:
            raise GatewayError(exc.detail) from None

    async def cancel_call(self, sip_call_id: str, cseq: int) -> None:
        try:
            await self._rpc.cancel(sip_call_id, cseq)
        except KamailioError as exc:
            raise GatewayError(exc.detail) from None


def _dialog(entry: dict[str, Any]) -> Dialog:
    def number(key: str) -> int:
        value = entry.get(key)
        return value if isinstance(value, int) else 0

    caller = entry.get("caller")
    caller = caller if isinstance(caller, dict) else {}
    cseq = str(caller.get("cseq", "0"))
    callee = entry.get("callee")
    callee = callee if isinstance(callee, dict) else {}
    callee_cseq = str(callee.get("cseq", "0"))
    # "variables": [{"wac_caller": "alice"}, {"anchored": "1"}, ...]
    variables: dict[str, str] = {}
    for item in entry.get("variables") or []:
        if isinstance(item, dict):
            variables.update({str(k): str(v) for k, v in item.items()})
    return Dialog(
        h_entry=number("h_entry"),
        h_id=number("h_id"),
        call_id=str(entry.get("call-id", "")),
        from_uri=str(entry.get("from_uri", "")),
        to_uri=str(entry.get("to_uri", "")),
        state=number("state"),
        start_time=number("start_ts"),
        init_time=number("init_ts"),
        from_tag=str(caller.get("tag", "")),
        cseq=int(cseq) if cseq.isdigit() else 0,
        variables=variables,
        callee=Leg(
            tag=str(callee.get("tag", "")),
            contact=str(callee.get("contact", "")),
            cseq=int(callee_cseq) if callee_cseq.isdigit() else 0,
            route_set=str(callee.get("route_set", "")),
            socket=str(callee.get("socket", "")),
        ),
    )


def _header_value(line: Any) -> str:
    """The value of a header line as tm.list gives it ("Call-ID: abc\r\n")."""
    return str(line or "").partition(":")[2].strip()


def _contacts(result: Any) -> list[dict[str, Any]]:
    # {"AoR": "alice", "Contacts": [{"Contact": {"Address": ..., ...}}, ...]}
    if not isinstance(result, dict):
        return []
    contacts = result.get("Contacts") or []
    return [item["Contact"] for item in contacts if isinstance(item, dict) and isinstance(item.get("Contact"), dict)]


def _registration(contact: dict[str, Any]) -> Registration:
    expires = contact.get("Expires")
    address = str(contact.get("Address", ""))
    return Registration(
        contact=address,
        expires=expires if isinstance(expires, int) else 0,
        call_id=str(contact.get("Call-ID", "")),
        user_agent=str(contact.get("User-Agent", "")),
        ruid=str(contact.get("Ruid", "")),
        session_id=_session_of(address),
    )


def _session_of(address: str) -> str:
    # sip:user@host:port;transport=ws;alias=...;wac-session=ID. The
    # gateway's is the last (the script refuses a client's own).
    session = ""
    for param in address.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == SESSION_PARAM:
            session = value.strip()
    return session


class RevokedRegistrations:
    """Ends the gateway registrations of subscribers whose sessions are
    revoked, so that no inbound call reaches a revoked device.

    Every session's end (RevokeSessions, disabling, deleting, a new
    password) removes every contact of the subscriber; one session's end
    (logout, a reused refresh token) removes the contacts saved with that
    session's tokens, and those that name no session.

    The removal runs in a task of its own: the revocation never waits for
    Kamailio nor fails with it. A Kamailio that is down is retried
    ``attempts`` times, ``first_delay`` seconds apart then doubling, and
    then given up with a warning (a restarted Kamailio holds no
    registrations: they live in its memory only).
    """

    def __init__(self, rpc: KamailioRpc, *, attempts: int = 5, first_delay: float = 0.25) -> None:
        self._rpc = rpc
        self._attempts = attempts
        self._first_delay = first_delay
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def sessions_revoked(self, event: SessionsRevoked) -> None:
        if self._closed:
            return
        sessions = None if event.every_session else frozenset(event.session_ids)
        task = asyncio.create_task(self._remove(event.username, sessions), name=f"gateway-unregister-{event.username}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Wait for the removals under way (for tests and a clean stop)."""
        await asyncio.gather(*tuple(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel the removals under way; idempotent. The client is its owner's to close."""
        self._closed = True
        for task in tuple(self._tasks):
            task.cancel()
        await self.settled()

    async def _remove(self, username: str, sessions: frozenset[str] | None) -> None:
        delay = self._first_delay
        for attempt in range(1, self._attempts + 1):
            try:
                if sessions is None:
                    await self._rpc.remove_registrations(username)
                else:
                    await self._rpc.remove_session_registrations(username, sessions)
                return
            except KamailioError as exc:
                if attempt == self._attempts:
                    log.warning(
                        "gateway registrations of a revoked subscriber not removed, giving up: %s",
                        exc,
                        extra={"username": username},
                    )
                    return
                log.warning(
                    "gateway registrations of a revoked subscriber not removed (attempt %d), retrying: %s",
                    attempt,
                    exc,
                    extra={"username": username},
                )
            await asyncio.sleep(delay)
            delay *= 2
