"""A loopback app with side effects, and the connector that calls it.

The server is a careful real app: it applies each idempotency key's effect once and
counts every call, so a test can tell retries (same key again) from duplicated side
effects (more keys than the run made tool calls). It answers after a short delay, so a
worker killed mid-call leaves an effect applied whose step never finished.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from meshclaw.connectors.base import ToolContext, ToolDefinition, ToolResult


class SideEffectServer:
    def __init__(self, delay: tuple[float, float] = (0.05, 0.25)) -> None:
        self.calls: Counter[str] = Counter()
        self.applied: dict[str, str] = {}
        """idempotency key -> run id, once per key."""
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers["Idempotency-Key"]
                with owner._lock:
                    owner.calls[key] += 1
                    first = key not in owner.applied
                    if first:
                        owner.applied[key] = body["run_id"]
                time.sleep(random.uniform(*delay))
                reply = json.dumps({"applied": first}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/apply"

    def start(self) -> SideEffectServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def keys_by_run(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        with self._lock:
            for key, run_id in self.applied.items():
                out.setdefault(run_id, set()).add(key)
        return out


class SideEffectConnector:
    """``sidefx.apply``: a write tool whose effect lives in another app."""

    name = "sidefx"

    def __init__(self, url: str) -> None:
        self._url = url
        self._client = httpx.AsyncClient(timeout=10)

    async def list_tools(self) -> list[ToolDefinition]:
        return [
            ToolDefinition(
                name="apply",
                description="Apply a change in the other app.",
                input_schema={"type": "object", "properties": {"item": {"type": "string"}}},
                action="write",
            )
        ]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        response = await self._client.post(
            self._url,
            json={"run_id": ctx.run_id, "item": arguments.get("item")},
            headers={"Idempotency-Key": ctx.idempotency_key},
        )
        response.raise_for_status()
        return ToolResult(content=f"applied {arguments.get('item')}")

    async def aclose(self) -> None:
        await self._client.aclose()
