"""The price table: USD per million tokens, per provider/model/token type, in ``Decimal``.

Costs are stored as integer nano-dollars (see ``store.models``), rounded half-even once
per call: at most half a nano-dollar of rounding per call, and exact sums in SQL.

A table has a ``version`` (recorded on every usage record it priced) and entries with
optional ``effective_from`` dates (UTC midnight): a call is priced by the entry in force
when it was made, so a table can hold a vendor's price history and ``meshclaw usage
reprice`` can re-price old records correctly after a change.

The file is the install's table; a platform admin may add effective-dated entries for
their own org (``meshclaw.metering.price_book``): the org's table is the file's entries
with the org's in front (they win a tie), under a version that counts them. Whoever
prices a call asks a ``PriceSource`` for the table of the call's org; a plain table is
one (the same for every org).
"""

from __future__ import annotations

import fnmatch
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cached_property
from importlib import resources
from io import StringIO
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from meshclaw.errors import ConfigError
from meshclaw.providers.base import Usage

MILLION = Decimal(1_000_000)
NANO = Decimal("1e-9")
LOOKUP_CACHE = 4096
"""Price look-ups remembered per table (provider, model and UTC day)."""
MAX_VERSION = 40
"""Longest version a usage record keeps (``usage_records.price_version``)."""


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    model: str
    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    """Defaults to ``input`` when the vendor gives no cache discount."""
    cache_write: Decimal | None = Field(default=None, ge=0)
    """Defaults to ``input``."""
    effective_from: date | None = None
    """First UTC day this price applies; ``None``: since forever. The latest entry in
    force wins, so a price change is a new entry with a later date."""

    def in_force(self, day: date) -> bool:
        return self.effective_from is None or self.effective_from <= day

    def sort_key(self) -> date:
        return self.effective_from or date.min

    def to_yaml_data(self) -> dict[str, Any]:
        """The entry as the file writes it: prices as text (exact), unset ones left out."""
        data: dict[str, Any] = {"provider": self.provider, "model": self.model}
        for name in ("input", "cached_input", "cache_write", "output"):
            value = getattr(self, name)
            if value is not None:
                data[name] = str(value)
        if self.effective_from is not None:
            data["effective_from"] = self.effective_from
        return data


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    prices: list[ModelPrice]

    def for_org(self, org_id: str) -> PriceTable:
        """A plain table is every org's (``PriceSource``)."""
        return self

    def layered(self, entries: list[ModelPrice], *, version: str) -> PriceTable:
        """This table with ``entries`` in front: at the same ``effective_from`` they win
        over the file's, and their globs are tried first."""
        return PriceTable(version=version, prices=[*entries, *self.prices])

    def to_yaml(self) -> str:
        """The table as a price table file (``load_price_table`` reads it back equal)."""
        out = StringIO()
        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
        yaml.dump({"version": self.version, "prices": [p.to_yaml_data() for p in self.prices]}, out)
        return out.getvalue()

    @cached_property
    def lookups(self) -> dict[tuple[str, str, date], ModelPrice | None]:
        """Look-ups already made, by provider, model and UTC day (not a field: every
        model call is estimated and priced here, and the table never changes)."""
        return {}

    def lookup(self, provider: str, model: str, at: datetime | None = None) -> ModelPrice | None:
        """The price in force at ``at`` (default now): an exact model name beats a glob,
        the first matching glob beats later ones, the latest ``effective_from`` wins."""
        when = datetime.now(UTC) if at is None else at
        day = (when if when.tzinfo is UTC else when.astimezone(UTC)).date()
        key = (provider, model, day)
        lookups = self.lookups
        try:
            return lookups[key]
        except KeyError:
            pass
        found = self._lookup(provider, model, day)
        if len(lookups) >= LOOKUP_CACHE:
            lookups.clear()
        lookups[key] = found
        return found

    def _lookup(self, provider: str, model: str, day: date) -> ModelPrice | None:
        candidates = [p for p in self.prices if p.provider == provider and p.in_force(day)]
        exact = [p for p in candidates if p.model == model]
        if exact:
            return max(exact, key=ModelPrice.sort_key)
        glob = next((p.model for p in candidates if fnmatch.fnmatchcase(model, p.model)), None)
        if glob is None:
            return None
        return max((p for p in candidates if p.model == glob), key=ModelPrice.sort_key)

    def cost_usd(
        self, provider: str, model: str, usage: Usage, at: datetime | None = None
    ) -> Decimal | None:
        """Exact cost of one call made at ``at`` (default now), or None when unpriced.

        Reasoning tokens are part of ``output_tokens`` and cost as output.
        """
        price = self.lookup(provider, model, at)
        if price is None:
            return None
        cached = min(usage.cached_tokens, usage.input_tokens)
        fresh = usage.input_tokens - cached
        total = (
            fresh * price.input
            + cached * (price.cached_input if price.cached_input is not None else price.input)
            + usage.cache_write_tokens
            * (price.cache_write if price.cache_write is not None else price.input)
            + usage.output_tokens * price.output
        )
        return total / MILLION


_ONE = Decimal(1)


def to_nano(usd: Decimal) -> int:
    # scaleb(9) is usd / 1e-9 (the same rounding to the context), without a division.
    return int(usd.scaleb(9).quantize(_ONE, rounding=ROUND_HALF_EVEN))


def from_nano(nano: int) -> Decimal:
    return Decimal(nano) * NANO


class PriceSource(Protocol):
    """Where the price table of an org comes from: a ``PriceTable`` (the same for every
    org) or a ``PriceBook`` (the file plus the org's own entries)."""

    def for_org(self, org_id: str) -> PriceTable: ...


def load_price_table(path: Path | None = None) -> PriceTable:
    """Load a price table file, or the one shipped with MeshClaw."""
    if path is None:
        text = resources.files("meshclaw.data").joinpath("prices.yaml").read_text("utf-8")
        source = "built-in prices.yaml"
    else:
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"price table {path}: {exc.strerror}") from None
        source = str(path)
    return parse_price_table(text, source)


def parse_price_table(text: str, source: str = "price table") -> PriceTable:
    """A price table from its YAML text; ``source`` names it in errors."""
    try:
        data = YAML(typ="safe", pure=True).load(StringIO(text))
        return PriceTable.model_validate(data)
    except YAMLError as exc:
        raise ConfigError(f"price table {source}: invalid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"price table {source}: {where}: {first['msg']}") from None
