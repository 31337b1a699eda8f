"""Walking several subtrees at once with GETBULK: the client's hot path.

Roots (typically the columns of a table) are walked in lock-step: each GetBulk
(non-repeaters 0) carries one varbind per unfinished root, from that root's
last OID, so a table of R rows and C columns costs about R / max-repetitions
round trips, not C times that. A root is finished when a returned OID leaves
its subtree or is endOfMibView; what a reply holds past that point is ignored.
SNMPv1 walks with GetNext, one row per request.

Only one request is in flight at a time, but the next one is sent as soon as a
reply shows where each root continues, before the reply's values are decoded:
the agent builds its next answer while we decode. OIDs stay BER bytes until a
varbind is kept (see ``ber``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from exporter.clients.snmp import ber
from exporter.clients.snmp.errors import SnmpProtocolError
from exporter.clients.snmp.pdu import (
    NO_SUCH_NAME,
    TOO_BIG,
    Reply,
    check_status,
    convert,
    encode_root,
)
from exporter.clients.snmp.speedups import compiled
from exporter.clients.snmp.values import KINDS, UNSIGNED_TAGS, Oid, VarBind, format_oid

# Sends one request of a walk from these (encoded) OIDs: a GetBulk, or for SNMPv1 a GetNext.
WalkRequest = Callable[[list[bytes]], Awaitable[Reply]]


async def walk_columns(
    roots: Sequence[Oid], send: WalkRequest, *, getnext: bool, max_oids: int, where: str
) -> dict[Oid, list[VarBind]]:
    """Every OID under each root, in OID order, keyed by root (all roots are keys).

    Raises ``SnmpProtocolError`` if the agent returns an OID that is not after
    the previous one of that root, or more than ``max_oids`` OIDs in all.
    """
    roots = list(dict.fromkeys(roots))
    results: dict[Oid, list[VarBind]] = {root: [] for root in roots}
    prefixes = [encode_root(root) for root in roots]
    last = list(prefixes)  # the OID each root's walk continues from
    last_oid: list[Oid] = list(roots)  # the same, decoded
    lists = [results[root] for root in roots]
    active = list(range(len(roots)))
    total = 0
    # SNMPv1 has no GetBulk, and an old agent may find even one varbind per
    # root too big: then fewer roots go in each GetNext.
    getnext_width = len(roots)
    in_flight: asyncio.Task[Reply] | None = None

    def next_batch() -> list[int]:
        return active[:getnext_width] if getnext else list(active)

    async def request(batch: list[int]) -> Reply:
        return await send([last[i] for i in batch])

    try:
        batch = next_batch()
        reply = await request(batch) if batch else None
        while reply is not None:
            status, index = reply.error_status, reply.error_index
            if getnext and status == NO_SUCH_NAME and 1 <= index <= len(batch):
                # SNMPv1's end of MIB: that root is done; ask again for the others.
                active.remove(batch[index - 1])
                batch = next_batch()
                reply = await request(batch) if batch else None
                continue
            if getnext and status == TOO_BIG and len(batch) > 1:
                getnext_width = len(batch) // 2
                batch = next_batch()
                reply = await request(batch)
                continue
            check_status(reply, [last[i] for i in batch], where)
            varbinds = reply.varbinds
            if not varbinds:
                raise SnmpProtocolError(f"{where} answered a walk with no varbinds")
            # Row-major: varbind k continues the walk of root batch[k % width], so
            # varbinds[j::width] is root j's share. First only find where each
            # share leaves its subtree, which is all the next request needs.
            width = len(batch)
            shares = []
            ended = set()
            for j, i in enumerate(batch):
                share = varbinds[j::width]
                kept = _count_in_subtree(share, prefixes[i])
                if kept < len(share):
                    ended.add(i)
                if kept:
                    last[i] = share[kept - 1][0]
                    shares.append((i, share, kept))
                    total += kept
            if total > max_oids:
                raise SnmpProtocolError(
                    f"walk of {where} stopped after {max_oids} OIDs (the agent keeps"
                    " returning OIDs; raise max_oids if the tables are really this big)"
                )
            if ended:
                active = [i for i in active if i not in ended]
            batch = next_batch()
            if batch:
                in_flight = asyncio.ensure_future(request(batch))
                await asyncio.sleep(0)  # let it send before the decoding below
            _take(shares, roots, prefixes, last_oid, lists, where)
            if in_flight is None:
                break
            reply, in_flight = await in_flight, None
    finally:
        if in_flight is not None:
            await _discard(in_flight)
    return results


def _count_in_subtree(share: list[ber.RawVarBind], prefix: bytes) -> int:
    """How many leading varbinds of ``share`` are values inside ``prefix``'s subtree.

    An OID equal to the root itself counts as inside, so that ``_take`` reports
    it as not increasing.
    """
    if compiled is not None:
        counted = compiled.count_in_subtree(share, prefix)
        if counted >= 0:
            return counted
    for k, (oid, tag, _) in enumerate(share):
        # Exceptions (endOfMibView, ...) have tags 0x80 and up.
        if tag >= 0x80 or not oid.startswith(prefix):
            return k
    return len(share)


async def _discard(task: asyncio.Task[Reply]) -> None:
    """Cancel a request nobody needs any more and wait for it to let go of its id."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: asyncio must not log it as forgotten


# Every OID a walk has decoded, by its encoding, shared by all sessions: the same
# columns and indexes come back from every device (ifInOctets.1 .. .48 on each
# switch), so a fleet holds one tuple per distinct OID instead of one per device
# and scrape, and a walk decodes an OID only the first time any device returns it.
# Cleared when it grows past OID_TABLE_LIMIT entries (about 200 bytes each, so at
# most about 100 MB): a fleet whose devices share few OIDs gains nothing from it.
OID_TABLE_LIMIT = 500_000
_oid_table: dict[bytes, Oid] = {}
_KINDS = dict(KINDS)  # a plain dict: MappingProxyType.get is slower in the loop


def _take(
    shares: list[tuple[int, list[ber.RawVarBind], int]],
    roots: list[Oid],
    prefixes: list[bytes],
    last_oid: list[Oid],
    lists: list[list[VarBind]],
    where: str,
) -> None:
    """Decode each root's share of a reply into its list, and move its ``last_oid`` on.

    The walk's inner loop, once per reply (not per root: an agent that caps its
    replies at a few rows sends a few varbinds per root). ``shares`` holds
    (root position, its varbinds, how many of them are in its subtree).
    """
    kinds, unsigned, integer, octets = _KINDS, UNSIGNED_TAGS, ber.INTEGER, ber.OCTET_STRING
    table = _oid_table
    if len(table) > OID_TABLE_LIMIT:
        table.clear()
    from_bytes = int.from_bytes  # looked up once, not per value
    for i, share, count in shares:
        root, out, previous = roots[i], lists[i], last_oid[i]
        append, cut = out.append, len(prefixes[i])
        start = 0
        if compiled is not None:
            # The compiled loop takes what it can; the loop below goes on from
            # the first varbind it left (an error, an uncommon type), if any.
            previous, start = compiled.take_share(
                share, count, root, cut, previous, table, kinds, out, ber.decode_subids, VarBind
            )
        # Iterating the share (whole, as it nearly always is) rather than indexing it:
        # about a tenth fewer instructions in this loop (callgrind).
        whole = start == 0 and count == len(share)
        for encoded, tag, raw in share if whole else share[start:count]:
            oid = table.get(encoded)
            if oid is None:
                try:
                    oid = table[encoded] = root + ber.decode_subids(encoded[cut:])
                except ValueError as exc:
                    raise SnmpProtocolError(
                        f"{where} returned a malformed OID ({exc}) in the walk of"
                        f" {format_oid(root)}"
                    ) from None
            if oid <= previous:
                raise SnmpProtocolError(
                    f"agent returned non-increasing OID {format_oid(oid)}"
                    f" after {format_oid(previous)} ({where})"
                )
            previous = oid
            kind = kinds.get(tag)
            if kind is None:
                raise SnmpProtocolError(
                    f"{where} returned unknown type 0x{tag:02x} for {format_oid(oid)}"
                )
            # The common types inline; the rest through convert(), which also
            # refuses an integer past 64 bits (one over 8 octets may be one).
            if tag == octets:
                value: int | bytes | Oid | None = raw
            elif len(raw) > 8:
                value = convert(tag, raw, oid, where)
            elif tag in unsigned:
                value = from_bytes(raw, "big")
            elif tag == integer:
                value = from_bytes(raw, "big", signed=True)
            else:
                value = convert(tag, raw, oid, where)
            append(VarBind(oid, kind, value))
        last_oid[i] = previous
