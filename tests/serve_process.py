"""``meshclaw serve --demo`` as `make run` starts it, in a subprocess on a free port."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

MESHCLAW = [sys.executable, "-m", "meshclaw"]


@contextmanager
def serve_demo(
    env: dict[str, str], cwd: Path, *, start_seconds: float = 90
) -> Iterator[tuple[str, list[str]]]:
    """The server's address and what it printed until it listened; SIGINT on exit."""
    proc = subprocess.Popen(
        [*MESHCLAW, "serve", "--demo", "--port", "0"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    address, seen = None, []
    deadline = time.monotonic() + start_seconds
    while address is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if found := re.search(r"listening on (http://\S+)", line):
            address = found.group(1)
    if address is None:
        proc.kill()
        pytest.fail("server did not start:\n" + "".join(seen))
    try:
        yield address, seen
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
