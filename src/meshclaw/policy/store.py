"""The policy sets in force: built-ins, the install's operator policies, each org's own.

``PolicyStore`` validates every text against ``schema.SCHEMA`` before it is used (an
invalid one changes nothing) and keeps the parsed sets: the install-wide one
(``current``: built-ins and the operator's ``policy_file``) and, per org, that set plus
the org's own policies from an ``OrgPolicySource`` (``for_org``). The authorisers in
``cedar.py`` and ``api.py`` ask ``for_org`` with the principal's org on every decision.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cedarpy

from meshclaw.errors import ConfigError, PolicyError, PolicyIssue
from meshclaw.policy._source import Statement, split_statements
from meshclaw.policy.roles import BUILTIN_POLICIES
from meshclaw.policy.schema import SCHEMA

MAX_CACHED_ORGS = 4096
"""Parsed per-org policy sets kept in memory (the oldest is dropped first)."""


@dataclass(frozen=True, kw_only=True)
class OrgPolicyText:
    """One org's own policies as stored: the text of its current version."""

    org_id: str
    version: int
    """1, 2, ... (0: the org never saved any, the text is empty)."""
    text: str


class OrgPolicySource(Protocol):
    """Where each org's own policies are kept (``org_policies.OrgPolicyRows``: the
    database; ``MemoryOrgPolicies``: a dict, for tests)."""

    def generation(self) -> int:
        """Changes whenever any org's policies change; asked often, so it must be cheap."""
        ...

    def current(self, org_id: str) -> OrgPolicyText | None:
        """The org's current policies (``None``: it has none)."""
        ...


class MemoryOrgPolicies:
    """An in-memory ``OrgPolicySource``: ``put`` replaces an org's text."""

    def __init__(self) -> None:
        self._texts: dict[str, OrgPolicyText] = {}
        self._generation = 0

    def put(self, org_id: str, text: str) -> OrgPolicyText:
        old = self._texts.get(org_id)
        self._generation += 1
        self._texts[org_id] = OrgPolicyText(
            org_id=org_id, version=(old.version if old else 0) + 1, text=text
        )
        return self._texts[org_id]

    def generation(self) -> int:
        return self._generation

    def current(self, org_id: str) -> OrgPolicyText | None:
        return self._texts.get(org_id)


@dataclass(frozen=True, kw_only=True)
class LoadedPolicies:
    text: str
    handle: cedarpy.PolicySet
    generation: int
    """Of the install-wide (operator) policies: increases with every ``load``."""
    statements: tuple[Statement, ...]
    argument_rules: bool
    """The operator's or the org's own policies speak about ``tool.argument``: check
    every argument."""
    org_id: str | None = None
    """The org whose own policies are included (``None``: built-ins and operator's only)."""
    org_version: int = 0
    """The version of the org's policies included (0: none)."""
    org_text: str = ""

    @property
    def key(self) -> tuple[int, str | None, int]:
        """What determines the set: equal keys, equal policies (for caches)."""
        return (self.generation, self.org_id, self.org_version)


class PolicyStore:
    """The policy sets in force: built-ins, the install's operator policies (``load``),
    and per org, that org's own policies (from an ``OrgPolicySource``).

    ``load`` validates first: an invalid set changes nothing. ``for_org`` is the set a
    decision for a principal of that org uses; parsed sets are cached per org, and the
    source's ``generation`` is asked at most every ``recheck_seconds`` (on the decision
    path), so a change saved by another process applies here within that time; a change
    saved through this store (``invalidate``) applies at once.
    """

    def __init__(
        self,
        org_policies: str = "",
        *,
        source: str | None = None,
        orgs: OrgPolicySource | None = None,
        recheck_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.schema = cedarpy.Schema.from_str(SCHEMA)
        self._builtin = split_statements(BUILTIN_POLICIES)
        self._lock = threading.Lock()
        self._current = self._build(org_policies, generation=1, source=source)
        self.orgs = orgs
        self.recheck_seconds = recheck_seconds
        """How stale another process's change may be here, at most (0: ask every time)."""
        self.clock = clock
        self._by_org: dict[str, LoadedPolicies] = {}
        self._seen_generation: int | None = None
        self._next_check = float("-inf")

    @classmethod
    def from_file(cls, path: Path | None, *, orgs: OrgPolicySource | None = None) -> PolicyStore:
        """The built-ins plus the operator's policies in ``path`` (none: built-ins only)."""
        if path is None:
            return cls(orgs=orgs)
        return cls(read_policy_file(path), source=str(path), orgs=orgs)

    @property
    def current(self) -> LoadedPolicies:
        """The install-wide set: built-ins and the operator's policies, no org's own."""
        return self._current

    @property
    def operator_text(self) -> str:
        return self._current.text[len(BUILTIN_POLICIES) + 1 :]

    def for_org(self, org_id: str) -> LoadedPolicies:
        """The set in force for principals of ``org_id``: the install-wide set plus that
        org's own policies. Raises ``PolicyError`` if the stored text no longer
        validates (the caller fails closed)."""
        if self.orgs is None:
            return self._current
        self._recheck()
        loaded = self._by_org.get(org_id)
        if loaded is not None and loaded.generation == self._current.generation:
            return loaded
        stored = self.orgs.current(org_id)
        if stored is None or not stored.text.strip():
            loaded = self._current
        else:
            base = self._current
            loaded = self._build_org(base, stored)
        with self._lock:
            if len(self._by_org) >= MAX_CACHED_ORGS:
                self._by_org.pop(next(iter(self._by_org)))
            self._by_org[org_id] = loaded
        return loaded

    def invalidate(self, org_id: str | None = None) -> None:
        """Forget the parsed set of ``org_id`` (``None``: of every org)."""
        with self._lock:
            if org_id is None:
                self._by_org.clear()
            else:
                self._by_org.pop(org_id, None)

    def _recheck(self) -> None:
        assert self.orgs is not None
        now = self.clock()
        if now < self._next_check:
            return
        generation = self.orgs.generation()
        self._next_check = now + self.recheck_seconds
        if generation != self._seen_generation:
            # Read before the texts: a set cached from now on is at least this new.
            self._seen_generation = generation
            self.invalidate()

    def validate(self, org_policies: str) -> list[PolicyIssue]:
        """Every problem of ``org_policies`` (added to the built-ins and the operator's
        policies), with its line in ``org_policies``."""
        return self._issues(self._current.text, org_policies, reserve_ids=True)

    def _issues(self, prefix: str, ours_text: str, *, reserve_ids: bool) -> list[PolicyIssue]:
        text = prefix + "\n" + ours_text
        ours = split_statements(ours_text)
        try:
            cedarpy.PolicySet.from_str(text)
        except ValueError as exc:
            return [self._parse_issue(ours, str(exc))]
        result = cedarpy.validate_policies(text, self.schema)
        issues = []
        if reserve_ids:
            # An org policy reusing a built-in's (or the operator's) id would make every
            # explanation lie.
            reserved = {s.annotation_id for s in split_statements(prefix)}
            issues = [
                PolicyIssue(
                    policy=s.label,
                    message="this @id is reserved (built-in and install-wide policies, "
                    "compiled agent scopes)",
                    line=s.line,
                )
                for s in ours
                if s.annotation_id in reserved or (s.annotation_id or "").startswith("spec.")
            ]
        offset = len(split_statements(prefix))
        for error in result.errors:
            index = _policy_index(error.policy_id)
            if index is not None and index >= offset and index - offset < len(ours):
                stmt = ours[index - offset]
                message = error.error.replace(f"`{error.policy_id}`", f"`{stmt.label}`")
                issues.append(PolicyIssue(policy=stmt.label, message=message, line=stmt.line))
            elif index is not None and index < offset:
                continue  # the prefix was validated when it was loaded
            else:
                issues.append(PolicyIssue(policy=error.policy_id, message=error.error))
        return issues

    def load(self, org_policies: str, source: str | None = None) -> LoadedPolicies:
        """Replace the install-wide (operator) policies; raises ``PolicyError`` and keeps
        the old set if invalid. Every org's set is rebuilt on its next decision."""
        with self._lock:
            self._current = self._build(
                org_policies, generation=self._current.generation + 1, source=source
            )
            self._by_org.clear()
            return self._current

    def _build(
        self, org_policies: str, *, generation: int, source: str | None = None
    ) -> LoadedPolicies:
        issues = self._issues(BUILTIN_POLICIES, org_policies, reserve_ids=True)
        if issues:
            raise PolicyError(issues, source)
        text = BUILTIN_POLICIES + "\n" + org_policies
        statements = split_statements(text)
        return LoadedPolicies(
            text=text,
            handle=cedarpy.PolicySet.from_str(text),
            generation=generation,
            statements=tuple(statements),
            argument_rules='"tool.argument"' in org_policies,
        )

    def _build_org(self, base: LoadedPolicies, stored: OrgPolicyText) -> LoadedPolicies:
        # Reserved ids were checked when the text was saved; an operator policy added
        # since with the same id only makes explanations ambiguous, not the decisions.
        issues = self._issues(base.text, stored.text, reserve_ids=False)
        if issues:
            source = f"org {stored.org_id} policies v{stored.version}"
            raise PolicyError(issues, source)
        text = base.text + "\n" + stored.text
        return LoadedPolicies(
            text=text,
            handle=cedarpy.PolicySet.from_str(text),
            generation=base.generation,
            statements=tuple(split_statements(text)),
            argument_rules=base.argument_rules or '"tool.argument"' in stored.text,
            org_id=stored.org_id,
            org_version=stored.version,
            org_text=stored.text,
        )

    @staticmethod
    def _parse_issue(ours: list[Statement], message: str) -> PolicyIssue:
        for stmt in ours:
            try:
                cedarpy.PolicySet.from_str(stmt.text)
            except ValueError as exc:
                return PolicyIssue(policy=stmt.label, message=f"parse error: {exc}", line=stmt.line)
        line = ours[-1].line if ours else None
        return PolicyIssue(policy="", message=f"parse error: {message}", line=line)


def read_policy_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc}") from None


def _policy_index(policy_id: str) -> int | None:
    if policy_id.startswith("policy") and policy_id[6:].isdigit():
        return int(policy_id[6:])
    return None
