"""The scripted model server: a real OpenAI-compatible HTTP server that replays a script.

Every MeshClaw test and the demo talk to a model through this server, over real HTTP,
with the same provider code that talks to a hosted model; nothing is mocked. Layers:
``script`` (what to say) → ``_replay`` (which turn or failure a request gets) →
``_wire`` (OpenAI's JSON shapes) → this module (Starlette routes, uvicorn, threads).

Routes: ``POST /v1/chat/completions`` (plain or ``stream: true`` with server-sent
events) and ``GET /v1/models``. Any model name is accepted in requests — the script's
``models`` only feed the listing — so callers can keep their real model names in
tests. Errors use OpenAI's ``{"error": {...}}`` body. The API key is compared in
constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from meshclaw._loopback import LoopbackServer, StartsAndStops
from meshclaw.providers.scripted._replay import Answer, Failure, Malformed, Replayer
from meshclaw.providers.scripted._wire import (
    CREATED,
    MALFORMED_JSON,
    MALFORMED_SSE,
    completion_body,
    error_body,
    stream_chunks,
)
from meshclaw.providers.scripted.script import Script, load_script

__all__ = ["ScriptedServer", "create_app", "serve"]

_OWNER = "meshclaw-scripted"


def _error(failure: Failure) -> JSONResponse:
    return JSONResponse(error_body(failure), status_code=failure.status, headers=failure.headers)


def _bad_request(message: str) -> JSONResponse:
    return _error(Failure(status=400, message=message, type="invalid_request_error"))


def _denied(request: Request, script: Script) -> JSONResponse | None:
    """A 401 response unless the request carries the script's API key (if it has one)."""
    if script.api_key is None:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = script.api_key.get_secret_value().encode()
    if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected):
        return None
    return _error(
        Failure(
            status=401,
            message="Incorrect API key provided.",
            type="invalid_request_error",
            code="invalid_api_key",
        )
    )


async def _delay(request: Request, seconds: float) -> bool:
    """Wait ``seconds``; ``False`` if the client hung up first.

    Ending early matters for timeout and cancellation tests: a handler still asleep for a
    client that left would hold up the server's shutdown.
    """
    with anyio.move_on_after(seconds):
        # The body was read already, so the next ASGI message can only be the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        return False
    return True


def _stream(
    completion_id: str, model: str, answer: Answer, include_usage: bool
) -> StreamingResponse:
    chunks = stream_chunks(completion_id, model, answer, include_usage=include_usage)
    gap = answer.turn.delay_ms / 1000 / len(chunks)

    async def events() -> AsyncIterator[str]:
        for chunk in chunks:
            if gap:
                await anyio.sleep(gap)
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


def _build_app(replayer: Replayer) -> Starlette:
    script = replayer.script

    async def chat_completions(request: Request) -> Response:
        if (denied := _denied(request, script)) is not None:
            return denied
        try:
            body: Any = await request.json()
        except ValueError:
            return _bad_request("request body is not valid JSON")
        if not isinstance(body, dict):
            return _bad_request("request body must be a JSON object")
        replayer.record(body)
        outcome = replayer.answer(body)
        streaming = body.get("stream") is True
        if isinstance(outcome, Failure):
            return _error(outcome)
        if isinstance(outcome, Malformed):
            if streaming:
                return Response(MALFORMED_SSE, media_type="text/event-stream")
            return Response(MALFORMED_JSON, media_type="application/json")
        completion_id = replayer.next_completion_id()
        model = str(body["model"])
        if streaming:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return _stream(completion_id, model, outcome, include_usage)
        if outcome.turn.delay_ms and not await _delay(request, outcome.turn.delay_ms / 1000):
            return Response(status_code=499)  # nobody is listening any more
        return JSONResponse(completion_body(completion_id, model, outcome))

    async def list_models(request: Request) -> Response:
        if (denied := _denied(request, script)) is not None:
            return denied
        data = [
            {"id": name, "object": "model", "created": CREATED, "owned_by": _OWNER}
            for name in script.listed_models()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return _error(Failure(status=status, message=f"{detail}: {request.url.path}", type=kind))

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def create_app(script: Script) -> Starlette:
    """An ASGI app serving ``script``, for mounting or for an ASGI transport in tests."""
    return _build_app(Replayer(script))


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


def _bound_port(server: uvicorn.Server) -> int:
    # Port 0 lets the OS choose, so the real port is only known from the listening socket.
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return port


class ScriptedServer(StartsAndStops):
    """Runs the scripted server on loopback in a background thread.

    Use as a context manager, or call ``start()`` and ``stop()``. The port is chosen by
    the OS, so parallel test runs never collide; read it back from ``base_url``.
    """

    def __init__(
        self,
        script: Script,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.script = script
        self._replayer = Replayer(script)
        self._host = host
        self._loopback = LoopbackServer(
            _build_app(self._replayer),
            host=host,
            port=port,
            name="scripted model server",
            startup_timeout=startup_timeout,
        )

    @property
    def port(self) -> int:
        return self._loopback.port

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url``, e.g. ``http://127.0.0.1:54321/v1``."""
        return _base_url(self._host, self.port)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Snapshot of every authorised chat request body received, oldest first."""
        return self._replayer.requests

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until ``count`` chat requests arrived (e.g. before cancelling a run)."""
        return self._replayer.wait_for_requests(count, timeout)

    def reset(self) -> None:
        """Forget received requests and rewind every turn's ``errors_before``."""
        self._replayer.reset()

    def start(self) -> Self:
        self._loopback.start()
        return self

    def stop(self) -> None:
        self._loopback.stop()


class _AnnouncingServer(uvicorn.Server):
    """Prints the base URL once the socket listens, so scripts can wait for that line."""

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(_base_url(self.config.host, _bound_port(self)), flush=True)


def serve(script_path: str, host: str, port: int) -> None:
    """Serve the script at ``script_path`` until interrupted (``meshclaw model-server``).

    Runs uvicorn in the calling thread so Ctrl+C and SIGTERM shut it down cleanly.
    Raises ``ConfigError`` before listening if the script is invalid.
    """
    script = load_script(Path(script_path))
    config = uvicorn.Config(create_app(script), host=host, port=port, lifespan="off")
    _AnnouncingServer(config).run()
