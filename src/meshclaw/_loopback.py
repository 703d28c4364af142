"""Runs an ASGI app with uvicorn in a background thread, on a port the OS chooses.

The one implementation behind the scripted model server and every protocol fake
(Anthropic, Bedrock, Slack, GitHub, the tests' pipeline service).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any, Self

import uvicorn


class StartsAndStops:
    """``with thing:`` starts it and stops it on the way out, whatever happened."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LoopbackServer(StartsAndStops):
    """Start with ``start()`` or as a context manager; ``port`` is known once started."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "loopback-server",
        startup_timeout: float = 10.0,
    ) -> None:
        self._app = app
        self.host = host
        self._wanted_port = port
        self._name = name
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def running(self) -> bool:
        return self._port is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"the {self._name} is not running")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (no path)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float | None = None) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"the {self._name} is already running")
        config = uvicorn.Config(
            self._app,
            host=self.host,
            port=self._wanted_port,
            lifespan="off",
            log_config=None,  # leave the host process's logging configuration alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=self._name, daemon=True)
        thread.start()
        limit = self._startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the {self._name} failed to start on {self.host}")
            if time.monotonic() > deadline:
                server.should_exit = True
                raise TimeoutError(f"the {self._name} was not ready in {limit}s")
            thread.join(0.01)  # poll interval; returns at once if the thread dies
        self._server, self._thread = server, thread
        # Port 0 lets the OS choose, so the real port is only known from the socket.
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


class ServedFake(StartsAndStops):
    """What a protocol fake shares: its state served on loopback by ``start``/``stop`` or
    as a context manager. A subclass builds its ASGI app in ``_app`` and sets ``name``."""

    name = "protocol fake"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._wanted_port = port
        self._loopback: LoopbackServer | None = None
        self.port = 0

    def _app(self) -> Any:
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> Self:
        loopback = LoopbackServer(
            self._app(), host=self._host, port=self._wanted_port, name=self.name
        )
        self._loopback = loopback.start(timeout)
        self.port = loopback.port
        return self

    def stop(self) -> None:
        if self._loopback is not None:
            self._loopback.stop()
            self._loopback = None
