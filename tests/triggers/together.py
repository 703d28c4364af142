"""Two schedulers polling at the same moment, for the exactly-once tests."""

from __future__ import annotations

import threading

from meshclaw.triggers.inbound import InboundPoller


def tick_together(*pollers: InboundPoller) -> list[list[str]]:
    """Each poller's ``tick()``, all released at once from their own threads; the runs
    each one started."""
    barrier = threading.Barrier(len(pollers))
    results: list[list[str]] = []

    def tick(p: InboundPoller) -> None:
        barrier.wait(timeout=10)
        results.append(p.tick())

    threads = [threading.Thread(target=tick, args=(p,)) for p in pollers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results
