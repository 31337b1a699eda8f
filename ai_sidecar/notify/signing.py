"""Signed, expiring links to an incident's graph, which Slack and mail clients fetch anonymously.

Slack's image proxy and a mail reader fetch ``image_url`` without any
credentials, so the graph route cannot ask for the bearer token. Instead its
URL carries its own proof: ``{external_url}/graphs/{incident}.png?expires=<unix
seconds>&sig=<hex>``, where ``sig`` is HMAC-SHA256 over the incident id and the
expiry under a key only the sidecar knows. Knowing one incident's URL gives
neither another incident's graph nor a longer lease on this one.

The key is ``graphs.key_file`` when set, else ``graph.key`` in the data
directory, created on first use (32 random bytes, mode 0600). Replicas that
share a PostgreSQL store must share the key too (set ``key_file`` to the same
secret on each): a URL one replica signed is fetched from whichever one the
load balancer picks.

Expiry times are rounded up to :data:`EXPIRY_STEP`, so the URL of an incident
stays the same between re-renders of its copies within that step: a copy
re-posted every minute does not change its annotation every minute.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import os
import secrets
import stat
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

from ai_sidecar.config import GraphsConfig, SidecarConfig
from ai_sidecar.errors import ConfigError

log = logging.getLogger("ai_sidecar.notify.graphs")

KEY_FILE = "graph.key"
KEY_BYTES = 32
# Expiry times are multiples of this, so a URL is stable between re-renders.
EXPIRY_STEP = timedelta(hours=1)
# A shorter key is a mistake in the file, not a secret.
MIN_KEY_BYTES = 16
GRAPH_PATH = "/graphs/{id}.png"


def load_graph_key(config: GraphsConfig, data_dir: Path) -> bytes:
    """The signing key: ``config.key_file``'s bytes, or the data directory's
    ``graph.key``, created with :data:`KEY_BYTES` random bytes if absent.

    Creation is exclusive: two processes starting at once (the HTTP process
    and the worker process) end up with the same key, whichever wrote it.
    """
    if config.key_file is not None:
        try:
            key = config.key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"graphs.key_file: cannot read it ({exc.strerror})") from None
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"graphs.key_file: the key needs at least {MIN_KEY_BYTES} bytes")
        _check_mode(config.key_file)
        return key
    path = data_dir / KEY_FILE
    try:
        if not path.exists():
            _create_key(path)
        key = path.read_bytes()
    except OSError as exc:
        # A read-only data directory (the PostgreSQL store needs no writable one).
        raise ConfigError(
            f"{path}: cannot create or read the graph key ({exc.strerror or type(exc).__name__}); "
            "set graphs.key_file"
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{path}: the graph key is shorter than {MIN_KEY_BYTES} bytes")
    _check_mode(path)
    return key


def _check_mode(path: Path) -> None:
    """Refuse a key others may write, and say so when others may read it.

    Whoever can write the key can put in one they know and sign a graph URL
    for any incident; whoever can read it (restored from a backup, copied by
    hand) can sign them too, which is worth a warning rather than a refusal.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{path}: the graph key can be written by others than its owner, who could "
            "sign graph URLs with a key of their own: chmod 600 it"
        )
    if mode & 0o077:
        log.warning(
            "the graph key can be read by others than its owner: chmod 600 it",
            extra={"file": str(path)},
        )


def _create_key(path: Path) -> None:
    """Write a new key to ``path`` unless another process got there first.

    Written whole to a private file, then linked into place: the link fails
    if ``path`` exists, so a reader never sees half a key, and two processes
    starting at once (the HTTP process and the worker process) agree on one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(KEY_BYTES))
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink()


@dataclass(frozen=True, slots=True)
class GraphSigner:
    """Signs and checks ``(incident id, expiry)`` pairs; ``ttl`` is how long a URL lasts."""

    key: bytes = field(repr=False)
    ttl: timedelta

    def signature(self, incident_id: str, expires: int) -> str:
        message = f"{incident_id}\n{expires}".encode(errors="surrogateescape")
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def expiry(self, now: datetime) -> int:
        """Unix seconds: ``now`` + ttl, rounded up to :data:`EXPIRY_STEP`."""
        step = EXPIRY_STEP.total_seconds()
        return int(math.ceil((now.timestamp() + self.ttl.total_seconds()) / step) * step)

    def query(self, incident_id: str, now: datetime) -> str:
        expires = self.expiry(now)
        return urlencode({"expires": expires, "sig": self.signature(incident_id, expires)})

    def valid(self, incident_id: str, expires: str | None, sig: str | None, now: datetime) -> bool:
        """Whether the pair was signed with this key and has not expired.

        The signature is compared in constant time; an expiry that is no plain
        number of seconds is simply invalid.
        """
        if not expires or not sig or not (expires.isascii() and expires.isdigit()):
            return False
        if len(expires) > 12 or int(expires) <= now.timestamp():
            return False
        expected = self.signature(incident_id, int(expires))
        return hmac.compare_digest(expected.encode(), sig.encode(errors="surrogateescape"))


@dataclass(frozen=True, slots=True)
class GraphLinks:
    """Signed graph URLs under the sidecar's external URL."""

    base_url: str
    signer: GraphSigner

    def url(self, incident_id: str, now: datetime) -> str:
        path = GRAPH_PATH.format(id=quote(incident_id, safe=""))
        return f"{self.base_url.rstrip('/')}{path}?{self.signer.query(incident_id, now)}"


def graph_links(config: SidecarConfig, data_dir: Path) -> GraphLinks | None:
    """The links every enriched copy carries, or None when there are none to make.

    Without ``return_trip.external_url`` nobody outside could fetch the graph:
    no link is made, and that is logged once, here.
    """
    if not config.graphs.enabled:
        return None
    if config.return_trip.external_url is None:
        log.info(
            "graphs are enabled but return_trip.external_url is not set: "
            "notifications carry no graph link"
        )
        return None
    signer = GraphSigner(load_graph_key(config.graphs, data_dir), config.graphs.url_ttl)
    return GraphLinks(str(config.return_trip.external_url), signer)
