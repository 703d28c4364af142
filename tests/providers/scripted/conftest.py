"""Fixtures: a real scripted server on loopback plus an official OpenAI SDK client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from textwrap import dedent

import openai
import pytest

from meshclaw.providers.scripted import ScriptedServer, load_script


@dataclass(frozen=True)
class Served:
    server: ScriptedServer
    client: openai.OpenAI


Serve = Callable[..., Served]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a server for YAML ``text``; server and client are closed after the test."""
    with ExitStack() as stack:

        def start(text: str, *, api_key: str = "x", timeout: float = 10.0) -> Served:
            server = stack.enter_context(ScriptedServer(load_script(dedent(text))))
            client = stack.enter_context(
                openai.OpenAI(
                    base_url=server.base_url, api_key=api_key, max_retries=0, timeout=timeout
                )
            )
            return Served(server, client)

        yield start
