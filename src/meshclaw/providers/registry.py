"""Builds providers from settings; the only place that reads provider secrets."""

from __future__ import annotations

import os

from meshclaw.config import ProviderConfig
from meshclaw.errors import ConfigError
from meshclaw.providers.base import ModelProvider


class ProviderRegistry:
    """Providers by name, created on first use and closed together."""

    def __init__(self, configs: dict[str, ProviderConfig]) -> None:
        self._configs = dict(configs)
        self._providers: dict[str, ModelProvider] = {}

    def names(self) -> list[str]:
        return sorted(self._configs)

    def config(self, name: str) -> ProviderConfig:
        try:
            return self._configs[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown provider {name!r} (configured: {known})") from None

    def add(self, name: str, config: ProviderConfig) -> None:
        self._configs[name] = config
        self._providers.pop(name, None)

    def get(self, name: str) -> ModelProvider:
        if name not in self._providers:
            self._providers[name] = self._build(name, self.config(name))
        return self._providers[name]

    def _build(self, name: str, config: ProviderConfig) -> ModelProvider:
        api_key = None
        if config.api_key_env:
            api_key = os.environ.get(config.api_key_env)
            if not api_key:
                raise ConfigError(
                    f"provider {name!r}: environment variable {config.api_key_env} is not set"
                )
        # Imported late: the vendor SDKs are slow to import and most commands never need them.
        if config.kind == "anthropic":
            from meshclaw.providers.anthropic import AnthropicProvider

            return AnthropicProvider(
                name=name,
                base_url=config.base_url,
                api_key=api_key,
                timeout_seconds=config.timeout_seconds,
            )
        if config.kind == "bedrock":
            from meshclaw.providers.bedrock import BedrockProvider

            return BedrockProvider(
                name=name,
                region=config.region,
                endpoint_url=config.base_url,
                profile=config.aws_profile,
                timeout_seconds=config.timeout_seconds,
            )
        from meshclaw.providers.openai_compat import OpenAICompatibleProvider

        return OpenAICompatibleProvider(
            name=name,
            base_url=config.base_url,
            api_key=api_key,
            timeout_seconds=config.timeout_seconds,
        )

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        self._providers.clear()
