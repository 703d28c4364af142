"""Brokers for the worker tests: skipped with a reason when absent, required in CI."""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection

from tests.conftest import IN_CI

REDIS_URL = os.environ.get("MESHCLAW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("MESHCLAW_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


@functools.cache
def _reachable(url: str) -> str | None:
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        return None
    except Exception as exc:
        return f"broker not reachable at {url}: {type(exc).__name__}"


def _broker(url: str) -> str:
    reason = _reachable(url)
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true requires the broker: {reason}")
        pytest.skip(reason)
    return url


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    return _broker(REDIS_URL if request.param == "redis" else AMQP_URL)


@pytest.fixture
def redis_url() -> str:
    return _broker(REDIS_URL)


@pytest.fixture
def queue(broker_url: str) -> Iterator[str]:
    """A queue of the test's own, deleted afterwards."""
    name = f"meshclaw.test.{uuid.uuid4().hex[:10]}"
    yield name
    with Connection(broker_url, connect_timeout=3) as conn, contextlib.suppress(Exception):
        conn.default_channel.queue_delete(name)
