"""``meshclaw serve --demo`` as `make run` starts it, in a subprocess on a free port."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

MESHCLAW = [sys.executable, "-m", "meshclaw"]


@contextmanager
def serve_demo(
    env: dict[str, str], cwd: Path, *, start_seconds: float = 90
) -> Iterator[tuple[str, list[str]]]:
    """The server's address and the lines it printed before serving (the "try" commands
    after the address included); SIGINT on exit. Those lines are flushed before the API
    serves, so once ``/health`` answers a non-blocking read of the pipe gets all of them."""
    proc = subprocess.Popen(
        [*MESHCLAW, "serve", "--demo", "--port", "0"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    printed = b""
    try:
        deadline = time.monotonic() + start_seconds
        while not (found := re.search(rb"listening on (http://\S+)", printed)):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                proc.kill()
                pytest.fail("server did not start:\n" + printed.decode(errors="replace"))
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail("server exited:\n" + printed.decode(errors="replace"))
            printed += chunk
        address = found.group(1).decode()
        while not _answers(f"{address}/health"):
            time.sleep(0.1)  # polling the server's start, bounded by the test's timeout
        os.set_blocking(fd, False)
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(fd, 65536):
                printed += chunk
        os.set_blocking(fd, True)
        # Keep the pipe drained, so later output never blocks the server.
        threading.Thread(target=lambda: proc.stdout and proc.stdout.read(), daemon=True).start()
        yield address, printed.decode().splitlines(keepends=True)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False
