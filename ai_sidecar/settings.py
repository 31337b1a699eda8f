"""What the sidecar starts with. Later issues add the webhook token, store and peers."""

from dataclasses import dataclass

DEFAULT_PORT = 8782


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    listen_host: str | None = None
    listen_port: int = DEFAULT_PORT
