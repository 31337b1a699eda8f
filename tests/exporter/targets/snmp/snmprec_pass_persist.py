"""Serve a ``.snmprec`` recording through snmpd's ``pass_persist`` protocol.

net-snmp has no LLDP-MIB or CISCO-CDP-MIB of its own; ``pass_persist`` is its
stock way to add a subtree from a program, so the real agent can answer the
neighbour tables (GET, GETNEXT and so GETBULK) from the same recordings snmpsim
serves. Run by snmpd as ``python snmprec_pass_persist.py RECORDING PREFIX``;
only rows under ``PREFIX`` are served.
"""

from __future__ import annotations

import bisect
import sys
from pathlib import Path

# snmprec tags -> pass_persist types; octet strings go as hex ("octet").
TYPES = {2: "integer", 4: "octet", 6: "objectid", 66: "gauge", 67: "timeticks"}

Oid = tuple[int, ...]


def read_snmprec(path: Path) -> dict[Oid, tuple[int, int | bytes]]:
    """A recording's rows: OID -> (BER tag, int or octets), in the file's order."""
    rows: dict[Oid, tuple[int, int | bytes]] = {}
    for line in path.read_text(encoding="ascii").splitlines():
        oid_text, tag, value = line.split("|", 2)
        oid = tuple(int(part) for part in oid_text.split("."))
        if tag == "4x":
            rows[oid] = (4, bytes.fromhex(value))
        elif tag == "4":
            rows[oid] = (4, value.encode())
        else:
            rows[oid] = (int(tag), int(value))
    return rows


def load(path: Path, prefix: Oid) -> dict[Oid, tuple[str, str]]:
    """The rows under ``prefix`` as pass_persist (type, value) lines."""
    rows: dict[Oid, tuple[str, str]] = {}
    for oid, (tag, value) in read_snmprec(path).items():
        if oid[: len(prefix)] != prefix:
            continue
        if isinstance(value, bytes):
            rows[oid] = (TYPES[tag], " ".join(f"{b:02x}" for b in value))
        else:
            rows[oid] = (TYPES[tag], str(value))
    return rows


def main() -> None:
    prefix = tuple(int(part) for part in sys.argv[2].strip(".").split("."))
    rows = load(Path(sys.argv[1]), prefix)
    order = sorted(rows)
    for command in sys.stdin:
        command = command.strip()
        if command == "PING":
            print("PONG", flush=True)
            continue
        oid_text = sys.stdin.readline().strip()
        if command == "set":
            sys.stdin.readline()
            print("not-writable", flush=True)
            continue
        oid = tuple(int(part) for part in oid_text.strip(".").split(".") if part)
        if command == "get":
            found = oid if oid in rows else None
        else:  # getnext
            at = bisect.bisect_right(order, oid)
            found = order[at] if at < len(order) else None
        if found is None:
            print("NONE", flush=True)
            continue
        kind, value = rows[found]
        print("." + ".".join(map(str, found)), kind, value, sep="\n", flush=True)


if __name__ == "__main__":
    main()
