"""How the return trip keeps enriched copies alive, resolves, retries and links them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timedelta, tzinfo

from ai_sidecar.errors import ConfigError
from ai_sidecar.i18n import SOURCE_LANGUAGE
from ai_sidecar.notify.signing import GraphLinks


@dataclass(frozen=True, slots=True)
class ReturnTripPolicy:
    """How enriched copies are kept alive, resolved, retried and linked."""

    # A firing copy's endsAt is the post time plus this.
    keepalive: timedelta = timedelta(minutes=5)
    # Firing copies are posted again this often, and reconciliation runs as often.
    repost_interval: timedelta = timedelta(minutes=1)
    resolved_repeat_for: timedelta = timedelta(minutes=5)
    resolved_repeat_interval: timedelta = timedelta(minutes=1)
    # Per peer, from the first failure: initial, doubling, capped at max.
    retry_backoff_initial: timedelta = timedelta(seconds=1)
    retry_backoff_max: timedelta = timedelta(minutes=1)
    # One request to a peer, connecting included.
    post_timeout: timedelta = timedelta(seconds=5)
    # How long every answering peer must lack a raw alert before it counts as
    # resolved; None: two repost intervals (2 min by default).
    missing_grace: timedelta | None = None
    # Alerts per POST; a bigger backlog goes in several requests.
    max_batch: int = 200
    prometheus_url: str | None = None
    grafana_url: str | None = None
    external_url: str | None = None
    # Signed graph URLs for the ai_graph_url annotation; None: no graph link.
    graph_links: GraphLinks | None = None
    # Where notifications show times (notifications.timezone).
    zone: tzinfo = UTC
    # The language people read notifications in (the config's language).
    language: str = SOURCE_LANGUAGE

    def __post_init__(self) -> None:
        if self.repost_interval >= self.keepalive:
            raise ConfigError(
                "return trip: repost_interval must be shorter than keepalive, "
                "or enriched alerts expire between posts"
            )
        if self.max_batch < 1:
            raise ConfigError("return trip: max_batch must be at least 1")

    @property
    def grace(self) -> timedelta:
        """The missing_grace in force."""
        return self.missing_grace if self.missing_grace is not None else 2 * self.repost_interval
