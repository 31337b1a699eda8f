"""Reading an agent's reply: the decoded PDU, its error-status, and its values.

Every error names the agent (``where``, as ``host:port``) and never a secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.clients.snmp import ber
from exporter.clients.snmp.errors import SnmpAuthError, SnmpProtocolError, SnmpTooBig
from exporter.clients.snmp.values import Oid, decode_value, format_oid

ERROR_STATUS_NAMES = (
    "noError",
    "tooBig",
    "noSuchName",
    "badValue",
    "readOnly",
    "genErr",
    "noAccess",
    "wrongType",
    "wrongLength",
    "wrongEncoding",
    "wrongValue",
    "noCreation",
    "inconsistentValue",
    "resourceUnavailable",
    "commitFailed",
    "undoFailed",
    "authorizationError",
    "notWritable",
    "inconsistentName",
)
TOO_BIG = 1
NO_SUCH_NAME = 2
AUTHORIZATION_ERROR = 16


@dataclass(slots=True)
class Reply:
    """A decoded answer, matched to a pending request."""

    tag: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[ber.RawVarBind]
    # SNMPv3 only: what the agent said about itself, and whether it signed the reply.
    authenticated: bool = False
    engine_id: bytes = b""
    boots: int = 0
    engine_time: int = 0


def encode_root(oid: Oid) -> bytes:
    """``oid`` as BER contents octets; a ``ValueError`` names an OID that cannot be sent."""
    try:
        return ber.encode_oid(oid)
    except ValueError as exc:
        raise ValueError(f"cannot request {format_oid(oid)}: {exc}") from None


def convert(tag: int, raw: bytes, oid: Oid, where: str) -> int | bytes | Oid | None:
    """The value of ``oid`` as Python; a malformed one is the agent's protocol error."""
    try:
        return decode_value(tag, raw)
    except (ValueError, IndexError) as exc:
        raise SnmpProtocolError(
            f"{where} returned a malformed value for {format_oid(oid)}: {exc}"
        ) from None


def oid_text(raw: bytes) -> str:
    """An encoded OID for a message, even a malformed one."""
    try:
        return format_oid(ber.decode_oid(raw))
    except (ValueError, IndexError):
        return f"a malformed OID ({raw.hex()})"


def check_status(reply: Reply, oids: list[bytes], where: str) -> None:
    """Raise the error a non-zero error-status stands for, naming the OID it points at."""
    status = reply.error_status
    if not status:
        return
    name = ERROR_STATUS_NAMES[status] if 0 <= status < len(ERROR_STATUS_NAMES) else str(status)
    if status == TOO_BIG:
        raise SnmpTooBig(f"{where} answered tooBig")
    at = ""
    if 1 <= reply.error_index <= len(oids):
        at = f" at {oid_text(oids[reply.error_index - 1])}"
    if status == AUTHORIZATION_ERROR:
        raise SnmpAuthError(
            f"{where} answered authorizationError{at}: its access control"
            " does not let these credentials read that (for v3, check security_level)"
        )
    raise SnmpProtocolError(f"{where} answered error-status {name}{at}")
