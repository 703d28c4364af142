"""The OpenAI-compatible provider against the scripted server: auth, errors, no secret leaks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from meshclaw.config import ProviderConfig
from meshclaw.errors import ConfigError, ProviderError
from meshclaw.providers.base import Message, ModelRequest
from meshclaw.providers.registry import ProviderRegistry
from meshclaw.providers.scripted import ScriptedServer

SECRET = "sk-live-very-secret-value-123"


def ask(registry: ProviderRegistry, name: str) -> Any:
    async def go() -> Any:
        try:
            return await registry.get(name).complete(
                ModelRequest(model="m", messages=(Message(role="user", content="hi"),))
            )
        finally:
            await registry.aclose()

    return asyncio.run(go())


def test_api_key_comes_from_the_named_variable_and_never_leaks(
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = scripted({"api_key": SECRET, "turns": [{"reply": {"content": "hello"}}]})
    monkeypatch.setenv("GOOD_KEY", SECRET)
    monkeypatch.setenv("BAD_KEY", SECRET[::-1])
    config = {
        "good": ProviderConfig(base_url=server.base_url, api_key_env="GOOD_KEY"),
        "bad": ProviderConfig(base_url=server.base_url, api_key_env="BAD_KEY"),
    }
    caplog.set_level(logging.DEBUG)
    assert ask(ProviderRegistry(config), "good").content == "hello"
    with pytest.raises(ProviderError) as failure:
        ask(ProviderRegistry(config), "bad")
    assert failure.value.status == 401 and not failure.value.retryable
    for text in (str(failure.value), repr(failure.value), caplog.text):
        assert SECRET not in text and SECRET[::-1] not in text


def test_missing_key_variable_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    registry = ProviderRegistry(
        {"p": ProviderConfig(base_url="http://127.0.0.1:9/v1", api_key_env="NOT_SET_KEY")}
    )
    with pytest.raises(ConfigError, match="NOT_SET_KEY is not set"):
        registry.get("p")
    with pytest.raises(ConfigError, match=r"unknown provider 'q' \(configured: p\)"):
        registry.get("q")
