"""Make analysis text safe to show in Slack and email.

The analysis is built from alert text that anyone able to set a label, an SNMP
``ifAlias`` or a log line controls, and it may come back from an LLM that was
talked into something. Alertmanager copies it verbatim into Slack messages and
emails, so before it leaves the sidecar it must not be able to:

* notify people: Slack's special mentions (``<!channel>``, ``<!here>``,
  ``<!everyone>``, ``<!subteam^…>``), user mentions (``<@U…>``, ``<@W…>``) and
  plain ``@channel`` / ``@here`` / ``@everyone`` (which Slack honours when a
  receiver turns on ``link_names``);
* hide where a link goes: Slack's ``<url|text>`` shows only ``text``;
* smuggle invisible or layout-changing characters: control characters,
  zero-width characters and bidirectional overrides (which can make a shown
  command differ from the one a reader copies), which :func:`strip_controls`
  removes (the report CSV's cells go through it too);
* flood a channel: every field is capped, with an ellipsis when cut;
* link somewhere unexpected: only http(s) URLs of printable ASCII without
  spaces, quotes, angle brackets or ``|`` are kept as links
  (:func:`safe_link`); a ``javascript:`` generator URL is not.

What survives is plain text: every Slack ``<…>`` sequence is rewritten to
readable words (``<https://x|docs>`` becomes ``docs (https://x)``) and the
angle brackets left over become single guillemets (U+2039 and U+203A), which
neither Slack nor a mail reader can take for markup.
Nothing is HTML-escaped here: Alertmanager's email templates escape on their
own (``html/template``), and escaping twice would show ``&amp;lt;`` to readers.

Caps, in characters (:class:`Caps`):

========== ======
summary    300
root cause 600
impact     400
one action 200
actions    8 (the rest are dropped)
annotation 1000 on at most 20 lines (an original annotation copied into an
           enriched alert)
========== ======

These are the sidecar's caps. Alertmanager's Slack templates
(``alertmanager/templates/scout.tmpl``) escape ``&``, ``<`` and ``>`` and cap
again, for raw alerts the sidecar never saw.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ai_sidecar.models import Analysis

ELLIPSIS = "…"
# Stand-ins for "<" and ">" that look alike but are no markup anywhere.
LEFT_ANGLE = "\u2039"
RIGHT_ANGLE = "\u203a"


@dataclass(frozen=True, slots=True)
class Caps:
    """Longest text, in characters, that each field may keep."""

    summary: int = 300
    root_cause: int = 600
    impact: int = 400
    action: int = 200
    actions: int = 8
    annotation: int = 1000
    annotation_lines: int = 20


CAPS = Caps()

# A Slack control sequence: a mention or channel ("<!…>", "<@…>", "<#…>") or a
# link ("<scheme:target>" or "<scheme:target|label>"). Other bracket pairs, as in
# "latency < 5 ms and loss > 1%", are text and keep their meaning.
_SLACK_SEQUENCE = re.compile(r"<([!@#][^<>\n]*|[A-Za-z][A-Za-z0-9+.-]*:[^<>\s|]*(?:\|[^<>\n]*)?)>")
# "@here" as a word of its own; "ops@here.example" is an address, not a mention.
# Every "@" of a run goes: removing one from "@@here" would leave "@here".
_PLAIN_MENTION = re.compile(r"(?<![\w.+@-])@+(channel|here|everyone)\b", re.IGNORECASE)
# Characters that change layout or direction without being visible: zero-width
# spaces and joiners, bidi embeddings/overrides/isolates, the BOM.
_INVISIBLE = frozenset(
    "\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)
# Longest URL kept as a link; Prometheus's generator URLs with a long
# expression stay well under it.
MAX_LINK = 2000
# http(s), then printable ASCII but for space, '"', '<', '>' and '|': the
# characters that end or relabel a Slack link or an HTML attribute.
_SAFE_LINK = re.compile(r"https?://[!#-;=?-{}~]+", re.ASCII | re.IGNORECASE)


def _special(body: str) -> str:
    """Words for ``<!…>``: the mention's name, never a mention."""
    command, _, label = body[1:].partition("|")
    name, _, argument = command.partition("^")
    if label:
        return label.lstrip("@")
    if name == "subteam" and argument:
        return f"group {argument}"
    return name


def _rewrite(match: re.Match[str]) -> str:
    body = match.group(1)
    target, _, label = body.partition("|")
    if body.startswith("!"):
        return _special(body)
    if body.startswith("@"):
        # A user mention: keep the shown name, or say whose ID it was.
        return label.lstrip("@") if label else f"user {target[1:]}"
    if body.startswith("#"):
        # A channel link notifies no one, but it still is markup; keep the name.
        return f"#{label}" if label else f"channel {target[1:]}"
    if label:
        # Show where the link goes next to what it claimed to be.
        return f"{label} ({target})" if target else label
    return target


def strip_controls(text: str) -> str:
    """``text`` without control, format (zero-width, bidi), private-use or unassigned
    characters; tabs become spaces and carriage returns line feeds, which stay."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    # isprintable() is False for every control, format (zero-width, bidi) and
    # unassigned character, so most text skips the per-character pass below.
    if text.replace("\n", "").isprintable():
        return text
    return "".join(
        ch
        for ch in text
        if ch == "\n" or (ch not in _INVISIBLE and not unicodedata.category(ch).startswith("C"))
    )


def cap(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis if cut."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[: limit - 1].rstrip() + ELLIPSIS


def cap_lines(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` lines, the last ending in an ellipsis if cut."""
    lines = text.split("\n", limit)
    if len(lines) <= limit:
        return text
    last = lines[limit - 1].rstrip()
    return "\n".join([*lines[: limit - 1], f"{last} {ELLIPSIS}" if last else ELLIPSIS])


def safe_link(url: str) -> str | None:
    """``url`` if a notification may show it as a link (see the module docstring), else None."""
    if len(url) <= MAX_LINK and _SAFE_LINK.fullmatch(url):
        return url
    return None


def clean(text: str, limit: int, max_lines: int | None = None) -> str:
    """Plain text that cannot notify, hide a link, or run past ``limit`` characters
    (nor past ``max_lines`` lines, when given)."""
    text = strip_controls(text)
    text = _SLACK_SEQUENCE.sub(_rewrite, text)
    # What is left can no longer pair up into a sequence Slack would read.
    text = text.replace("<", LEFT_ANGLE).replace(">", RIGHT_ANGLE)
    text = _PLAIN_MENTION.sub(lambda m: m.group(1), text)
    # Blank runs left by removed characters or by the model's formatting.
    text = re.sub(r"[ ]{2,}", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    if max_lines is not None:
        text = cap_lines(text, max_lines)
    return cap(text, limit)


def clean_actions(actions: Iterable[str], caps: Caps = CAPS) -> tuple[str, ...]:
    """At most ``caps.actions`` non-empty actions, each cleaned and capped."""
    kept: list[str] = []
    for action in actions:
        # An action is one line in a numbered list.
        text = clean(action.replace("\n", " "), caps.action)
        if text:
            kept.append(text)
        if len(kept) == caps.actions:
            break
    return tuple(kept)


def sanitize_analysis(analysis: Analysis, caps: Caps = CAPS) -> Analysis:
    """The same analysis with every text field safe for Slack and email."""
    return replace(
        analysis,
        summary=clean(analysis.summary, caps.summary),
        root_cause=clean(analysis.root_cause, caps.root_cause),
        impact=clean(analysis.impact, caps.impact),
        actions=clean_actions(analysis.actions, caps),
    )


def format_actions(actions: Iterable[str]) -> str:
    """Numbered, one per line: how the ``ai_actions`` annotation reads."""
    return "\n".join(f"{n}. {action}" for n, action in enumerate(actions, start=1))
