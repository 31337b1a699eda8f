"""A WS-Man listener on 127.0.0.1 that answers WinRS requests the way Windows does.

It keeps shells and commands as a host does (MS-WSMV): Create gives a
``ResourceCreated`` with the ShellId selector, Command a CommandId, Send takes
stdin in base64 ``Stream`` elements, Receive hands stdout out in several
base64 chunks over several Receives (``Running`` until the last, which is
``Done`` with an exit code), Signal and Delete end the command and the shell.
Requests it does not expect get the SOAP faults Windows sends (HTTP 500, a
``WSManFault`` with its code). Authentication is Basic (as over HTTPS; the
listener may run with TLS), or NTLM through pyspnego's acceptor with every
message then encrypted as WinRM does over HTTP (``multipart/encrypted``,
``application/HTTP-SPNEGO-session-encrypted``, one security context per TCP
connection); an unencrypted message on an NTLM listener is refused.

Knobs for faults: ``max_shells`` (the per-user shell quota), ``receive_delay``
(a slow host), ``mangle`` (garbled or cut output), ``forget_shells`` (the host
restarted and knows no shell any more). Hostile hosts answer Receive with
headers and then a byte at a time (``receive_trickle``), with an answer of
``receive_size`` bytes, or with a fault whose reason is ``fault_reason``.

Run as a program (``python -m tests.exporter.targets.winrm.wsman_server``) it
serves ``--hosts`` listeners over HTTPS, each its own simulated host, and prints
their ports as one JSON line: the Grafana test stack and the fleet benchmark
scrape it from another process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import re
import ssl
import struct
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import spnego
from aiohttp import web

from tests.exporter.targets.winrm.fake_host import FakeHost

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CMD_URI = f"{SHELL}/cmd"
QUOTA_CODE = 2150859174
SPNEGO_ENCRYPTED = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = "Encrypted Boundary"
NO_SUCH_SHELL_CODE = 2150858843


@dataclass
class Command:
    executable: str
    arguments: list[str]
    stdin: bytearray = field(default_factory=bytearray)
    stdin_done: bool = False
    pending: list[bytes] | None = None


@dataclass
class Shell:
    commands: dict[str, Command] = field(default_factory=dict)


@dataclass
class Exchange:
    """One request as the server saw it: the action's last path segment."""

    action: str
    authorization: str | None
    host: str = ""  # the HTTP Host header: the address connected to, or the name


class WsmanServer:
    """The aiohttp app and the state of the host behind it."""

    def __init__(
        self,
        host: FakeHost | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        max_shells: int = 30,
        chunks: int = 3,
        ntlm: bool = False,
    ) -> None:
        self.host = host or FakeHost()
        self.username, self.password = username, password
        self.max_shells = max_shells
        self.chunks = chunks
        self.receive_delay = 0.0
        self.receive_trickle = False
        # The hostile answers say "Connection: close": http.client lets go of
        # the connection once their headers are in and reads the body after.
        self.receive_closing = False
        self.receive_size = 0
        self.fault_reason: str | None = None
        # Bytes of the hostile answers above written before the client went away.
        self.hostile_bytes_sent = 0
        self.hostile_answer_started = asyncio.Event()
        self.mangle: Callable[[bytes], bytes] | None = None
        # What the command writes on stderr, with its last chunk of stdout.
        self.stderr = b""
        self._closing = asyncio.Event()
        self._transports: set[asyncio.Transport] = set()
        self.shells: dict[str, Shell] = {}
        self.exchanges: list[Exchange] = []
        self._exchanged = asyncio.Condition()
        self.shells_created = 0
        self.shells_deleted = 0
        # NTLM needs NTLM_USER_FILE (DOMAIN:USER:PASSWORD lines) in the environment.
        self.ntlm = ntlm
        self.encrypted_messages = 0
        self._contexts: dict[object, spnego.ContextProxy] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/wsman", self.handle)
        app.on_shutdown.append(self._stop_delays)
        return app

    async def _stop_delays(self, _app: web.Application) -> None:
        # A slow answer still pending at shutdown ends at once, and connections
        # whose client gave up on one (a TLS transport left half-closed) are
        # cut, so nothing is left open behind the test.
        self._closing.set()
        for transport in self._transports:
            if not transport.is_closing():
                transport.abort()

    async def _delay(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.receive_delay)

    def forget_shells(self) -> None:
        self.shells.clear()

    def actions(self) -> list[str]:
        return [exchange.action for exchange in self.exchanges]

    async def seen(self, action: str) -> None:
        """Return once a request of ``action`` arrived: the clean-up after a
        failed scrape goes on after the scrape answered."""
        async with self._exchanged:
            await self._exchanged.wait_for(lambda: action in self.actions())

    def _authorised(self, request: web.Request) -> bool:
        if self.username is None:
            return True
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        given = base64.b64decode(header[6:]).decode("utf-8")
        return given == f"{self.username}:{self.password}"

    async def handle(self, request: web.Request) -> web.Response:
        if request.transport is not None:
            self._transports.add(request.transport)
        if self.ntlm:
            return await self._handle_ntlm(request)
        return await self._handle_plain(request, await request.read())

    async def _handle_ntlm(self, request: web.Request) -> web.Response:
        """NTLM over HTTP: the handshake on blank requests, then encrypted messages only."""
        connection = request.transport
        header = request.headers.get("Authorization", "")
        if header.startswith("Negotiate "):
            context = self._contexts.get(connection)
            if context is None or context.complete:
                context = self._contexts[connection] = spnego.server(
                    protocol="ntlm", options=spnego.NegotiateOptions.wrapping_winrm
                )
            try:
                out_token = context.step(base64.b64decode(header[len("Negotiate ") :]))
            except spnego.exceptions.SpnegoError:
                self._contexts.pop(connection, None)
                self.exchanges.append(Exchange("401", header))
                return web.Response(status=401, headers={"WWW-Authenticate": "Negotiate"})
            if not context.complete:
                challenge = "Negotiate " + base64.b64encode(out_token or b"").decode()
                return web.Response(status=401, headers={"WWW-Authenticate": challenge})
            await request.read()
            return web.Response(status=200)
        context = self._contexts.get(connection)
        if context is None or not context.complete:
            # The first, blank request of every connection: the challenge to start NTLM.
            return web.Response(status=401, headers={"WWW-Authenticate": "Negotiate"})
        content_type = request.headers.get("Content-Type", "")
        assert content_type.startswith("multipart/encrypted;"), "unencrypted message over HTTP"
        assert f'protocol="{SPNEGO_ENCRYPTED}"' in content_type
        plain = _unwrap(context, await request.read())
        self.encrypted_messages += 1
        answer = await self._handle_plain(request, plain)
        assert isinstance(answer.body, bytes)
        wrapped = _wrap(context, answer.body)
        return web.Response(
            status=answer.status,
            body=wrapped,
            headers={
                "Content-Type": f'multipart/encrypted;protocol="{SPNEGO_ENCRYPTED}";'
                f'boundary="{BOUNDARY}"'
            },
        )

    async def _handle_plain(self, request: web.Request, body: bytes) -> web.Response:
        if not self.ntlm and not self._authorised(request):
            self.exchanges.append(Exchange("401", request.headers.get("Authorization")))
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="WSMAN"'})
        envelope = ET.fromstring(body)
        header = envelope.find("s:Header", NS)
        assert header is not None
        action = _find_text(header, "wsa:Action")
        message_id = _find_text(header, "wsa:MessageID")
        self.exchanges.append(
            Exchange(action.rsplit("/", 1)[-1], request.headers.get("Authorization"), request.host)
        )
        async with self._exchanged:
            self._exchanged.notify_all()
        assert _find_text(header, "wsman:ResourceURI") == CMD_URI
        selector = header.find("wsman:SelectorSet/wsman:Selector[@Name='ShellId']", NS)
        shell_id = selector.text if selector is not None else None
        payload = envelope.find("s:Body", NS)
        assert payload is not None
        if action == f"{TRANSFER}/Create":
            return self._create(message_id)
        if shell_id is None or shell_id not in self.shells:
            return _fault(
                message_id,
                "w:InvalidSelectors",
                NO_SUCH_SHELL_CODE,
                "The request for the Windows Remote Shell with ShellId"
                f" {shell_id} failed because the shell was not found on the server.",
            )
        shell = self.shells[shell_id]
        if action == f"{SHELL}/Command":
            return self._command(message_id, shell, payload)
        if action == f"{SHELL}/Send":
            return self._send(message_id, shell, payload)
        if action == f"{SHELL}/Receive":
            if self.receive_delay:
                await self._delay()
            if self.fault_reason is not None:
                return _fault(message_id, "w:InternalError", 5, self.fault_reason)
            if self.receive_trickle or self.receive_size:
                return await self._hostile_answer(request)
            return self._receive(message_id, shell, payload)
        if action == f"{SHELL}/Signal":
            stream = payload.find("rsp:Signal", NS)
            assert stream is not None
            shell.commands.pop(stream.attrib["CommandId"], None)
            return _response(f"{SHELL}/SignalResponse", message_id, "<rsp:SignalResponse/>")
        if action == f"{TRANSFER}/Delete":
            del self.shells[shell_id]
            self.shells_deleted += 1
            return _response(f"{TRANSFER}/DeleteResponse", message_id, "")
        raise AssertionError(f"unexpected action {action}")

    async def _hostile_answer(self, request: web.Request) -> web.Response:
        """Headers promising ``receive_size`` bytes (100,000 when trickling), then
        the bytes: a byte every tenth of a second, or a mebibyte at a time,
        until they are all out, the client goes or the listener stops."""
        size = self.receive_size or 100_000
        answer = web.StreamResponse(
            headers={
                "Content-Type": "application/soap+xml;charset=UTF-8",
                "Content-Length": str(size),
            }
        )
        if self.receive_closing:
            answer.force_close()
        await answer.prepare(request)
        self.hostile_answer_started.set()
        step = 1 if self.receive_trickle else 1024 * 1024
        with contextlib.suppress(ConnectionError):
            while self.hostile_bytes_sent < size and not self._closing.is_set():
                # Once the client went, writes are dropped without an error.
                if _gone(request):
                    break
                piece = min(step, size - self.hostile_bytes_sent)
                await answer.write(b" " * piece)
                self.hostile_bytes_sent += piece
                await asyncio.sleep(0)  # a connection lost is noticed between writes
                if self.receive_trickle:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.1):
                            await self._closing.wait()
        # Never a complete answer: the client must have given up before this.
        return cast(web.Response, answer)

    def _create(self, message_id: str) -> web.Response:
        if len(self.shells) >= self.max_shells:
            return _fault(
                message_id,
                "w:InternalError",
                QUOTA_CODE,
                "The WS-Management service cannot process the request. This user is allowed"
                f" a maximum number of {self.max_shells} concurrent shells, which has been"
                " exceeded. Close existing shells or raise the quota for this user.",
            )
        shell_id = str(uuid.uuid4()).upper()
        self.shells[shell_id] = Shell()
        self.shells_created += 1
        body = (
            f"<x:ResourceCreated><a:Address>http://127.0.0.1/wsman</a:Address>"
            f"<a:ReferenceParameters><w:ResourceURI>{CMD_URI}</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector>'
            f"</w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>"
            f"<rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId>"
            f"<rsp:ResourceUri>{CMD_URI}</rsp:ResourceUri><rsp:Owner>monitor</rsp:Owner>"
            f"<rsp:ClientIP>127.0.0.1</rsp:ClientIP><rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"
            f"<rsp:InputStreams>stdin</rsp:InputStreams>"
            f"<rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>"
        )
        return _response(f"{TRANSFER}/CreateResponse", message_id, body)

    def _command(self, message_id: str, shell: Shell, payload: ET.Element) -> web.Response:
        line = payload.find("rsp:CommandLine", NS)
        assert line is not None
        executable = _find_text(line, "rsp:Command")
        arguments = [a.text or "" for a in line.findall("rsp:Arguments", NS)]
        command_id = str(uuid.uuid4()).upper()
        shell.commands[command_id] = Command(executable, arguments)
        body = (
            f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId>"
            "</rsp:CommandResponse>"
        )
        return _response(f"{SHELL}/CommandResponse", message_id, body)

    def _send(self, message_id: str, shell: Shell, payload: ET.Element) -> web.Response:
        stream = payload.find("rsp:Send/rsp:Stream", NS)
        assert stream is not None
        assert stream.attrib["Name"] == "stdin"
        command = shell.commands[stream.attrib["CommandId"]]
        command.stdin += base64.b64decode(stream.text or "")
        command.stdin_done = stream.attrib.get("End", "").lower() == "true"
        return _response(f"{SHELL}/SendResponse", message_id, "<rsp:SendResponse/>")

    def _receive(self, message_id: str, shell: Shell, payload: ET.Element) -> web.Response:
        desired = payload.find("rsp:Receive/rsp:DesiredStream", NS)
        assert desired is not None
        command_id = desired.attrib["CommandId"]
        command = shell.commands.get(command_id)
        if command is None:
            return _fault(
                message_id,
                "w:InvalidSelectors",
                NO_SUCH_SHELL_CODE,
                "The Windows Remote Shell received a request to perform an operation on a"
                " command identifier that does not exist.",
            )
        if command.pending is None:
            assert command.stdin_done, "Receive before the script was sent"
            stdout = self.host.answer(command.stdin.decode("ascii"))
            if self.mangle is not None:
                stdout = self.mangle(stdout)
            size = max(1, -(-len(stdout) // self.chunks))
            command.pending = [stdout[i : i + size] for i in range(0, len(stdout), size)]
        # Windows hands out what the process wrote so far: here, one chunk per Receive.
        chunk = command.pending.pop(0) if command.pending else b""
        done = not command.pending
        streams = f'<rsp:Stream Name="stdout" CommandId="{command_id}">{_b64(chunk)}</rsp:Stream>'
        if done:
            errors = _b64(self.stderr)
            streams += (
                f'<rsp:Stream Name="stdout" CommandId="{command_id}" End="true"></rsp:Stream>'
                f'<rsp:Stream Name="stderr" CommandId="{command_id}">{errors}</rsp:Stream>'
                f'<rsp:Stream Name="stderr" CommandId="{command_id}" End="true"></rsp:Stream>'
                f'<rsp:CommandState CommandId="{command_id}" State="{SHELL}/CommandState/Done">'
                "<rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState>"
            )
        else:
            streams += (
                f'<rsp:CommandState CommandId="{command_id}"'
                f' State="{SHELL}/CommandState/Running"></rsp:CommandState>'
            )
        body = f"<rsp:ReceiveResponse>{streams}</rsp:ReceiveResponse>"
        return _response(f"{SHELL}/ReceiveResponse", message_id, body)


def _gone(request: web.Request) -> bool:
    """Whether the client of ``request`` closed the connection.

    Over TLS, writes after that are dropped without an error, and the TLS
    transport does not say it is closing: the socket under it is closed.
    """
    transport = request.transport
    raw = transport.get_extra_info("socket") if transport is not None else None
    return raw is None or raw.fileno() < 0


def _find_text(element: ET.Element, path: str) -> str:
    found = element.find(path, NS)
    assert found is not None, path
    assert found.text is not None, path
    return found.text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_ENVELOPE = (
    '<s:Envelope xml:lang="en-US" xmlns:s="{s}" xmlns:a="{wsa}" xmlns:x="{transfer}"'
    ' xmlns:w="{wsman}" xmlns:rsp="{rsp}"'
    ' xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
    "<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{own_id}</a:MessageID>"
    "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
    "<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
)


def _envelope(action: str, relates_to: str, body: str) -> str:
    return _ENVELOPE.format(
        s=NS["s"],
        wsa=NS["wsa"],
        transfer=TRANSFER,
        wsman=NS["wsman"],
        rsp=NS["rsp"],
        action=action,
        own_id=str(uuid.uuid4()).upper(),
        relates_to=relates_to,
        body=body,
    )


def _response(action: str, relates_to: str, body: str) -> web.Response:
    return web.Response(
        body=_envelope(action, relates_to, body).encode("utf-8"),
        content_type="application/soap+xml",
        charset="UTF-8",
    )


def _fault(relates_to: str, subcode: str, code: int, message: str) -> web.Response:
    body = (
        "<s:Fault><s:Code><s:Value>s:Sender</s:Value>"
        f"<s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{message}</s:Text></s:Reason>'
        '<s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"'
        f' Code="{code}" Machine="127.0.0.1"><f:Message>{message}</f:Message>'
        "</f:WSManFault></s:Detail></s:Fault>"
    )
    text = _envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to, body)
    return web.Response(
        status=500, body=text.encode("utf-8"), content_type="application/soap+xml", charset="UTF-8"
    )


def _unwrap(context: spnego.ContextProxy, body: bytes) -> bytes:
    """The SOAP message inside a WinRM ``multipart/encrypted`` body (one part)."""
    parts = [p for p in re.split(rb"--\s*" + re.escape(BOUNDARY.encode()) + rb"\r\n", body) if p]
    description, payload = parts[0], parts[1]
    length = int(description.split(b"Length=")[1].strip())
    payload = payload.removeprefix(b"\tContent-Type: application/octet-stream\r\n")
    payload = payload.removesuffix(f"--{BOUNDARY}--\r\n".encode())
    header_length = struct.unpack("<i", payload[:4])[0]
    header = payload[4 : 4 + header_length]
    plain = context.unwrap_winrm(header, payload[4 + header_length :])
    assert len(plain) == length, (len(plain), length)
    return plain


def _wrap(context: spnego.ContextProxy, message: bytes) -> bytes:
    header, data, padding = context.wrap_winrm(message)
    description = (
        f"--{BOUNDARY}\r\n\tContent-Type: {SPNEGO_ENCRYPTED}\r\n"
        "\tOriginalContent: type=application/soap+xml;charset=UTF-8;"
        f"Length={len(message) + padding}"
        f"\r\n--{BOUNDARY}\r\n\tContent-Type: application/octet-stream\r\n"
    )
    return (
        description.encode()
        + struct.pack("<i", len(header))
        + header
        + data
        + f"--{BOUNDARY}--\r\n".encode()
    )


async def _serve(arguments: argparse.Namespace) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(arguments.cert, arguments.key)
    runners = []
    ports = []
    for _ in range(arguments.hosts):
        server = WsmanServer(username=arguments.username, password=arguments.password)
        server.receive_delay = arguments.receive_delay
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        runners.append(runner)
        ports.append(runner.addresses[0][1])
    print(json.dumps(ports), flush=True)
    # Until the parent closes our stdin (or dies): no orphan outlives its test.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for runner in runners:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=1)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--receive-delay", type=float, default=0.0)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
