"""The composition root: builds every service from ``Settings`` and owns their lifetimes.

The CLI, the API and the workers all start from a ``Platform``; nothing else reads
settings or opens the database.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from meshclaw.accounts.service import Accounts
from meshclaw.audit.sink import StoreAuditSink
from meshclaw.config import ProviderConfig, Settings
from meshclaw.connectors.builtin import ClockConnector, NotesConnector
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.metering.budget import RunBudgetGuard
from meshclaw.metering.prices import PriceTable, load_price_table
from meshclaw.policy.authorizer import Authorizer, SpecGrantAuthorizer
from meshclaw.providers.registry import ProviderRegistry
from meshclaw.runtime.executor import RunExecutor
from meshclaw.runtime.gateway import Gateway, RetryPolicy
from meshclaw.runtime.service import RunService
from meshclaw.spec.registry import AgentRegistry
from meshclaw.store.db import Database, migrate

if TYPE_CHECKING:
    from meshclaw.providers.scripted import ScriptedServer

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
        self.audit = StoreAuditSink()
        self.accounts = Accounts(self.db, self.audit)
        self.agents = AgentRegistry(self.db, self.audit)
        self.runs = RunService(self.db, self.agents, self.audit)
        self.prices: PriceTable = load_price_table(self.settings.price_table)
        self.provider_configs: dict[str, ProviderConfig] = dict(self.settings.providers)
        self._model_server: ScriptedServer | None = None  # started on demand

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
        return ConnectorRegistry([ClockConnector(), NotesConnector(self.db)])

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
            authorizer=authorizer or SpecGrantAuthorizer(),
            budget=RunBudgetGuard(),
            prices=self.prices,
            audit=self.audit,
            retry=retry,
        )

    def executor(self, gateway: Gateway) -> RunExecutor:
        return RunExecutor(db=self.db, gateway=gateway, audit=self.audit)

    def close(self) -> None:
        if self._model_server is not None:
            self._model_server.stop()
            self._model_server = None
        self.db.dispose()
