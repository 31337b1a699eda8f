"""Interface names as vendors write them, reduced to one key for matching.

One port goes by several names: CDP and ``ifDescr`` say ``GigabitEthernet1/0/24``,
LLDP and ``ifName`` say ``Gi1/0/24``; NX-OS says ``Ethernet1/49`` in CDP and
``Eth1/49`` in ``ifName``, Arista ``Et1``. :func:`port_key` maps all the forms of
one port to the same key (``gi1/0/24``, ``et1/49``), so both ends of a cable
reported in different forms make one link, and an alert's ``ifName``,
``ifDescr`` or ``ifAlias`` finds that link whichever form it carries. The key is
for matching only; what people read stays the name as the device reported it.

A name is a type word and what follows from its first digit (``Port-channel 12``
is ``po12``: spaces between them do not count, letter case never does). Type
words not in :data:`PORT_TYPES` are kept as written (``ge-0/0/1``, ``xe-0/0/7``:
Junos has one form only), and so is a name that is no interface name at all.
"""

from __future__ import annotations

import functools
import re

# Each port type: the short key, and every spelling of its type word (lower case)
# seen in ifName, ifDescr, CDP device ports and LLDP port ids.
PORT_TYPES: dict[str, tuple[str, ...]] = {
    "fa": ("fastethernet", "fa"),
    "gi": ("gigabitethernet", "gige", "gi"),
    "tw": ("twogigabitethernet", "tw"),
    "fi": ("fivegigabitethernet", "fi"),
    "te": ("tengigabitethernet", "tengige", "te"),
    "twe": ("twentyfivegigabitethernet", "twentyfivegige", "twe"),
    "fo": ("fortygigabitethernet", "fortygige", "fo"),
    "hu": ("hundredgigabitethernet", "hundredgige", "hu"),
    "fh": ("fourhundredgigabitethernet", "fourhundredgige", "fh"),
    "et": ("ethernet", "eth", "et"),
    "po": ("port-channel", "portchannel", "po"),
    "be": ("bundle-ether", "be"),
    "mgmt": ("management", "mgmteth", "mgmt", "ma"),
    "lo": ("loopback", "lo"),
    "vl": ("vlan", "vl"),
    "tu": ("tunnel", "tu"),
    "se": ("serial", "se"),
}
_KEY_OF_TYPE = {spelling: key for key, spellings in PORT_TYPES.items() for spelling in spellings}
# The type word, then the rest from the first digit (spaces between them dropped).
_NAME = re.compile(r"([a-z][a-z-]*?)\s*(\d.*)")


# IF-MIB's names are at most 255 characters: anything longer (an alert label
# from an untrusted sender) is no port name, and is neither parsed nor cached.
MAX_PORT_NAME = 255


def port_key(name: str) -> str:
    """The key all spellings of a port share: ``gi1/0/24`` for ``GigabitEthernet1/0/24``."""
    if len(name) > MAX_PORT_NAME:
        return " ".join(name.lower().split())
    return _port_key(name)


@functools.lru_cache(maxsize=65536)
def _port_key(name: str) -> str:
    text = " ".join(name.lower().split())
    found = _NAME.fullmatch(text)
    if found is None:
        return text
    kind, rest = found.groups()
    key = _KEY_OF_TYPE.get(kind)
    return text if key is None else key + rest.replace(" ", "")


def is_port_name(name: str) -> bool:
    """Whether ``name`` reads as a port of a known type (``Gi1/0/5``), not a description."""
    if len(name) > MAX_PORT_NAME:
        return False
    found = _NAME.fullmatch(" ".join(name.lower().split()))
    return found is not None and found.group(1) in _KEY_OF_TYPE
