"""``Platform.analytics`` is built once, also when many threads ask for it first at once
(API requests on the thread pool): ``functools.cached_property`` has no lock since
Python 3.12, and the service holds per-process caches that must be one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from meshclaw.analytics.service import AnalyticsService
from meshclaw.platform import Platform
from tests.conftest import World

THREADS = 16


def test_first_use_from_many_threads_builds_one_service(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = make_world().platform
    builds: list[int] = []
    build = Platform._build_analytics

    def slow_build(self: Platform) -> AnalyticsService:
        builds.append(threading.get_ident())
        time.sleep(0.05)  # keeps the door open: without the lock, others build too
        return build(self)

    monkeypatch.setattr(Platform, "_build_analytics", slow_build)
    start = threading.Barrier(THREADS)

    def first_use(_: int) -> AnalyticsService:
        start.wait(timeout=10)  # every thread asks at the same moment
        return platform.analytics

    with ThreadPoolExecutor(THREADS) as pool:
        services = list(pool.map(first_use, range(THREADS)))
    assert len(builds) == 1
    assert all(service is services[0] for service in services)
    assert platform.analytics is services[0]  # and later uses get the same one
    assert isinstance(services[0], AnalyticsService)
