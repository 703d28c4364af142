"""The composition root: builds every service from ``Settings`` and owns their lifetimes.

The CLI, the API and the workers all start from a ``Platform``; nothing else reads
settings or opens the database.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from meshclaw.accounts.directory import Directory
from meshclaw.accounts.service import Accounts, Caller
from meshclaw.accounts.signin import SignIn
from meshclaw.audit.log import build_audit
from meshclaw.clock import utcnow
from meshclaw.config import ProviderConfig, Settings
from meshclaw.connectors.base import Connector
from meshclaw.connectors.builtin import ClockConnector, NotesConnector
from meshclaw.connectors.credentials import FileCredentialStore
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.connectors.service import ConnectorService
from meshclaw.integrity.findings import FindingsService
from meshclaw.metering.budgets import BudgetService
from meshclaw.metering.limits import LimitGuard
from meshclaw.metering.price_book import PriceBook
from meshclaw.metering.prices import PriceTable, load_price_table
from meshclaw.notify.deliver import DeliverySummary, NotificationDelivery
from meshclaw.notify.service import NotificationService
from meshclaw.outcomes.links import load_link_key, public_base
from meshclaw.outcomes.recheck import RecheckSummary
from meshclaw.outcomes.service import OutcomeService
from meshclaw.policy.api import ApiAuthorizer
from meshclaw.policy.approvals import Approvals
from meshclaw.policy.authorizer import Authorizer
from meshclaw.policy.cedar import CedarAuthorizer, PolicyStore
from meshclaw.policy.org_policies import OrgPolicies, OrgPolicyRows
from meshclaw.policy.vault import Vault, VaultCredentialStore, load_kek
from meshclaw.providers.registry import ProviderRegistry
from meshclaw.runtime.executor import RunExecutor
from meshclaw.runtime.gateway import Gateway, RetryPolicy
from meshclaw.runtime.service import SETTLE_GRACE, RunService
from meshclaw.spec.registry import AgentRegistry
from meshclaw.store.db import Database, migrate
from meshclaw.telemetry import build_telemetry

if TYPE_CHECKING:
    from meshclaw.analytics.service import AnalyticsService
    from meshclaw.integrity.live import LiveScan
    from meshclaw.providers.scripted import ScriptedServer

log = logging.getLogger(__name__)

SCRIPTED = "scripted"


def demo_script_path() -> Path:
    return Path(str(resources.files("meshclaw.data").joinpath("demo-script.yaml")))


class Platform:
    def __init__(self, settings: Settings | None = None, *, apply_migrations: bool = True) -> None:
        self.settings = settings or Settings()
        url = self.settings.resolved_database_url()
        if apply_migrations:
            migrate(url)
        self.db = Database(url)
        self.policies = PolicyStore.from_file(
            self.settings.policy_file, orgs=OrgPolicyRows(self.db)
        )
        """The Cedar policy sets in force, shared by the gateway and the API checks: the
        built-ins, the operator's install-wide ``policy_file`` and each org's own."""
        self.access = ApiAuthorizer(self.policies)
        self.audit, self.audit_log = build_audit(self.db, self.settings, self.access)
        self.access.record_refusals(self.db, self.audit)
        self.accounts = Accounts(
            self.db,
            self.audit,
            token_use_interval=timedelta(seconds=self.settings.audit.token_use_interval_seconds),
        )
        self.signin = SignIn(
            self.db, self.audit, ttl=timedelta(hours=self.settings.web.session_hours)
        )
        """Dashboard sign-in: passwords and browser sessions (``accounts.signin``)."""
        self.authorizer = CedarAuthorizer(self.policies)
        self.agents = AgentRegistry(self.db, self.audit, self.access)
        self.org_policies = OrgPolicies(self.db, self.audit, self.access, self.policies)
        """Each org's own policies, versioned (``policy.org_policies``)."""
        self.approvals = Approvals(self.db, self.audit, self.access)
        key_file = self.settings.vault_key_file or self.settings.home / "vault.key"
        self.vault = Vault(self.db, lambda: load_kek(key_file, create=self.vault.is_empty))
        """Delegated credentials, encrypted at rest; the key is read on first use."""
        self.runs = RunService(self.db, self.agents, self.audit)
        self.connector_admin = ConnectorService(
            db=self.db,
            audit=self.audit,
            access=self.access,
            settings_connectors=self.settings.connectors,
            credentials=VaultCredentialStore(
                self.vault,
                fallback=FileCredentialStore(
                    self.settings.credentials_file or self.settings.home / "credentials.json"
                ),
            ),
            errlog_dir=self.settings.home / "logs",
        )
        self.prices: PriceTable = load_price_table(self.settings.price_table)
        """The install's price table file; an org's table is ``price_book.for_org``."""
        self.price_book = PriceBook(self.prices, self.db, self.audit, self.access)
        """The file plus each org's own effective-dated prices (``price.write``)."""
        self.directory = Directory(self.db, self.audit, self.access, prices=lambda: self.price_book)
        """People, teams and roles as admins manage them; the price table in force."""
        self.telemetry = build_telemetry(self.settings.telemetry)
        """GenAI spans (OTLP export when configured) and the Prometheus registry."""
        self.budget_guard = LimitGuard(
            self.db, self.audit, max_identical_calls=self.settings.metering.max_identical_calls
        )
        self.budgets = BudgetService(
            self.db, self.audit, self.access, on_change=self.budget_guard.forget
        )
        self.telemetry.watch_budgets(self.db)
        self.findings = FindingsService(self.db, self.audit, self.access)
        """Integrity findings and their review queue (``integrity.findings``)."""
        self.notifications = NotificationService(self.db, self.access)
        """Reading the notification outbox, as Cedar allows (``notify.service``)."""
        self.outcomes = OutcomeService(
            self.db,
            self.audit,
            access=self.access,
            findings=self.findings,
            link_key=lambda: load_link_key(self.settings.home / "feedback-link.key"),
            recheck_grace=timedelta(hours=self.settings.outcomes_recheck_grace_hours),
            # Feedback links mailed to beneficiaries must open from outside: absolute.
            public_url=public_base(
                self.settings.web.public_url, self.settings.host, self.settings.port
            ),
        )
        """Outcome records, feedback, durability re-checks (``outcomes.service``)."""
        self.provider_configs: dict[str, ProviderConfig] = dict(self.settings.providers)
        self._model_server: ScriptedServer | None = None  # started on demand
        self._analytics: AnalyticsService | None = None
        self._analytics_lock = threading.Lock()

    @property
    def analytics(self) -> AnalyticsService:
        """Leaderboards, adoption and drill-downs under privacy tiers (``analytics.service``).

        Built on first use: it needs Polars, which workers and most CLI commands do not.
        Exactly once, also when API threads ask at the same time (``cached_property``
        has no lock since Python 3.12): it holds per-process caches that must be one.
        """
        service = self._analytics
        if service is None:
            with self._analytics_lock:
                service = self._analytics
                if service is None:
                    service = self._analytics = self._build_analytics()
        return service

    def _build_analytics(self) -> AnalyticsService:
        from meshclaw.analytics.service import AnalyticsService

        return AnalyticsService(
            self.db,
            self.audit,
            self.access,
            self.outcomes,
            # Open or under-review integrity findings withhold credit (pending review).
            withheld=self.findings.withheld,
        )

    def start_embedded_model_server(self) -> str | None:
        """Serve the scripted model as provider ``scripted`` unless one is configured."""
        if not self.settings.embedded_model_server or SCRIPTED in self.provider_configs:
            return None
        from meshclaw.providers.scripted import ScriptedServer, load_script

        script = load_script(self.settings.model_script or demo_script_path())
        self._model_server = ScriptedServer(script)
        self._model_server.start()
        self.provider_configs[SCRIPTED] = ProviderConfig(base_url=self._model_server.base_url)
        return self._model_server.base_url

    def connectors(self) -> ConnectorRegistry:
        """Built-ins for every org; each org's MCP servers found when its runs ask for them."""
        builtins: list[Connector] = [ClockConnector(), NotesConnector(self.db)]
        return ConnectorRegistry(builtins, resolve=self.connector_admin.resolve)

    async def deliver_notifications(self) -> DeliverySummary:
        """Send the notification outbox's due rows (the scheduler's job), through a
        connector registry of its own that is closed afterwards."""
        connectors = self.connectors()
        try:
            delivery = NotificationDelivery(self.db, connectors, self.audit, self.access)
            return await delivery.deliver_due()
        finally:
            await connectors.aclose()

    def build_gateway(
        self,
        *,
        authorizer: Authorizer | None = None,
        retry: RetryPolicy | None = None,
        connectors: ConnectorRegistry | None = None,
    ) -> Gateway:
        """A gateway with its own provider clients: build one per event loop."""
        return Gateway(
            db=self.db,
            providers=ProviderRegistry(self.provider_configs),
            connectors=connectors or self.connectors(),
            authorizer=authorizer or self.authorizer,
            budget=self.budget_guard,
            telemetry=self.telemetry,
            prices=self.price_book,
            audit=self.audit,
            retry=retry,
            approvals=self.approvals,
        )

    def executor(self, gateway: Gateway) -> RunExecutor:
        return RunExecutor(
            db=self.db, gateway=gateway, audit=self.audit, on_finish=self.outcomes.record_run
        )

    async def recheck_outcomes(
        self, caller: Caller | None = None, *, now: datetime | None = None
    ) -> RecheckSummary:
        """Due outcome durability re-checks: the install's (the scheduler), or by hand the
        caller's org (``outcome.recheck``). Each connector read goes through a fresh
        gateway in the context of the outcome's run: the spec's grant, the owner's
        delegated credential, metered and audited (``RunExecutor.reader_for_ended_run``).
        ``now``: what is due as of then (default: the clock's now)."""
        org_id = None if caller is None else self.outcomes.authorize_recheck(caller)
        try:  # the same schedule settles runs left unsettled (no entry of its own)
            await self.settle_outcomes(org_id)
        except Exception:  # the store blinked: the re-checks may still get through
            log.exception("settling runs left unsettled failed")
        gateway = self.build_gateway()
        try:
            reader = self.executor(gateway).reader_for_ended_run
            return await self.outcomes.recheck_due(org_id=org_id, reader=reader, now=now)
        finally:
            await gateway.aclose()

    async def settle_outcomes(
        self, org_id: str | None = None, *, now: datetime | None = None, limit: int = 100
    ) -> list[str]:
        """Record the outcomes of ended runs left unsettled ``SETTLE_GRACE`` after their
        end (their worker died between the run's end and its outcomes, a run cancelled
        while it waited for an approval, one the lease sweeper gave up on) and mark them
        settled; the runs settled. Part of the outcome re-check schedule
        (``recheck_outcomes``); ``now`` (default: the clock's) only says which are due."""
        ended_before = (now or utcnow()) - SETTLE_GRACE
        run_ids = self.runs.unsettled(ended_before=ended_before, org_id=org_id, limit=limit)
        if not run_ids:
            return []
        settled = []
        gateway = self.build_gateway()
        try:
            executor = self.executor(gateway)
            for run_id in run_ids:
                try:
                    if await executor.settle_ended(run_id):
                        settled.append(run_id)
                except Exception:  # stays unsettled, tried again next time; others go on
                    log.exception("run %s: settling its outcomes failed", run_id)
        finally:
            await gateway.aclose()
        log.info("settled the outcomes of %d run(s) left unsettled", len(settled))
        return settled

    def scan_integrity(
        self, org_id: str | None = None, *, caller: Caller | None = None, weeks: int = 4
    ) -> list[LiveScan]:
        """Live integrity scans of the last weeks (``integrity.live``): every org's (the
        scheduler), one org's, or by hand the caller's (``integrity.review`` on it, as
        recording a scan needs). Findings are recorded for review, audited."""
        from meshclaw.integrity.live import scan_orgs

        if caller is not None:
            org_id = self.findings.authorize_record(caller)
        return scan_orgs(self, org_id, weeks=weeks)

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._model_server is not None:
            self._model_server.stop()
            self._model_server = None
        self.telemetry.shutdown()
        self.db.dispose()
