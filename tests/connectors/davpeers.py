"""A real WebDAV server on loopback: WsgiDAV (cheroot) over a temporary folder, basic auth."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.connectors.mailpeers import free_port


@dataclass
class DavShare:
    url: str
    username: str
    password: str
    root: Path


@contextmanager
def start_wsgidav(
    folder: Path, username: str = "alice", password: str = "wonderland"
) -> Iterator[DavShare]:
    root = folder / "share"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = folder / "wsgidav.json"
    config.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": port,
                "provider_mapping": {"/": str(root)},
                "http_authenticator": {
                    "accept_basic": True,
                    "accept_digest": False,
                    "default_to_digest": False,
                },
                "simple_dc": {"user_mapping": {"*": {username: {"password": password}}}},
                "verbose": 1,
                "logging": {"enable_loggers": []},
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "wsgidav.server.server_cli", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"wsgidav exited ({process.returncode}): {err}")
            try:
                httpx.request("OPTIONS", url, timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise TimeoutError("wsgidav did not answer within 20 s") from None
                time.sleep(0.05)  # polling a starting server, bounded by the deadline
        yield DavShare(url=url, username=username, password=password, root=root)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
