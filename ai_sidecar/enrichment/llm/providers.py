"""The configured LLM provider, built from ``config.llm`` and the API key in the environment.

Keys never come from the YAML: ``build_provider`` reads the variable
``config.llm.key_env`` names (``GEMINI_API_KEY``, ``ANTHROPIC_API_KEY``,
``OPENAI_API_KEY`` unless ``api_key_env`` says otherwise), or the file its
``<NAME>_FILE`` twin names (Docker and Kubernetes secrets). Errors name the
variable, never the value. An OpenAI-compatible server at a configured
``base_url`` (Ollama, vLLM) may run without a key.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ai_sidecar.config import LlmConfig
from ai_sidecar.credentials import read_secret
from ai_sidecar.enrichment.llm.base import LlmProvider
from ai_sidecar.errors import ConfigError

ProviderFactory = Callable[..., LlmProvider]
# Imported on demand: each vendor SDK takes seconds to import, and a sidecar
# loads only the one it is configured with (none when the LLM is off).
PROVIDERS: dict[str, tuple[str, str]] = {
    "gemini": ("ai_sidecar.enrichment.llm.gemini", "GeminiProvider"),
    "anthropic": ("ai_sidecar.enrichment.llm.anthropic", "AnthropicProvider"),
    "openai": ("ai_sidecar.enrichment.llm.openai", "OpenAIProvider"),
}

if TYPE_CHECKING:
    # The table's strings escape the type checker; these lines hold each class
    # to the LlmProvider protocol.
    from ai_sidecar.enrichment.llm.anthropic import AnthropicProvider
    from ai_sidecar.enrichment.llm.gemini import GeminiProvider
    from ai_sidecar.enrichment.llm.openai import OpenAIProvider

    _CHECKED: tuple[ProviderFactory, ...] = (GeminiProvider, AnthropicProvider, OpenAIProvider)


def provider_class(name: str) -> ProviderFactory:
    """The provider class for ``name`` (``gemini``, ``anthropic``, ``openai``)."""
    module, attribute = PROVIDERS[name]
    factory: ProviderFactory = getattr(importlib.import_module(module), attribute)
    return factory


def build_provider(
    config: LlmConfig, *, environ: Mapping[str, str] = os.environ
) -> LlmProvider | None:
    """The provider ``config`` names, or None when the LLM is off (kill switch or ``none``).

    Raises :class:`ConfigError` when the key is missing, empty or unreadable.
    """
    if not config.active:
        return None
    base_url = str(config.base_url) if config.base_url is not None else None
    return provider_class(config.provider)(
        api_key=provider_key(config, environ=environ),
        model=config.model,
        timeout=config.timeout.total_seconds(),
        base_url=base_url,
    )


def provider_key(config: LlmConfig, *, environ: Mapping[str, str] = os.environ) -> str:
    """The API key of the configured provider ("" for a local server that takes none).

    Checked at start-up too (``scout-sidecar serve``), so a missing key is one
    line on stderr, not a worker that cannot start. Raises :class:`ConfigError`
    naming the variable, never the value.
    """
    variable = config.key_env
    key = read_secret(environ, variable, f"{variable}_FILE")
    if key is not None:
        if not key.isprintable() or any(ch.isspace() for ch in key):
            # An HTTP header cannot carry it, and the HTTP library's refusal
            # quotes the whole header, key and all, in its debug log.
            raise ConfigError(
                f"{variable} (or {variable}_FILE): the key holds spaces, line breaks or "
                "control characters; a key file holds the key alone"
            )
        return key
    if config.provider == "openai" and config.base_url is not None:
        return ""  # Ollama and vLLM on the operator's own machine take none
    raise ConfigError(
        f"llm.provider is {config.provider} but {variable} is not set: "
        f"set it, or {variable}_FILE naming a file that holds the key"
    )
