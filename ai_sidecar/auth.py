"""Bearer-token checks shared by the webhook and the incidents API."""

from __future__ import annotations

import hmac

from aiohttp import web

from ai_sidecar.errors import UnauthorizedError


def require_token(request: web.Request, token: str | None) -> None:
    """Raise UnauthorizedError unless the request carries ``Authorization: Bearer <token>``.

    ``token`` None means authentication was switched off (``--web.insecure-no-auth``).
    """
    if token is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise UnauthorizedError("missing bearer token: send 'Authorization: Bearer <token>'")
    # Constant time, so the answer's timing says nothing about how much matched.
    # surrogateescape: header bytes that are not UTF-8 are a wrong token, not a 500.
    if not hmac.compare_digest(given.strip().encode(errors="surrogateescape"), token.encode()):
        raise UnauthorizedError("invalid bearer token")
