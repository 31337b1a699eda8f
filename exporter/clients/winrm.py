"""WinRM: one remote shell per Windows host, running one command at a time (blocking).

The seam is ``RemoteShell`` (run a command, close) and ``ShellOpener`` (open
one for an endpoint); ``/winrm``'s scraper calls them from worker threads.
``PypsrpOpener`` is the real one, on pypsrp's WS-Man transport (see the
pyproject for why pypsrp): a WinRS ``cmd`` shell is created once and kept, and
each run is the lifecycle MS-WSMV prescribes: Command, Send (stdin), Receive
until Done, Signal terminate. Every request's HTTP timeout is the time left to
the caller's deadline, so a thread never outlives its scrape but for the clean-up
(Signal, Delete: ``CLEANUP_SECONDS`` at most), and Receive is never retried on
a read timeout (pypsrp's own Receive retries five times).

Errors, all ``WinrmError`` with a ``reason`` for the failure metric::

    WinrmError
    +-- WinrmAuthError        reason "auth": credentials refused (HTTP 401)
    +-- WinrmUnreachableError reason "unreachable": no TCP connection, or TLS refused
    +-- WinrmTimeoutError     reason "timeout": the host did not answer in time
    +-- WinrmQuotaError       reason "quota": the host has no shell left for this user
    +-- WinrmOutputTooLargeError reason "output": the command wrote more than MAX_OUTPUT_BYTES
    +-- WinrmProtocolError    reason "protocol": a fault or an answer WS-Man does not allow

No message carries the password, nor a piece of it: pypsrp's name only the
user, faults are the server's words, and a codec's error (which quotes the
character it stopped at) is replaced by a message of its own.
"""

from __future__ import annotations

import base64
import contextlib
import math
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, cast

from requests.adapters import HTTPAdapter

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
        """Run a command to its end by ``deadline`` (``time.monotonic()``); raise ``WinrmError``."""
        ...

    def close(self) -> None:
        """Delete the shell on the host; best effort, never raises."""
        ...


class ShellOpener(Protocol):
    """Opens shells; the scraper keeps one per host."""

    def open(self, endpoint: Endpoint, deadline: float) -> RemoteShell:
        """A new shell on ``endpoint`` by ``deadline``; raises ``WinrmError``."""
        ...


def _time_left(deadline: float) -> float:
    """Seconds to ``deadline``; raises ``WinrmTimeoutError`` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise WinrmTimeoutError("the deadline passed before the request was sent")
    return left


def _limit_cleanup(wsman: Any, deadline: float | None = None) -> None:
    """Make the clean-up requests ``wsman`` sends next end by ``deadline``, or soon after it.

    Within ``CLEANUP_SECONDS`` and the time left to ``deadline`` while some is;
    ``CLEANUP_SECONDS`` once it passed (or with none), the shell still worth freeing.
    """
    left = CLEANUP_SECONDS if deadline is None else deadline - time.monotonic()
    seconds = min(left, CLEANUP_SECONDS) if left > 0 else CLEANUP_SECONDS
    wsman.operation_timeout = 1
    wsman.transport.connection_timeout = seconds
    wsman.transport.read_timeout = seconds


def _limit(wsman: Any, deadline: float) -> None:
    """Make every request ``wsman`` sends next end by ``deadline``.

    The HTTP timeouts are the time left; the WS-Man OperationTimeout (whole
    seconds, at least one) a second less, so a Receive the host has nothing
    for comes back as its timeout fault before the HTTP timeout cuts it. The
    requests themselves are sent without a timeout argument: pypsrp would add
    two seconds to it.
    """
    left = _time_left(deadline)
    wsman.operation_timeout = max(1, math.floor(left - OPERATION_SLACK_SECONDS))
    wsman.transport.connection_timeout = left
    wsman.transport.read_timeout = left


class PypsrpShell:
    """A WinRS shell through pypsrp's ``WSMan``; see the module docstring."""

    def __init__(self, wsman: Any, shell: Any) -> None:
        self._wsman = wsman
        self._shell = shell

    def run(
        self, executable: str, arguments: list[str], stdin: bytes, deadline: float
    ) -> CommandResult:
        from pypsrp.shell import SignalCode

        with _translated():
            _limit(self._wsman, deadline)
            response = self._shell.command(executable, arguments)
            command_id = _text(response, "rsp:CommandResponse/rsp:CommandId")
            try:
                if stdin:
                    self._shell.send("stdin", stdin, command_id=command_id, end=True)
                stdout, stderr, exit_code = self._receive_all(command_id, deadline)
            finally:
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
        with contextlib.suppress(Exception):
            _limit_cleanup(self._wsman, deadline)
            self._shell.signal(code, command_id)

    def close(self) -> None:
        # A shell or session the host already dropped is closed enough.
        with contextlib.suppress(Exception):
            _limit_cleanup(self._wsman)
            self._shell.close()
        with contextlib.suppress(Exception):
            self._wsman.close()


class PypsrpOpener:
    """Opens WinRS shells with pypsrp; one ``WSMan`` (HTTP session, auth context) per shell."""

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
            if endpoint.address is not None and endpoint.https:
                _check_name(wsman, endpoint.host)
            _limit(wsman, deadline)
            shell = WinRS(wsman, no_profile=True)
            try:
                shell.open()
            except BaseException:
                wsman.close()
                raise
        return PypsrpShell(wsman, shell)


class _NamedTLSAdapter(HTTPAdapter):
    """Connects wherever the URL says, but sends and checks ``name`` in TLS (SNI, certificate)."""

    def __init__(self, name: str) -> None:
        self._name = name
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self._name
        kwargs["assert_hostname"] = self._name
        super().init_poolmanager(*args, **kwargs)


def _check_name(wsman: Any, name: str) -> None:
    """Make ``wsman``'s HTTPS connections to a pinned address verify ``name``."""
    transport = wsman.transport
    transport.session = transport._build_session()
    transport.session.mount("https://", _NamedTLSAdapter(name))


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
        reason = " ".join(str(exc.reason or "").split())
        message = f"WS-Management fault {exc.code}: {reason}"
        if exc.code in QUOTA_FAULT_CODES:
            return WinrmQuotaError(message)
        if exc.code in SHELL_GONE_FAULT_CODES:
            return ShellGoneError(message)
        return WinrmProtocolError(message)
    if isinstance(exc, WinRMTransportError):
        return WinrmProtocolError(f"HTTP {exc.code} from the WS-Man listener")
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


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
