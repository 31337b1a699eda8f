"""How a reloaded ``llm`` section reaches the LLM guard and policy in the process that runs them.

The components factory builds the guard and the policy and lists them in
``Components.reloadable`` (anything with ``reconfigure(LlmConfig)``). The
pipeline registers them with the process's :class:`LlmSettingsHub` for as long
as it runs; a reload publishes the new section to the hub, which hands it to
each of them. Whether the pipeline runs in the HTTP process or in the worker
process (which receives the section through a pipe, see
:mod:`ai_sidecar.worker_process`), the guard never needs to know.

The other setting a reload applies, ``language``, travels with the section:
the hub hands it to whoever follows it (the worker, which writes the analyses,
root-cause reasons and priorities in it; the LLM analyst reads it from the
context the worker gives it).

The hub also remembers the section (and language) in force, so components built after a
reload (a restarted worker, a new term as leader) start from it rather than
from the file as it was at start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from ai_sidecar.config import LlmConfig
from ai_sidecar.i18n import SOURCE_LANGUAGE

log = logging.getLogger("ai_sidecar.enrichment.llm.reload")


class LlmReconfigurable(Protocol):
    """Something that applies a reloaded ``llm`` section (the guard, the policy)."""

    def reconfigure(self, config: LlmConfig) -> None: ...


class LlmSettingsHub:
    """The ``llm`` section and ``language`` in force in this process, and who applies new ones."""

    def __init__(self, config: LlmConfig, language: str = SOURCE_LANGUAGE) -> None:
        self.current = config
        self.language = language
        self._listeners: list[LlmReconfigurable] = []
        self._language_followers: list[Callable[[str], None]] = []

    def follow_language(self, follower: Callable[[str], None]) -> Callable[[], None]:
        """Hand ``follower`` every reloaded language from now on; call the result to stop."""
        self._language_followers.append(follower)

        def unfollow() -> None:
            if follower in self._language_followers:
                self._language_followers.remove(follower)

        return unfollow

    def register(self, listener: LlmReconfigurable) -> Callable[[], None]:
        """Hand ``listener`` every new section from now on; call the result to stop."""
        self._listeners.append(listener)

        def unregister() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unregister

    def publish(self, config: LlmConfig, language: str | None = None) -> None:
        """Put ``config`` (and ``language``, when given) in force for every listener;
        one that fails does not stop the others."""
        self.current = config
        if language is not None and language != self.language:
            self.language = language
            for follower in list(self._language_followers):
                try:
                    follower(language)
                except Exception:  # reload boundary: the others still get the language
                    log.exception("applying the reloaded language failed")
        for listener in list(self._listeners):
            try:
                listener.reconfigure(config)
            except Exception:  # reload boundary: the others still get the new section
                log.exception(
                    "applying the reloaded llm section failed",
                    extra={"component": type(listener).__name__},
                )
