"""One org's slice of the Prometheus registry: what ``/metrics`` serves a signed-in person.

Every MeshClaw series carries an ``org`` label. A person sees only the samples of their
own org; a sample without the label (none today) is left out rather than shown, so a
metric added without it fails closed. The operator's install-wide scrape takes the
registry as it is.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

ORG_LABEL = "org"


class _OrgView(Collector):
    def __init__(self, source: CollectorRegistry, org_id: str) -> None:
        self._source = source
        self._org_id = org_id

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            kept = Metric(family.name, family.documentation, family.type, family.unit)
            kept.samples = [s for s in family.samples if s.labels.get(ORG_LABEL) == self._org_id]
            yield kept


def render(registry: CollectorRegistry, org_id: str | None) -> bytes:
    """The text format of ``registry``: every sample (``org_id`` None) or one org's."""
    if org_id is None:
        return generate_latest(registry)
    view = CollectorRegistry(auto_describe=False)
    view.register(_OrgView(registry, org_id))
    return generate_latest(view)
