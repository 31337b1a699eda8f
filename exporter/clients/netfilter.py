"""The local netfilter state: the nftables ruleset and connection tracking.

Three reads, each behind the ``NetfilterSource`` protocol so the collector can
be fed recorded output in tests:

- ``nft -j list ruleset``: rules with a ``counter`` statement, named counters
  (``nft add counter``) and base chains with their policy. Rules added through
  iptables' nf_tables backend (``iptables-nft``) are in the same ruleset.
  Reading it needs ``CAP_NET_ADMIN`` in the network namespace that is wanted.
- ``<procfs>/sys/net/netfilter/nf_conntrack_count`` and ``nf_conntrack_max``:
  connections tracked and the table's size.
- ``<procfs>/net/stat/nf_conntrack``: the kernel's per-CPU event counters (one
  hexadecimal row per CPU), summed over the CPUs.

The ruleset is parsed defensively: nft's JSON is trusted no more than any
other input, since a future nft may print shapes this code has not seen. The
top level must be right or the read fails; a single object of an unexpected
shape is skipped and counted in ``Ruleset.skipped``, so one odd rule does not
hide the rest.

Exceptions::

    ExporterError (exporter.errors)
     └── NetfilterError          a netfilter read failed; the message says why
          ├── NftError           nft is missing, not permitted, timed out or failed
          ├── RulesetFormatError nft's output is not the JSON ruleset expected
          └── ProcReadError      a /proc file is missing or not in the expected format
"""

from __future__ import annotations

import json
import os
import selectors
import shlex
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from exporter.errors import ExporterError

# Long enough for a ruleset of a hundred thousand rules on a slow host; a
# shorter scrape deadline only stops the scrape waiting, this stops nft itself.
NFT_TIMEOUT_SECONDS = 10.0
# nft prints about 400 bytes of JSON per rule: this admits some 150,000 rules.
NFT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024
# What nft may print on stderr that we keep for the error message.
_STDERR_KEPT_BYTES = 4096

# Verdicts and terminal statements that name what a rule does with a packet.
_PLAIN_ACTIONS = frozenset(
    {
        "accept",
        "drop",
        "reject",
        "continue",
        "return",
        "queue",
        "snat",
        "dnat",
        "masquerade",
        "redirect",
        "tproxy",
        "vmap",
        "notrack",
        "synproxy",
    }
)
_CHAIN_ACTIONS = frozenset({"jump", "goto"})

# Columns of /proc/net/stat/nf_conntrack renamed for readability; the rest keep
# the kernel's names. ``entries`` is the table's size (the same on every CPU
# row), not an event count: it is read from nf_conntrack_count instead.
_STAT_RENAMES = {"clashres": "clash_resolve", "chainlength": "chain_too_long"}
_STAT_NOT_EVENTS = frozenset({"entries"})


class NetfilterError(ExporterError):
    """A netfilter read failed; the message says which and why."""


class NftError(NetfilterError):
    """nft could not be run, was not permitted, timed out or exited with an error."""


class RulesetFormatError(NetfilterError):
    """nft's output is not the JSON ruleset this client reads."""


class ProcReadError(NetfilterError):
    """A procfs file is missing or not in the format the kernel writes."""


@dataclass(frozen=True, slots=True)
class CountedRule:
    """A rule with an anonymous ``counter`` statement, and what that counter holds.

    ``action`` is the rule's verdict (``accept``, ``drop``, ``jump logs``...),
    empty when the rule has none and packets go on to the next rule. A named
    counter (``nft add counter``) is read as one too: no chain, no action, its
    name as the comment.
    """

    family: str
    table: str
    chain: str
    handle: int
    packets: int
    bytes: int
    comment: str = ""
    action: str = ""


@dataclass(frozen=True, slots=True)
class BaseChain:
    """A chain attached to a netfilter hook, with its default policy."""

    family: str
    table: str
    name: str
    hook: str
    policy: str


@dataclass(frozen=True, slots=True)
class Ruleset:
    """What the collector needs from ``nft -j list ruleset``, in nft's listing order.

    ``skipped`` counts objects of an unexpected shape that were left out;
    ``first_skip`` says what was wrong with the first one.
    """

    rules: tuple[CountedRule, ...] = ()
    counters: tuple[CountedRule, ...] = ()  # the named counters
    chains: tuple[BaseChain, ...] = ()
    skipped: int = 0
    first_skip: str = ""


@dataclass(frozen=True, slots=True)
class ConntrackUsage:
    """Connections tracked now, and the most the table holds."""

    count: int
    limit: int


class NetfilterSource(Protocol):
    """Reads the local netfilter state; each method raises ``NetfilterError`` on failure."""

    def hostname(self) -> str:
        """The host's name, for ``scout_firewall_info``."""
        ...

    def ruleset(self) -> Ruleset:
        """The nftables ruleset's counters and base chains."""
        ...

    def conntrack_usage(self) -> ConntrackUsage | None:
        """Connections tracked and the limit; ``None`` if connection tracking is not loaded."""
        ...

    def conntrack_events(self) -> Mapping[str, int] | None:
        """Event counters summed over CPUs; ``None`` if connection tracking is not loaded."""
        ...


# --- nft -j list ruleset ------------------------------------------------------------


class _Skip(Exception):
    """One ruleset object has an unexpected shape; it is left out."""


def _text(obj: Mapping[str, Any], key: str, *, optional: bool = False) -> str:
    value = obj.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise _Skip(f"{key!r} is {type(value).__name__}, not a string")
    try:
        # JSON may escape a lone surrogate (\ud800): valid JSON, but no UTF-8
        # exposition can carry it, and it would fail the whole of /metrics.
        value.encode()
    except UnicodeEncodeError:
        raise _Skip(f"{key!r} is not valid Unicode") from None
    return value


def _count(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    # bool is an int in Python, and JSON's true is no handle or packet count.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Skip(f"{key!r} is {value!r}, not a count")
    return value


def _action(statement: Mapping[str, Any]) -> str | None:
    """The action a statement takes, or ``None`` if it is a match or other statement."""
    for key, value in statement.items():
        if key in _PLAIN_ACTIONS:
            return key
        if key in _CHAIN_ACTIONS:
            target = value.get("target") if isinstance(value, dict) else None
            return f"{key} {target}" if isinstance(target, str) else key
    return None


def _counted(
    obj: Mapping[str, Any], counter: Mapping[str, Any], chain: str, comment: str, action: str = ""
) -> CountedRule:
    """A counted rule or named counter, from its object and its counter's numbers."""
    return CountedRule(
        family=_text(obj, "family"),
        table=_text(obj, "table"),
        chain=chain,
        handle=_count(obj, "handle"),
        packets=_count(counter, "packets"),
        bytes=_count(counter, "bytes"),
        comment=comment,
        action=action,
    )


def _counted_rule(rule: Mapping[str, Any]) -> CountedRule | None:
    statements = rule.get("expr")
    if not isinstance(statements, list):
        raise _Skip("'expr' is not a list")
    counter: Mapping[str, Any] | None = None
    action = ""
    for statement in statements:
        if not isinstance(statement, dict):
            raise _Skip("a statement is not an object")
        found = statement.get("counter")
        # A string is a reference to a named counter: its numbers are the
        # counter object's, exported once as such, not once per rule using it.
        if counter is None and isinstance(found, dict):
            counter = found
        verdict = _action(statement)
        if verdict is not None:
            action = verdict
    if counter is None:
        return None
    comment = _text(rule, "comment", optional=True)
    return _counted(rule, counter, _text(rule, "chain"), comment, action)


def _named_counter(counter: Mapping[str, Any]) -> CountedRule:
    return _counted(counter, counter, "", _text(counter, "name"))


def _base_chain(chain: Mapping[str, Any]) -> BaseChain | None:
    if "hook" not in chain:
        return None  # a regular chain, reached by jump or goto: no policy of its own
    return BaseChain(
        family=_text(chain, "family"),
        table=_text(chain, "table"),
        name=_text(chain, "name"),
        hook=_text(chain, "hook"),
        policy=_text(chain, "policy", optional=True) or "accept",
    )


def parse_ruleset(output: bytes | str) -> Ruleset:
    """The counters and base chains in ``nft -j list ruleset`` output.

    Raises ``RulesetFormatError`` if the output is not JSON or not an object
    with an ``nftables`` list; objects of an unexpected shape inside it are
    skipped and counted.
    """
    try:
        document = json.loads(output)
    except RecursionError:
        raise RulesetFormatError("nft's JSON output is nested too deeply to read") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer too long to convert
        raise RulesetFormatError(f"nft's output is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("nftables"), list):
        raise RulesetFormatError('nft\'s output is not a JSON object with an "nftables" list')
    rules: list[CountedRule] = []
    counters: list[CountedRule] = []
    chains: list[BaseChain] = []
    skipped, first_skip = 0, ""
    for item in document["nftables"]:
        try:
            if not isinstance(item, dict):
                raise _Skip(f"an item is {type(item).__name__}, not an object")
            if isinstance(rule := item.get("rule"), dict):
                if (counted := _counted_rule(rule)) is not None:
                    rules.append(counted)
            elif isinstance(counter := item.get("counter"), dict):
                counters.append(_named_counter(counter))
            elif isinstance(chain := item.get("chain"), dict):
                if (base := _base_chain(chain)) is not None:
                    chains.append(base)
            elif any(key in item for key in ("rule", "counter", "chain")):
                raise _Skip(f"{next(iter(item))!r} is not an object")
        except _Skip as exc:
            skipped += 1
            first_skip = first_skip or str(exc)
    return Ruleset(tuple(rules), tuple(counters), tuple(chains), skipped, first_skip)


@dataclass(slots=True)
class _Output:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)


def _run_bounded(argv: Sequence[str], timeout: float, max_bytes: int) -> tuple[int, _Output]:
    """Run ``argv``; its exit status and output, or ``NftError`` past the time or size bound.

    ``subprocess.run`` would hold any amount of output in memory; this stops
    reading (and kills the process) once stdout passes ``max_bytes``.
    """
    output = _Output()
    deadline = time.monotonic() + timeout
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ, output.stdout)
            selector.register(process.stderr, selectors.EVENT_READ, output.stderr)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    process.kill()
                    raise NftError(f"{argv[0]} did not finish within {timeout:g}s")
                for key, _ in selector.select(remaining):
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    buffer: bytearray = key.data
                    if buffer is output.stderr:
                        buffer += chunk[: max(0, _STDERR_KEPT_BYTES - len(buffer))]
                        continue
                    buffer += chunk
                    if len(buffer) > max_bytes:
                        process.kill()
                        raise NftError(
                            f"{argv[0]} printed more than {max_bytes} bytes: the ruleset is "
                            "too large to read on every scrape"
                        )
        try:
            returncode = process.wait(max(0.0, deadline - time.monotonic()) + 1.0)
        except subprocess.TimeoutExpired:
            # Killed here: leaving the block waits for the process without a bound.
            process.kill()
            raise NftError(f"{argv[0]} did not exit within {timeout:g}s") from None
    return returncode, output


def read_ruleset(
    nft_command: str,
    *,
    timeout: float = NFT_TIMEOUT_SECONDS,
    max_bytes: int = NFT_MAX_OUTPUT_BYTES,
) -> Ruleset:
    """Run ``<nft_command> -j list ruleset`` and parse what it prints.

    ``nft_command`` is split like a shell word list, so ``sudo -n nft`` works.
    """
    try:
        words = shlex.split(nft_command)
    except ValueError as exc:
        raise NftError(f"collectors.netfilter.nft_command cannot be split: {exc}") from None
    if not words:
        raise NftError("collectors.netfilter.nft_command is empty")
    argv = [*words, "-j", "list", "ruleset"]
    try:
        returncode, output = _run_bounded(argv, timeout, max_bytes)
    except FileNotFoundError:
        raise NftError(
            f"{argv[0]} not found: install nftables, or set collectors.netfilter.nft_command"
        ) from None
    except PermissionError:
        raise NftError(f"{argv[0]} cannot be run: permission denied") from None
    if returncode != 0:
        stderr = output.stderr.decode(errors="replace")
        detail = next(iter(stderr.strip().splitlines()), "no message")
        if "Operation not permitted" in stderr:
            raise NftError(
                f"{argv[0]} may not read the ruleset ({detail}): the exporter needs "
                "CAP_NET_ADMIN in the host's network namespace"
            )
        raise NftError(f"{argv[0]} exited with status {returncode}: {detail}")
    return parse_ruleset(bytes(output.stdout))


# --- /proc ---------------------------------------------------------------------------


def parse_conntrack_stat(text: str) -> dict[str, int]:
    """Event counters from ``/proc/net/stat/nf_conntrack``, summed over the CPU rows.

    The first line names the columns (they differ between kernels); each
    further line is one CPU's counters in hexadecimal.
    """
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ProcReadError("nf_conntrack statistics are empty")
    header, rows = lines[0], lines[1:]
    if not rows:
        raise ProcReadError("nf_conntrack statistics have a header but no CPU rows")
    totals = dict.fromkeys(header, 0)
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ProcReadError(
                f"nf_conntrack statistics line {number} has {len(row)} columns, "
                f"the header {len(header)}"
            )
        try:
            for column, value in zip(header, row, strict=True):
                totals[column] += int(value, 16)
        except ValueError:
            raise ProcReadError(
                f"nf_conntrack statistics line {number} is not hexadecimal"
            ) from None
    return {
        _STAT_RENAMES.get(column, column): total
        for column, total in totals.items()
        if column not in _STAT_NOT_EVENTS
    }


def _read_number(path: Path) -> int:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProcReadError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return int(text.strip())
    except ValueError:
        raise ProcReadError(f"{path} does not hold a number: {text[:40]!r}") from None


class SystemNetfilterSource:
    """Reads this host's netfilter state with ``nft`` and from procfs.

    Every read sees the network namespace of the exporter's process: run it
    with the host network (``--net=host``, ``hostNetwork: true``) to see the
    host's firewall.
    """

    def __init__(self, nft_command: str = "nft", procfs: Path = Path("/proc")) -> None:
        self._nft_command = nft_command
        self._procfs = procfs

    @property
    def _netfilter_sysctls(self) -> Path:
        return self._procfs / "sys" / "net" / "netfilter"

    def hostname(self) -> str:
        return socket.gethostname()

    def ruleset(self) -> Ruleset:
        return read_ruleset(self._nft_command)

    def _conntrack_loaded(self) -> bool:
        """Whether nf_conntrack is loaded; an error if procfs is not where configured."""
        if (self._netfilter_sysctls / "nf_conntrack_count").exists():
            return True
        if not self._netfilter_sysctls.is_dir():
            # No netfilter sysctls at all: procfs is elsewhere, or netfilter is not built in.
            raise ProcReadError(
                f"{self._netfilter_sysctls} not found: is procfs mounted at {self._procfs}?"
            )
        return False

    def conntrack_usage(self) -> ConntrackUsage | None:
        if not self._conntrack_loaded():
            return None
        return ConntrackUsage(
            count=_read_number(self._netfilter_sysctls / "nf_conntrack_count"),
            limit=_read_number(self._netfilter_sysctls / "nf_conntrack_max"),
        )

    def conntrack_events(self) -> Mapping[str, int] | None:
        if not self._conntrack_loaded():
            return None
        path = self._procfs / "net" / "stat" / "nf_conntrack"
        try:
            text = path.read_text()
        except OSError as exc:
            raise ProcReadError(f"cannot read {path}: {exc.strerror or exc}") from None
        return parse_conntrack_stat(text)
