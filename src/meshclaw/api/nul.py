"""No NUL character anywhere in a request: PostgreSQL keeps none in text (SQLite would).

Without this, the same request stored a NUL on SQLite and was a 500 from PostgreSQL
(``GET /v1/outcomes?state=%00``, found by the API contract test on the PostgreSQL pass).
Refused at the door instead, on either engine, with a clear 400: in the path, the query
string, or the body (a raw NUL byte, a form's ``%00``, or JSON's ``\\u0000``). The body is
read here and handed on unchanged, so a route reads it however it likes (JSON, form,
raw bytes for a signature check, a stream).

Except JSON's ``\\u0000`` in what other systems deliver to ``/v1/hooks/`` (webhooks,
Slack events, Matrix transactions): those receivers keep message text JSON-escaped in
the store (a run's input), where a NUL is harmless, and a refusal would make the sender
retry for nothing (a homeserver retries one transaction, holding back every later one).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A NUL in JSON text: ``\u0000`` after an even number of backslashes (``\\u0000`` is an
# escaped backslash followed by the text "u0000", which is fine).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_FORMS = (b"application/x-www-form-urlencoded", b"multipart/form-data")
_DELIVERIES = "/v1/hooks/"
"""Where other systems deliver (see the module docstring)."""


def nul_in_body(body: bytes, content_type: bytes, *, json_escapes: bool = True) -> bool:
    if b"\x00" in body:
        return True
    if content_type.startswith(_FORMS):
        return b"%00" in body  # a literal "%00" is sent as "%2500"
    return json_escapes and _JSON_NUL.search(body) is not None


class RefuseNul:
    """ASGI middleware answering ``refuse(request, where)`` for a request holding a NUL."""

    def __init__(self, app: ASGIApp, refuse: Callable[[Request, str], Response]) -> None:
        self.app = app
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
            await self.refuse(Request(scope), "path or query")(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        delivered = scope["path"].startswith(_DELIVERIES)
        if nul_in_body(b"".join(chunks), content_type, json_escapes=not delivered):
            await self.refuse(Request(scope), "body")(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
