"""WinRM: one remote shell per Windows host, running one command at a time (blocking).

The seam is ``RemoteShell`` (run a command, close) and ``ShellOpener`` (open
one for an endpoint); ``/winrm``'s scraper calls them from worker threads.
``PypsrpOpener`` is the real one, on pypsrp's WS-Man transport (see the
pyproject for why pypsrp): a WinRS ``cmd`` shell is created once and kept, and
each run is the lifecycle MS-WSMV prescribes: Command, Send (stdin), Receive
until Done, Signal terminate. Every request ends by the caller's deadline, so a
thread never outlives its scrape but for the clean-up (Signal, Delete:
``CLEANUP_SECONDS`` at most): the HTTP timeouts are the time left, and since
they bound each socket read rather than the request (a host that sends a byte
a second would hold a thread for ever), a ``Cutoff`` shuts the session's
sockets down when the deadline passes, so the read blocked on them fails at
once. A stop of the exporter takes the same path sooner: ``ShellOpener.stop``
cuts the requests of every shell the opener made at once, and only the
clean-up (Delete, within ``CLEANUP_SECONDS``) is still sent. Receive is never
retried on a read timeout (pypsrp's own Receive retries five times). An answer
is read up to ``MAX_ANSWER_BYTES`` and no further, and a redirect is refused
rather than followed: it would take the credentials (the NTLM or CredSSP
handshake, the Basic header) to a host the allow-lists never admitted.

Errors, all ``WinrmError`` with a ``reason`` for the failure metric::

    WinrmError
    +-- WinrmAuthError        reason "auth": credentials refused (HTTP 401)
    +-- WinrmUnreachableError reason "unreachable": no TCP connection, or TLS refused
    +-- WinrmTimeoutError     reason "timeout": the host did not answer in time
    +-- WinrmQuotaError       reason "quota": the host has no shell left for this user
    +-- WinrmOutputTooLargeError reason "output": the command wrote more than MAX_OUTPUT_BYTES
    +-- WinrmProtocolError    reason "protocol": a fault or an answer WS-Man does not allow
        +-- WinrmAnswerTooLargeError  an answer larger than ``MAX_ANSWER_BYTES``
        +-- WinrmRedirectError        an HTTP redirect, refused

No message carries the password, nor a piece of it: pypsrp's name only the
user, faults are the server's words (``MAX_TEXT_SHOWN`` characters of them at
most), and a codec's error (which quotes the character it stopped at) is
replaced by a message of its own.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import http.client
import math
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, cast

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

Transport = Literal["ntlm", "kerberos", "credssp", "basic"]

# WSManFault codes (MS-WSMV, winerror.h): the user's shell quota is spent; an
# operation timed out with nothing to say (a Receive to repeat); the shell is gone.
QUOTA_FAULT_CODES = frozenset({2150859174, 2150859173, 2150859180})
OPERATION_TIMEOUT_FAULT = 2150858793
SHELL_GONE_FAULT_CODES = frozenset({2150858843, 2150858853})
# Seconds the WS-Man OperationTimeout stays below the HTTP timeout.
OPERATION_SLACK_SECONDS = 1
# The longest a clean-up request (Signal, Delete) waits, even after the deadline
# passed: it frees the host's shell quota, but a host that hung on the command
# likely hangs on these too, and waiting the full deadline again would hold the
# scrape's worker thread (and the host's next scrape) for several deadlines.
CLEANUP_SECONDS = 2.0
COMMAND_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
# What one command may write (stdout and stderr together) before it is stopped:
# the scrape script's answer is gzipped, a few hundred kilobytes on a busy
# server; a host that writes more is broken or hostile, and kept in memory it
# would take the exporter down with it.
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
# What one HTTP answer may hold, status line and headers included. The client
# asks for envelopes of at most 153,600 bytes (pypsrp's MaxEnvelopeSize) and
# Windows keeps to it, message encryption adding a few hundred bytes: an answer
# several times larger is no WS-Man answer, and read whole into memory (as
# pypsrp would), a hostile host could take the exporter's memory with one.
MAX_ANSWER_BYTES = 1024 * 1024
# Characters of a host's own words (a fault's reason, a redirect's Location)
# put in an error message, and so in a log line.
MAX_TEXT_SHOWN = 300


class WinrmError(Exception):
    """A WinRM exchange failed; ``reason`` names how, for the failure metric."""

    reason: ClassVar[str] = "protocol"


class WinrmAuthError(WinrmError):
    reason = "auth"


class WinrmUnreachableError(WinrmError):
    reason = "unreachable"


class WinrmTimeoutError(WinrmError):
    reason = "timeout"


class WinrmQuotaError(WinrmError):
    reason = "quota"


class WinrmProtocolError(WinrmError):
    reason = "protocol"


class WinrmOutputTooLargeError(WinrmError):
    reason = "output"


class WinrmAnswerTooLargeError(WinrmProtocolError):
    """An HTTP answer longer than ``MAX_ANSWER_BYTES``; reading stopped there."""


class WinrmRedirectError(WinrmProtocolError):
    """The listener answered with a redirect, which is never followed."""


class ShellGoneError(WinrmProtocolError):
    """The host no longer knows the shell (restarted, idle timeout): open a new one."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a WS-Man listener is and how to authenticate; ``password`` is never shown."""

    host: str
    port: int
    https: bool
    transport: Transport
    username: str
    password: str
    ca_file: Path | None = None
    verify: bool = True
    # Where to connect, when the allow-lists pinned it; ``host`` is still the
    # name the certificate and the Kerberos SPN are checked against.
    address: str | None = None

    def __repr__(self) -> str:
        scheme = "https" if self.https else "http"
        return f"Endpoint({scheme}://{self.host}:{self.port}/wsman, {self.transport})"


@dataclass(frozen=True, slots=True)
class CommandResult:
    stdout: bytes
    stderr: bytes
    exit_code: int | None


class RemoteShell(Protocol):
    """A shell on one host, used by one thread at a time."""

    def run(
        self, executable: str, arguments: list[str], stdin: bytes, deadline: float
    ) -> CommandResult:
        """Run a command to its end by ``deadline`` (``time.monotonic()``); raise ``WinrmError``.

        After a failure the command may still run on the host: ``close`` ends it.
        """
        ...

    def close(self) -> None:
        """Delete the shell on the host; best effort, never raises."""
        ...


class ShellOpener(Protocol):
    """Opens shells; the scraper keeps one per host."""

    def open(self, endpoint: Endpoint, deadline: float) -> RemoteShell:
        """A new shell on ``endpoint`` by ``deadline``; raises ``WinrmError``."""
        ...

    def stop(self) -> None:
        """The exporter stops: end the opens and runs in flight on its shells at
        once (each raises ``WinrmTimeoutError``) and refuse later ones, from any
        thread; ``close`` still deletes a shell, within ``CLEANUP_SECONDS``."""
        ...


def _time_left(deadline: float) -> float:
    """Seconds to ``deadline``; raises ``WinrmTimeoutError`` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise WinrmTimeoutError("the deadline passed before the request was sent")
    return left


def _cleanup_deadline(deadline: float | None = None) -> float:
    """When a clean-up request (Signal, Delete) sent now must end.

    Within ``CLEANUP_SECONDS`` and the time left to ``deadline`` while some is;
    ``CLEANUP_SECONDS`` once it passed (or with none), the shell still worth freeing.
    """
    now = time.monotonic()
    left = CLEANUP_SECONDS if deadline is None else deadline - now
    return now + (min(left, CLEANUP_SECONDS) if left > 0 else CLEANUP_SECONDS)


def _limit_cleanup(wsman: Any, end: float) -> None:
    """Make the clean-up requests ``wsman`` sends next wait until ``end`` at most."""
    seconds = max(end - time.monotonic(), 0.001)
    wsman.operation_timeout = 1
    wsman.transport.connection_timeout = seconds
    wsman.transport.read_timeout = seconds


def _limit(wsman: Any, deadline: float) -> None:
    """Make every request ``wsman`` sends next end by ``deadline``.

    The HTTP timeouts are the time left; the WS-Man OperationTimeout (whole
    seconds, at least one) a second less, so a Receive the host has nothing
    for comes back as its timeout fault before the HTTP timeout cuts it. The
    requests themselves are sent without a timeout argument: pypsrp would add
    two seconds to it. The HTTP timeouts bound each socket read only: the
    ``Cutoff`` the requests are sent within bounds the whole of them.
    """
    left = _time_left(deadline)
    wsman.operation_timeout = max(1, math.floor(left - OPERATION_SLACK_SECONDS))
    wsman.transport.connection_timeout = left
    wsman.transport.read_timeout = left


# Why the requests of a stopping exporter fail (the scrape's error, in its log line).
STOPPING = "the exporter is stopping"


class Stopping:
    """The exporter's stop, for the ``Cutoff``s of one opener's shells.

    Once ``set``, each cuts the request it has out at once and refuses any
    later one but a clean-up's; a cutoff made after that is stopped as it
    joins. Cutoffs join when made and leave when closed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._cutoffs: set[Cutoff] = set()

    def join(self, cutoff: Cutoff) -> None:
        with self._lock:
            self._cutoffs.add(cutoff)
            stopped = self._set
        if stopped:
            cutoff.stop()

    def leave(self, cutoff: Cutoff) -> None:
        with self._lock:
            self._cutoffs.discard(cutoff)

    def set(self) -> None:
        with self._lock:
            self._set = True
            cutoffs = list(self._cutoffs)
        for cutoff in cutoffs:
            cutoff.stop()


# The cutoff whose requests the current thread is sending: the connections they
# open are watched by it. A shell is used by one thread at a time.
_SENDING_WITHIN: contextvars.ContextVar[Cutoff | None] = contextvars.ContextVar(
    "winrm_cutoff", default=None
)


class Cutoff:
    """Ends one session's requests at a deadline, whatever the host does meanwhile.

    Each connection the session opens is watched through a duplicate of its
    socket (the TLS layer takes over the original mid-handshake). When the
    deadline of ``until`` passes with a request still out, a timer thread shuts
    every watched socket down: a read blocked on one (connecting, in the TLS
    handshake, in the headers or the body) returns at once, and the request
    fails as a timeout. The connections are the session's own, so none of
    another host's is touched. ``stop`` cuts the same way at once, for good
    (the exporter stops): then only clean-up requests are still sent.
    """

    def __init__(self, stopping: Stopping | None = None) -> None:
        self._lock = threading.Lock()
        self._watched: set[socket.socket] = set()
        # The event of the request out (None during a clean-up's, which a stop
        # leaves to its own short bound), and whether the exporter stops.
        self._out: threading.Event | None = None
        self._stopped = False
        self._stopping = stopping
        # Connections closed while a request is out, still watched until it ends:
        # http.client closes a connection whose answer says "Connection: close"
        # (or is HTTP/1.0) as soon as its headers are in, and the body is then
        # read from the same socket, which the cut must still reach.
        self._retiring: list[socket.socket] = []
        if stopping is not None:  # last: a stop already under way stops it at once
            stopping.join(self)

    def watch(self, sock: socket.socket) -> socket.socket:
        """Watch the connection on ``sock``; the handle returned goes to ``forget``."""
        handle = sock.dup()
        with self._lock:
            self._watched.add(handle)
            # A connection opened while the cut was under way (a stop does not
            # wait for the connect): cut as the others were.
            cut = self._out is not None and self._out.is_set()
        if cut:
            with contextlib.suppress(OSError):
                handle.shutdown(socket.SHUT_RDWR)
        return handle

    def forget(self, handle: socket.socket) -> None:
        """Stop watching a connection its owner closed: at once, or when the
        request being sent within :meth:`until` ends (its answer may still be
        read from the socket)."""
        if _SENDING_WITHIN.get() is self:
            with self._lock:
                self._retiring.append(handle)
            return
        with self._lock:
            self._watched.discard(handle)
        handle.close()

    def _retire(self) -> None:
        with self._lock:
            retiring, self._retiring = self._retiring, []
            self._watched.difference_update(retiring)
        for handle in retiring:
            handle.close()

    def close(self) -> None:
        """Let go of what is still watched (connections the session did not close)."""
        if self._stopping is not None:
            self._stopping.leave(self)
        with self._lock:
            handles, self._watched, self._retiring = list(self._watched), set(), []
        for handle in handles:
            handle.close()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """Cut the request out now, and refuse every later one but clean-up's."""
        with self._lock:
            self._stopped = True
            out = self._out
        if out is not None:
            self._cut(out)

    def _cut(self, fired: threading.Event) -> None:
        fired.set()
        with self._lock:
            for handle in self._watched:
                with contextlib.suppress(OSError):  # already closed by the peer
                    handle.shutdown(socket.SHUT_RDWR)

    @contextlib.contextmanager
    def until(self, deadline: float, *, cleanup: bool = False) -> Iterator[None]:
        """Cut the requests sent within by ``deadline`` (or a stop, unless they
        are a ``cleanup``'s); an error they then raise becomes ``WinrmTimeoutError``."""
        fired = threading.Event()
        with self._lock:
            if self._stopped and not cleanup:
                raise WinrmTimeoutError(STOPPING)
            self._out = None if cleanup else fired
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._cut, (fired,))
        timer.daemon = True  # never what keeps the process from exiting
        token = _SENDING_WITHIN.set(self)
        timer.start()
        try:
            yield
        except WinrmError:
            raise
        except Exception as exc:
            if fired.is_set():
                stopped = self._stopped and not cleanup
                message = STOPPING if stopped else "the host did not answer by the deadline"
                raise WinrmTimeoutError(message) from exc
            raise
        finally:
            timer.cancel()
            with self._lock:
                self._out = None
            _SENDING_WITHIN.reset(token)
            self._retire()


class PypsrpShell:
    """A WinRS shell through pypsrp's ``WSMan``; see the module docstring."""

    def __init__(self, wsman: Any, shell: Any, cutoff: Cutoff | None = None) -> None:
        self._wsman = wsman
        self._shell = shell
        self._cutoff = cutoff if cutoff is not None else Cutoff()

    def run(
        self, executable: str, arguments: list[str], stdin: bytes, deadline: float
    ) -> CommandResult:
        from pypsrp.shell import SignalCode

        with _translated():
            with self._cutoff.until(deadline):
                _limit(self._wsman, deadline)
                response = self._shell.command(executable, arguments)
            command_id = _text(response, "rsp:CommandResponse/rsp:CommandId")
            try:
                with self._cutoff.until(deadline):
                    if stdin:
                        self._shell.send("stdin", stdin, command_id=command_id, end=True)
                    stdout, stderr, exit_code = self._receive_all(command_id, deadline)
            finally:
                # Past the deadline the host did not answer, or the exporter
                # stops: stopping the command is left to deleting the shell
                # (``close``), which ends it too, so the failure is told (and
                # the stop goes on) without waiting on that host again.
                if time.monotonic() < deadline and not self._cutoff.stopped:
                    self._signal(command_id, SignalCode.TERMINATE, deadline)
            return CommandResult(stdout, stderr, exit_code)

    def _receive_all(self, command_id: str, deadline: float) -> tuple[bytes, bytes, int | None]:
        from pypsrp.exceptions import WSManFaultError
        from pypsrp.wsman import NAMESPACES, OptionSet, WSManAction

        rsp = NAMESPACES["rsp"]
        stdout, stderr = bytearray(), bytearray()
        while True:
            receive = ET.Element(f"{{{rsp}}}Receive")
            stream = ET.SubElement(receive, f"{{{rsp}}}DesiredStream", CommandId=command_id)
            stream.text = "stdout stderr"
            options = OptionSet()
            options.add_option("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "True")
            _limit(self._wsman, deadline)
            try:
                envelope = self._wsman.invoke(
                    WSManAction.RECEIVE,
                    self._shell.resource_uri,
                    receive,
                    options,
                    self._shell._selector_set,
                )
            except WSManFaultError as fault:
                if fault.code == OPERATION_TIMEOUT_FAULT:
                    continue  # nothing written within the operation timeout: ask again
                raise
            body = envelope.find("s:Body/rsp:ReceiveResponse", NAMESPACES)
            if body is None:
                raise WinrmProtocolError("a Receive answer without a ReceiveResponse")
            for chunk in body.findall("rsp:Stream", NAMESPACES):
                if chunk.text:
                    target = stdout if chunk.attrib.get("Name") == "stdout" else stderr
                    target += base64.b64decode(chunk.text)
            if len(stdout) + len(stderr) > MAX_OUTPUT_BYTES:
                # Raised before the command ends: run's finally stops it on the host.
                raise WinrmOutputTooLargeError(
                    f"the command wrote more than {MAX_OUTPUT_BYTES} bytes"
                )
            state = body.find("rsp:CommandState", NAMESPACES)
            if state is not None and state.attrib.get("State") == COMMAND_DONE:
                code = state.find("rsp:ExitCode", NAMESPACES)
                exit_code = int(code.text) if code is not None and code.text else None
                return bytes(stdout), bytes(stderr), exit_code

    def _signal(self, command_id: str, code: str, deadline: float) -> None:
        # Best effort: a command that already ended, or a shell the host dropped,
        # has nothing left to stop, and the scrape's own outcome is what counts.
        end = _cleanup_deadline(deadline)
        with contextlib.suppress(Exception), self._cutoff.until(end, cleanup=True):
            _limit_cleanup(self._wsman, end)
            self._shell.signal(code, command_id)

    def close(self) -> None:
        # A shell or session the host already dropped is closed enough.
        end = _cleanup_deadline()
        with contextlib.suppress(Exception), self._cutoff.until(end, cleanup=True):
            _limit_cleanup(self._wsman, end)
            self._shell.close()
        with contextlib.suppress(Exception):
            self._wsman.close()
        self._cutoff.close()


class PypsrpOpener:
    """Opens WinRS shells with pypsrp; one ``WSMan`` (HTTP session, auth context) per shell."""

    def __init__(self) -> None:
        self._stopping = Stopping()

    def stop(self) -> None:
        self._stopping.set()

    def open(self, endpoint: Endpoint, deadline: float) -> RemoteShell:
        from pypsrp.shell import WinRS
        from pypsrp.wsman import WSMan

        cert_validation: bool | str = endpoint.verify
        if endpoint.verify and endpoint.ca_file is not None:
            cert_validation = str(endpoint.ca_file)
        with _translated():
            left = _time_left(deadline)
            server = endpoint.address or endpoint.host
            wsman = WSMan(
                f"[{server}]" if ":" in server else server,
                port=endpoint.port,
                username=endpoint.username,
                password=endpoint.password,
                ssl=endpoint.https,
                auth=endpoint.transport,
                # Typed bool, but a CA bundle path is what requests' verify takes too.
                cert_validation=cast(bool, cert_validation),
                # Message encryption whenever the transport can (NTLM, Kerberos, CredSSP).
                encryption="auto",
                # Proxy variables are for the exporter's outbound web traffic, not WinRM.
                no_proxy=True,
                # Whole seconds here; _limit sets the exact ones before each use.
                connection_timeout=max(1, math.floor(left)),
                read_timeout=max(1, math.floor(left)),
                negotiate_hostname_override=endpoint.host,
            )
            pinned = endpoint.address is not None and endpoint.https
            _guard(wsman, endpoint.host if pinned else None)
            cutoff = Cutoff(self._stopping)
            shell = WinRS(wsman, no_profile=True)
            try:
                with cutoff.until(deadline):
                    _limit(wsman, deadline)
                    shell.open()
            except BaseException:
                wsman.close()
                cutoff.close()
                raise
        return PypsrpShell(wsman, shell, cutoff)


class _CappedReader:
    """A response's socket file that gives ``limit`` bytes and then raises.

    Every read is asked for one byte more than is left at most, so none holds
    more than the bound in memory before the answer is refused.
    """

    def __init__(self, raw: Any, limit: int) -> None:
        self._raw = raw
        self._left = limit
        self._limit = limit

    def _count(self, data: bytes | int) -> None:
        self._left -= data if isinstance(data, int) else len(data)
        if self._left < 0:
            raise WinrmAnswerTooLargeError(
                f"an answer of more than {self._limit} bytes; a WS-Man answer is far smaller"
            )

    def _ask(self, size: int | None) -> int:
        return self._left + 1 if size is None or size < 0 else min(size, self._left + 1)

    def _counted(self, method: str, size: int | None) -> bytes:
        data: bytes = getattr(self._raw, method)(self._ask(size))
        self._count(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0:
            return self._counted("read", size)
        parts = []
        while chunk := self._counted("read", 64 * 1024):
            parts.append(chunk)
        return b"".join(parts)

    def read1(self, size: int = -1) -> bytes:
        return self._counted("read1", size)

    def readline(self, size: int = -1) -> bytes:
        return self._counted("readline", size)

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as view:
            count: int = self._raw.readinto(view[: self._ask(len(view))])
        self._count(count)
        return count

    def __getattr__(self, name: str) -> Any:
        # close, closed, fileno, peek (which consumes nothing), flush.
        return getattr(self._raw, name)


class _CappedResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = cast(Any, _CappedReader(self.fp, MAX_ANSWER_BYTES))


class _Watched:
    """A urllib3 connection that the cutoff of the requests which opened it watches,
    and whose answers are read up to ``MAX_ANSWER_BYTES``."""

    _cutoff: Cutoff | None = None
    _handle: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        cutoff = _SENDING_WITHIN.get()
        if cutoff is not None:
            self._cutoff, self._handle = cutoff, cutoff.watch(sock)
        return sock

    def close(self) -> None:
        try:
            super().close()  # type: ignore[misc]
        finally:
            cutoff, handle, self._handle = self._cutoff, self._handle, None
            if cutoff is not None and handle is not None:
                cutoff.forget(handle)


class _WatchedConnection(_Watched, HTTPConnection):
    response_class = _CappedResponse


class _WatchedTLSConnection(_Watched, HTTPSConnection):
    response_class = _CappedResponse


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedTLSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedTLSConnection


class _GuardedAdapter(HTTPAdapter):
    """Watched connections, capped answers and no redirect; with ``name``, it connects
    wherever the URL says but sends and checks ``name`` in TLS (SNI, certificate)."""

    def __init__(self, name: str | None = None) -> None:
        self._name = name
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._name is not None:
            kwargs["server_hostname"] = self._name
            kwargs["assert_hostname"] = self._name
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedTLSPool}

    def build_response(self, req: Any, resp: Any) -> Any:
        # Here, not in a session hook: the answers to the NTLM and CredSSP
        # handshake's own requests pass this way too, and a session hook never
        # sees them.
        if 300 <= resp.status < 400:
            location = one_line(resp.headers.get("Location") or "nowhere")
            resp.close()  # its body unread: the connection is not reused
            raise WinrmRedirectError(
                f"the listener redirected to {location} (HTTP {resp.status}); a redirect"
                " is never followed: it would take the credentials elsewhere"
            )
        return super().build_response(req, resp)


def _guard(wsman: Any, name: str | None) -> None:
    """Give ``wsman`` a session of guarded connections (see ``_GuardedAdapter``)."""
    transport = wsman.transport
    session = transport.session = transport._build_session()
    session.max_redirects = 0
    session.mount("http://", _GuardedAdapter())
    session.mount("https://", _GuardedAdapter(name))


def _text(element: ET.Element, path: str) -> str:
    from pypsrp.wsman import NAMESPACES

    found = element.find(path, NAMESPACES)
    if found is None or not found.text:
        raise WinrmProtocolError(f"the answer has no {path.rsplit(':', 1)[-1]}")
    return found.text


class _translated:
    """Turns pypsrp's and requests' exceptions into ``WinrmError``s."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any
    ) -> Literal[False]:
        if exc is None or isinstance(exc, WinrmError) or not isinstance(exc, Exception):
            return False
        raise translate(exc) from exc


def translate(exc: Exception) -> WinrmError:
    """The ``WinrmError`` for an exception from pypsrp, requests or the socket layer."""
    import requests
    from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

    if isinstance(exc, AuthenticationError):
        return WinrmAuthError("the host refused the credentials (HTTP 401)")
    if isinstance(exc, UnicodeEncodeError):
        # Only the credentials are encoded with a narrow codec (requests' Basic
        # header); the codec's message names a character of them and its place.
        return WinrmAuthError("the credentials hold a character Basic cannot send (Latin-1 only)")
    if isinstance(exc, WSManFaultError):
        message = f"WS-Management fault {exc.code}: {one_line(str(exc.reason or ''))}"
        if exc.code in QUOTA_FAULT_CODES:
            return WinrmQuotaError(message)
        if exc.code in SHELL_GONE_FAULT_CODES:
            return ShellGoneError(message)
        return WinrmProtocolError(message)
    if isinstance(exc, WinRMTransportError):
        return WinrmProtocolError(f"HTTP {exc.code} from the WS-Man listener")
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        # The guarded adapter refuses a redirect first; this is the session's own stop.
        return WinrmRedirectError("the listener redirected; a redirect is never followed")
    if isinstance(exc, requests.exceptions.SSLError):
        return WinrmUnreachableError(f"TLS failed: {_first_line(exc)}")
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.ReadTimeout):
        return WinrmTimeoutError("the host did not answer in time")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return WinrmUnreachableError(f"cannot connect: {_first_line(exc)}")
    if isinstance(exc, ET.ParseError):
        return WinrmProtocolError(f"the answer is not XML: {exc}")
    if isinstance(exc, ImportError):
        # pypsrp raises its own for CredSSP, with a message and no module name.
        missing = exc.name or _first_line(exc)
        return WinrmProtocolError(f"the transport needs a module not installed: {missing}")
    return WinrmProtocolError(f"{type(exc).__name__}: {_first_line(exc)}")


def one_line(text: str, limit: int = MAX_TEXT_SHOWN) -> str:
    """``text`` on one line, shortened to ``limit`` characters: a host's words for a log."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
