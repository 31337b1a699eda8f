"""Notification sinks for tests: where Alertmanager's Slack and email receivers deliver.

* :class:`SlackSink`: an HTTP server on 127.0.0.1 that accepts what Slack's
  incoming webhooks accept (a JSON POST, answered ``ok``) and records each body.
* :class:`SmtpSink`: a real SMTP server (aiosmtpd) on 127.0.0.1 that records
  every message as parsed :class:`email.message.EmailMessage`.

Both run on their own threads, so synchronous and asyncio tests can use them
alike, and both are context managers that stop their server on exit.

Typical use::

    with SlackSink() as slack, SmtpSink() as smtp:
        ...  # point Alertmanager at slack.url and smtp.host:smtp.port
        message = slack.wait_for(lambda m: "LinkDown" in json.dumps(m))
"""

from __future__ import annotations

import email.policy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from scripts.localstack import free_port

T = TypeVar("T")


class _Recorder(Generic[T]):
    """A thread-safe list of received items that tests can wait on."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._changed = threading.Condition()

    def add(self, item: T) -> None:
        with self._changed:
            self._items.append(item)
            self._changed.notify_all()

    def items(self) -> list[T]:
        with self._changed:
            return list(self._items)

    def clear(self) -> None:
        with self._changed:
            self._items.clear()

    def wait_for(self, match: Callable[[T], bool], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for item in self._items:
                    if match(item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {what} matched within {timeout:.0f}s; got {len(self._items)}:\n"
                        + "\n".join(repr(i)[:500] for i in self._items)
                    )
                self._changed.wait(left)


@dataclass(frozen=True, slots=True)
class Request:
    """One POST the sink received."""

    path: str
    headers: dict[str, str]
    body: Any


class SlackSink:
    """A Slack-compatible webhook endpoint; ``url`` is what ``api_url`` should be.

    It accepts any JSON POST on any path, so it also serves as the receiving end
    of an Alertmanager webhook (``base_url``) or as a stand-in peer.
    """

    def __init__(self, status: int = 200) -> None:
        self._posts: _Recorder[Request] = _Recorder()
        self.status = status
        posts = self._posts
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    body = json.loads(raw)
                except ValueError:
                    self.send_error(400, "invalid JSON")
                    return
                posts.add(Request(self.path, dict(self.headers.items()), body))
                # What Slack answers an accepted message with.
                self.send_response(sink.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="slack-sink", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        return self.base_url + "/services/T000/B000/test"

    def requests(self) -> list[Request]:
        return self._posts.items()

    def messages(self) -> list[Any]:
        """The JSON bodies received, oldest first."""
        return [request.body for request in self._posts.items()]

    def clear(self) -> None:
        self._posts.clear()

    def wait_for(self, match: Callable[[Any], bool] = lambda _: True, timeout: float = 30.0) -> Any:
        """The first body ``match`` accepts, waiting up to ``timeout`` seconds for it."""
        return self._posts.wait_for(lambda r: match(r.body), timeout, "POST").body

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def slack_text(message: dict[str, Any]) -> str:
    """Everything a person would read in a Slack message Alertmanager sent."""
    parts = [str(message.get("text", ""))]
    for attachment in message.get("attachments", []):
        parts += [str(attachment.get(key, "")) for key in ("title", "text", "pretext")]
    return "\n".join(parts)


class _Handler:
    def __init__(
        self,
        messages: _Recorder[EmailMessage],
        refuse: int,
        refusal: str,
        unknown: frozenset[str],
    ) -> None:
        self._messages = messages
        self.refused = 0
        self._refuse = refuse
        self._refusal = refusal
        self._unknown = unknown

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self._unknown:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refused < self._refuse:
            self.refused += 1
            return self._refusal
        content = envelope.original_content or b""
        message = BytesParser(policy=email.policy.default).parsebytes(content)
        assert isinstance(message, EmailMessage)
        self._messages.add(message)
        return "250 OK"


class SmtpSink:
    """An SMTP server that accepts every message (after refusing the first ``refuse``
    with ``refusal``, a temporary error by default), for every recipient but the
    ``unknown`` ones; with ``login``, a (user, password) it requires before mail.
    Alertmanager's ``smarthost`` is ``f"{sink.host}:{sink.port}"`` (with
    ``require_tls: false``)."""

    host = "127.0.0.1"

    def __init__(
        self,
        refuse: int = 0,
        *,
        refusal: str = "451 4.3.0 try again later",
        unknown: frozenset[str] = frozenset(),
        login: tuple[str, str] | None = None,
    ) -> None:
        self._messages: _Recorder[EmailMessage] = _Recorder()
        self.port = free_port()
        self._handler = _Handler(self._messages, refuse, refusal, unknown)
        self.logins = 0
        auth: dict[str, Any] = {}
        if login is not None:
            auth = {
                "authenticator": self._authenticator(login),
                "auth_required": True,
                "auth_require_tls": False,
                # One mechanism: a client's login is one check, which tests count.
                "auth_exclude_mechanism": ["LOGIN"],
            }
        self._controller = Controller(self._handler, hostname=self.host, port=self.port, **auth)

    def _authenticator(self, login: tuple[str, str]) -> Callable[..., AuthResult]:
        expected = (login[0].encode(), login[1].encode())

        def check(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            self.logins += 1
            given = (data.login, data.password) if isinstance(data, LoginPassword) else None
            return AuthResult(success=given == expected, handled=False)

        return check

    @property
    def refused(self) -> int:
        """Messages refused so far."""
        return self._handler.refused

    @property
    def smarthost(self) -> str:
        return f"{self.host}:{self.port}"

    def messages(self) -> list[EmailMessage]:
        return self._messages.items()

    def clear(self) -> None:
        self._messages.clear()

    def wait_for(
        self, match: Callable[[EmailMessage], bool] = lambda _: True, timeout: float = 30.0
    ) -> EmailMessage:
        return self._messages.wait_for(match, timeout, "email")

    def __enter__(self) -> Self:
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._controller.stop()


def email_body(message: EmailMessage, subtype: str) -> str:
    """The decoded ``text/<subtype>`` part of ``message`` ("" if it has none)."""
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return ""
    content = part.get_content()
    return content if isinstance(content, str) else ""
