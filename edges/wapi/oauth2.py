"""The OAuth2 callback: where Google sends the browser back after consent.

``GET /oauth2/google/callback?code=...&state=...`` (or ``?error=...&state=...``)
answers a small static page that hands the query to the signed-in app and
does nothing else. It does not exchange the code: the app passes code and
state to ``DirectoryService.CompleteGoogleLink`` with its own session, and
the core checks that this subscriber started this state. The edge holds no
business rule and never sees whose link it is.

The page's script reads the query itself (nothing from the request is
written into the HTML), removes it from the address bar, then

* in a popup the app opened: posts ``{type: "wac.googleLink", code, state}``
  (or ``error``) to ``window.opener``, to this origin only, and closes;
* otherwise (the app sent the whole tab to Google): keeps the same message
  in ``sessionStorage["wac.googleLink"]`` and goes to ``/``, where the app
  picks it up.

A request with neither code nor error, or without state, is answered 400:
it did not come from Google.
"""

from __future__ import annotations

import base64
import hashlib

from aiohttp import web

GOOGLE_CALLBACK_PATH = "/oauth2/google/callback"
MESSAGE_TYPE = "wac.googleLink"
STORAGE_KEY = "wac.googleLink"

_SCRIPT = f"""
(() => {{
  const query = new URLSearchParams(location.search);
  const message = {{ type: "{MESSAGE_TYPE}" }};
  for (const key of ["code", "state", "error"]) {{
    const value = query.get(key);
    if (value !== null) message[key] = value;
  }}
  // The code must not stay in the address bar, the history or a Referer.
  history.replaceState(null, "", location.pathname);
  if (window.opener && !window.opener.closed) {{
    window.opener.postMessage(message, location.origin);
    window.close();
    document.getElementById("status").textContent = "Done. You can close this window.";
  }} else {{
    sessionStorage.setItem("{STORAGE_KEY}", JSON.stringify(message));
    location.replace("/");
  }}
}})();
"""

_PAGE = f"""<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Linking your Google account</title>
<p id="status">Finishing linking your Google account…</p>
<script>{_SCRIPT}</script>
</html>
"""

_NOT_FROM_GOOGLE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>Not a Google callback</title>
<p>This address is where Google sends you back after you link your account
in the app. Start again from the app.</p>
</html>
"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()

# The page runs only its own script, loads nothing, and cannot be framed.
# No Cross-Origin-Opener-Policy: "same-origin" would cut the popup off from
# the window that opened it.
HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


async def google_callback(request: web.Request) -> web.Response:
    query = request.rel_url.query
    from_google = bool(query.get("state")) and bool(query.get("code") or query.get("error"))
    return web.Response(
        status=200 if from_google else 400,
        text=_PAGE if from_google else _NOT_FROM_GOOGLE,
        content_type="text/html",
        charset="utf-8",
        headers=HEADERS,
    )
