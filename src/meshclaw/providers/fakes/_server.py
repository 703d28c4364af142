"""Runs an ASGI app with uvicorn on loopback in a background thread (port from the OS)."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any, Self

import uvicorn


class FakeServer:
    """Start with ``start()`` or as a context manager; ``url`` is known once started."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", startup_timeout: float = 10.0):
        self._app = app
        self._host = host
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no path)."""
        if self._port is None:
            raise RuntimeError("the fake server is not running")
        return f"http://{self._host}:{self._port}"

    def start(self) -> Self:
        config = uvicorn.Config(
            self._app,
            host=self._host,
            port=0,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="fake-model-api", daemon=True)
        thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("fake server failed to start")
            if time.monotonic() > deadline:
                server.should_exit = True
                raise TimeoutError("fake server not ready in time")
            thread.join(0.01)
        self._server, self._thread = server, thread
        self._port = int(server.servers[0].sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        self._server = self._thread = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
