"""Reversible pseudonyms for what must not leave the sidecar: addresses, names, credentials.

Before an incident goes to a cloud model, every value that identifies the
network or grants access is replaced by a pseudonym of its kind, and the
answer is mapped back locally:

========  =====================================================  ==========
kind      what                                                   pseudonym
========  =====================================================  ==========
ip        IPv4 and IPv6 addresses (a port or prefix stays)       ``ip-1``
host      FQDNs, and the values of host-like labels (instance,   ``host-1``
          device, host, node, target, neighbor...) even when
          they are bare names like ``core-1``, wherever they
          appear
email     e-mail addresses                                       ``email-1``
mac       MAC addresses (colon, dash and Cisco dotted forms)     ``mac-1``
secret    URL user-info, bearer and basic tokens, the values     ``secret-1``
          of ``password=``, ``secret=``, ``token=``,
          ``apikey=``, ``community=``... and of labels named so
          (anywhere they appear), vendor key
          formats (``sk-``, ``AIza``, ``ghp_``, ``xoxb-``,
          ``AKIA``, JWTs), long mixed strings of token
          characters
pattern   the operator's ``llm.redact_patterns``                 ``pattern-1``
========  =====================================================  ==========

Secrets never come back: :meth:`Redactor.restore` turns ``secret-N`` into
``[redacted]``. Every other pseudonym comes back as the value it replaced.

Pseudonyms are numbered per kind in order of first appearance, so the same
incident shape gives the same prompt (and a cached answer of one incident reads
right when restored with another's pseudonyms). Text that already looks like a
pseudonym (``host-1`` as someone's host name) gets a pseudonym of its own, so
restoring can never confuse it with a real one.

What is not caught: a bare host name that no host-like label carries (``the
router in the basement``), and secrets in no recognisable form. The detectors
lean towards redacting too much: a version like ``1.2.3.4`` reads as an
address, a file name like ``alerts.yml`` does not read as a host.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ai_sidecar.sanitize import cap

Kind = Literal["ip", "host", "email", "mac", "secret", "pattern"]
KINDS: tuple[Kind, ...] = ("ip", "host", "email", "mac", "secret", "pattern")
# What a credential's pseudonym turns back into: the model never had it, and
# the answer must not have it either.
REDACTED = "[redacted]"
# Labels whose values name a machine or an endpoint, bare names included.
HOST_LABELS = frozenset(
    {
        "instance",
        "device",
        "host",
        "hostname",
        "node",
        "nodename",
        "target",
        "neighbor",
        "neighbour",
        "peer",
        "server",
        "firewall",
        "fqdn",
        # The flow series' exporter and the scout_exporter target label name
        # the exporter a scrape went through: ``scout-a:8781``.
        "exporter",
    }
)
# A label or annotation whose name says its value is a credential.
_SECRET_NAME = re.compile(
    r"password|passwd|passphrase|pwd|(?<![a-z])pass(?![a-z])|secret|token|api_?key|access_?key|private_?key"
    r"|credential|authorization|cookie|community",
    re.IGNORECASE,
)
# Two-label names ending in these are files, not hosts (``alerts.yml``).
_FILE_EXTENSIONS = frozenset(
    {"yml", "yaml", "json", "toml", "ini", "cfg", "conf", "txt", "log", "csv", "xml", "html"}
    | {"tmpl", "md", "rst", "py", "go", "sh", "js", "ts", "rs", "sql", "db", "sqlite", "pem"}
    | {"crt", "key", "pdf", "png", "svg", "gz", "zip", "tar", "service", "timer", "socket"}
)
# Only a window of each text is scanned: enough for every detector to see whole
# tokens around the part that is kept (see Redactor.redact).
SCAN_FACTOR = 2
_BEFORE = r"(?<![\w.-])"
# Ends a name: not followed by more of it; a full stop ending a sentence is fine.
_AFTER = r"(?![\w-]|\.\w)"
# Models capitalise a pseudonym that starts a sentence (``Host-1 lost...``).
_PSEUDONYM = re.compile(
    _BEFORE + r"(ip|host|email|mac|secret|pattern)-(\d+)" + _AFTER, re.IGNORECASE
)


def _always(_: str) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class _Detector:
    """One kind of sensitive value. A ``value`` group, when present, is the part replaced."""

    kind: Kind
    pattern: re.Pattern[str]
    accept: Callable[[str], bool] = _always

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        group = "value" if "value" in self.pattern.groupindex else 0
        for match in self.pattern.finditer(text):
            start, end = match.span(group)
            if start < end and self.accept(text[start:end]):
                yield start, end


def _is_ipv6(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def _is_host(value: str) -> bool:
    labels = value.split(".")
    return not (len(labels) == 2 and labels[1].lower() in _FILE_EXTENSIONS)


def _is_bearer_token(value: str) -> bool:
    # "Basic authentication" is prose; a token has a digit or is long.
    return any(ch.isdigit() for ch in value) or len(value) >= 20


def _is_random_token(value: str) -> bool:
    """A long string of token characters that reads like a key, not like words."""
    has_digit = any(ch.isdigit() for ch in value)
    has_lower = any(ch.islower() for ch in value)
    has_upper = any(ch.isupper() for ch in value)
    hex_only = all(ch in "0123456789abcdefABCDEF" for ch in value)
    return has_digit and ((has_lower and has_upper) or hex_only)


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# Zero-padded octets too (``010.001.002.003``): such an address still names a machine.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|0?\d?\d)"

# Credentials first, so no later detector takes part of one (the ``pw@host``
# of ``https://user:pw@host`` is not an e-mail address).
_CREDENTIALS = (
    _Detector(
        "secret",
        # Up to the authority's last @: a password may hold one (root:p@ss@db).
        re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://(?P<value>[^\s/?#\"'<>]+)@"),
    ),
    _Detector(
        "secret",
        re.compile(
            r"(?:pass(?:word|wd|phrase)?|pwd?|secret|token|api[_-]?key|access[_-]?key"
            r"|private[_-]?key|credentials?|auth|community|sig(?:nature)?)[\"']?\s*[:=]\s*[\"']?"
            # A quoted value is taken whole, spaces and all ("my secret phrase").
            r"(?P<value>(?<=[\"'])[^\"'\n]{1,200}(?=[\"'])|[^\s\"',;&<>]+)",
            re.IGNORECASE,
        ),
    ),
    _Detector(
        "secret",
        re.compile(r"\b(?:bearer|basic)\s+(?P<value>[A-Za-z0-9._~+/-]{8,}=*)", re.IGNORECASE),
        _is_bearer_token,
    ),
    _Detector(
        "secret",
        re.compile(
            r"(?<![\w-])(?:sk-[A-Za-z0-9_-]{16,}|AIza[0-9A-Za-z_-]{30,}"
            r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,}|glpat-[\w-]{20,}"
            r"|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|ya29\.[\w-]{20,}"
            r"|eyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]{10,})"
        ),
    ),
)
_ADDRESSES = (
    _Detector(
        "email",
        re.compile(r"(?<![\w.%+-])[\w.%+-]+@" + _LABEL + r"(?:\." + _LABEL + r")+" + _AFTER),
    ),
    _Detector(
        "mac",
        re.compile(
            r"(?<![\w:.-])(?:[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"
            r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})(?![\w:-]|\.\w)"
        ),
    ),
    _Detector(
        "ip",
        re.compile(
            r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:|:)(?:[0-9A-Fa-f]{0,4}:){1,7}"
            r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\w)"
        ),
        _is_ipv6,
    ),
    _Detector(
        "ip",
        re.compile(r"(?<![\w.])(?:" + _OCTET + r"\.){3}" + _OCTET + r"(?!\w|\.\d)"),
    ),
    _Detector(
        "host",
        re.compile(
            _BEFORE + r"(?:" + _LABEL + r"\.)+[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9]" + _AFTER
        ),
        _is_host,
    ),
)
_RANDOM_TOKEN = _Detector(
    "secret",
    re.compile(r"(?<![\w/+=-])[A-Za-z0-9_+/=-]{32,}(?![\w/+=-])"),
    _is_random_token,
)
# Candidates for a learned host name: a run of name characters, checked against the set.
_NAME_TOKEN = re.compile(r"(?<![\w-])[A-Za-z0-9][\w-]*(?![\w-])")
# The last word of a text, which the scan window may have cut: up to the
# longest name (253 characters), so a run of text longer than any value keeps
# the part no detector could have missed.
_LAST_WORD = re.compile(r"[^\s\"'`,;()<>\[\]{}/?&#=]{1,256}$")
# A secret learned from a label or annotation named so is looked for in every
# other text too; shorter values (``true``, ``1``) are words, not worth hunting.
MIN_LEARNED_SECRET = 6
# Each learned secret is one more alternative scanned in every text: a storm
# whose every alert carries a token must not make each prompt take seconds.
MAX_LEARNED_SECRETS = 200
# Full stops that IDNA (and so browsers and resolvers) read as the dot of a name,
# after NFKC has folded the full-width and half-width forms into U+3002.
_IDEOGRAPHIC_STOPS = str.maketrans({"\u3002": "."})


def normalise(text: str) -> str:
    """``text`` as the detectors must see it: compatibility forms folded and invisible
    characters dropped, so ``db1\uff0ecorp\uff0eexample\uff0ecom`` or a zero-width space
    inside ``core-1`` cannot carry a name past them (the model reads them all the same)."""
    if text.isascii():
        return text
    folded = unicodedata.normalize("NFKC", text).translate(_IDEOGRAPHIC_STOPS)
    return "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")


@dataclass(frozen=True, slots=True)
class _Found:
    kind: Kind
    value: str


def is_host_label(name: str) -> bool:
    """``instance``, ``exported_instance``, ``peer_host``...: a label naming a machine."""
    name = name.lower().removeprefix("exported_")
    return name in HOST_LABELS or name.rsplit("_", 1)[-1] in HOST_LABELS


def host_of(value: str) -> str:
    """The host part of a host-like label value: ``core-1`` of ``http://core-1:9100/x``.

    "" for a value that is no single name (``Gi0/1``, ``rack 3``) or is an address.
    """
    text = value.strip()
    scheme = text.find("://")
    if scheme >= 0:
        text = re.split(r"[/?#]", text[scheme + 3 :], maxsplit=1)[0].rpartition("@")[2]
    if text.startswith("["):
        return ""  # a bracketed IPv6 address: the ip detector's
    text = re.sub(r":\d+$", "", text)
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", text) or not any(ch.isalpha() for ch in text):
        return ""
    return text if len(text) >= 2 else ""


class Redactor:
    """Replaces sensitive values with pseudonyms, and maps an answer's pseudonyms back.

    One redactor serves one prompt: :meth:`learn` the incident's host-like label
    values first (they are redacted wherever they appear), then :meth:`redact`
    each text in the order the prompt shows it. ``patterns`` are extra regular
    expressions (the whole match is replaced). With ``enabled`` False (a local
    model the operator allowed to see everything) text passes unchanged.
    ``hosts`` and ``secrets`` are host names and secret values learned before
    (:attr:`hosts` and :attr:`secrets` of another redactor): a secret found under
    a label or annotation named so is redacted wherever else it appears.
    """

    def __init__(
        self,
        patterns: Sequence[str] = (),
        *,
        enabled: bool = True,
        hosts: Iterable[str] = (),
        secrets: Iterable[str] = (),
    ) -> None:
        self.enabled = enabled
        self._known_hosts = {host.casefold() for host in hosts}
        self._known_secrets = set(secrets)
        self._learned_secrets: _Detector | None = None  # made again after each learn()
        self._detectors = (
            # Text that looks like a pseudonym already: its own pseudonym keeps it apart.
            _Detector("host", _PSEUDONYM),
            *_CREDENTIALS,
            *(_Detector("pattern", re.compile(p)) for p in patterns),
            *_ADDRESSES,
            _Detector("host", _NAME_TOKEN, self._is_known_host),
            _RANDOM_TOKEN,
        )
        self._pseudonyms: dict[tuple[Kind, str], str] = {}
        self._originals: dict[str, str] = {}
        self._counts: dict[Kind, int] = {}

    @property
    def counts(self) -> Mapping[Kind, int]:
        """Distinct values replaced so far, by kind."""
        return dict(self._counts)

    def learn(self, labels: Mapping[str, str]) -> None:
        """Remember the host names in ``labels``' host-like values, and the values of
        labels named like secrets, to redact them anywhere."""
        for name, value in labels.items():
            if _SECRET_NAME.search(name):
                for secret in {value.strip(), normalise(value).strip()}:
                    if (
                        len(secret) >= MIN_LEARNED_SECRET
                        and len(self._known_secrets) < MAX_LEARNED_SECRETS
                    ):
                        self._known_secrets.add(secret)
                        self._learned_secrets = None
                continue
            if not is_host_label(name):
                continue
            host = host_of(normalise(value))
            if host:
                self._known_hosts.add(host.casefold())
                # The short name of an FQDN is how people write it in prose.
                short = host.split(".", 1)[0]
                if short != host and host_of(short):
                    self._known_hosts.add(short.casefold())

    @property
    def hosts(self) -> frozenset[str]:
        """The host names learned so far (case-folded)."""
        return frozenset(self._known_hosts)

    @property
    def secrets(self) -> frozenset[str]:
        """The secret values learned so far."""
        return frozenset(self._known_secrets)

    def redact(self, text: str, limit: int | None = None) -> str:
        """``text`` with every sensitive value replaced, cut to ``limit`` characters if given.

        Only values in the part that is kept get a pseudonym, so numbers follow
        what the model reads. The scan covers ``SCAN_FACTOR`` times ``limit``,
        so a value straddling the cut is still seen whole.
        """
        window = None if limit is None else max(limit, 1) * SCAN_FACTOR
        cut = window is not None and len(text) > window
        text = text[:window]
        if not self.enabled:
            return text if limit is None else cap(text, limit)
        text = normalise(text)
        pieces = self._pieces(text)
        if cut and pieces and isinstance(pieces[-1], str):
            # Pseudonyms shorter than what they replace can bring the window's
            # end into the part kept; a name or address cut there is no longer
            # recognisable, so the last word goes rather than a part of one.
            pieces[-1] = _LAST_WORD.sub("", pieces[-1])
        out: list[str] = []
        length = 0
        for piece in pieces:
            shown = piece if isinstance(piece, str) else self._pseudonym(piece.kind, piece.value)
            out.append(shown)
            length += len(shown)
            if limit is not None and length > limit:
                break
        redacted = "".join(out)
        return redacted if limit is None else cap(redacted, limit)

    def redact_value(self, name: str, value: str, limit: int | None = None) -> str:
        """A label's or annotation's value: all of it is a secret when ``name`` says so."""
        if self.enabled and value and _SECRET_NAME.search(name):
            return self._pseudonym("secret", value)
        return self.redact(value, limit)

    def restore(self, text: str) -> str:
        """``text`` with this redactor's pseudonyms mapped back; secrets read ``[redacted]``."""
        if not self.enabled:
            return text

        def back(match: re.Match[str]) -> str:
            kind = match.group(1).lower()
            original = self._originals.get(f"{kind}-{match.group(2)}")
            if original is None:
                return match.group(0)  # not one of ours (a cached answer may name more)
            return REDACTED if kind == "secret" else original

        return _PSEUDONYM.sub(back, text)

    def _is_known_host(self, token: str) -> bool:
        return token.casefold() in self._known_hosts

    def _secrets_detector(self) -> tuple[_Detector, ...]:
        """The learned secrets as one detector (longest first, so a secret that
        contains another is replaced whole), before every other detector."""
        if not self._known_secrets:
            return ()
        if self._learned_secrets is None:
            known = sorted(self._known_secrets, key=lambda value: (-len(value), value))
            pattern = re.compile("|".join(map(re.escape, known)))
            self._learned_secrets = _Detector("secret", pattern)
        return (self._learned_secrets,)

    def _pieces(self, text: str) -> list[str | _Found]:
        """``text`` split into plain parts and found values, each detector in turn."""
        pieces: list[str | _Found] = [text]
        for detector in (*self._secrets_detector(), *self._detectors):
            split: list[str | _Found] = []
            for piece in pieces:
                if isinstance(piece, _Found):
                    split.append(piece)
                    continue
                at = 0
                for start, end in detector.spans(piece):
                    if start > at:
                        split.append(piece[at:start])
                    split.append(_Found(detector.kind, piece[start:end]))
                    at = end
                if at < len(piece):
                    split.append(piece[at:])
            pieces = split
        return pieces

    def _pseudonym(self, kind: Kind, value: str) -> str:
        key = (kind, value.casefold() if kind in ("host", "email") else value)
        found = self._pseudonyms.get(key)
        if found is None:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            found = f"{kind}-{self._counts[kind]}"
            self._pseudonyms[key] = found
            self._originals[found] = value
        return found
