"""Analysis text on its way to Slack and email: no mentions, no hidden links, capped."""

from __future__ import annotations

import pytest

from ai_sidecar.models import Analysis
from ai_sidecar.sanitize import (
    CAPS,
    Caps,
    cap,
    cap_lines,
    clean,
    format_actions,
    safe_link,
    sanitize_analysis,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<!channel> the core switch is down", "channel the core switch is down"),
        ("wake up <!here>", "wake up here"),
        ("<!everyone>: outage", "everyone: outage"),
        ("<!here|here> now", "here now"),
        ("ping <!subteam^S0123ABC|@netops>", "ping netops"),
        ("ping <!subteam^S0123ABC>", "ping group S0123ABC"),
        ("ask <@U024BE7LH> first", "ask user U024BE7LH first"),
        ("ask <@W024BE7LH|@bob>", "ask bob"),
        ("see <#C024BE7LH|noc>", "see #noc"),
        ("see <#C024BE7LH>", "see channel C024BE7LH"),
        ("@channel link down", "channel link down"),
        ("hey @HERE and @everyone!", "hey HERE and everyone!"),
        # An address is not a mention.
        ("mail ops@here.example", "mail ops@here.example"),
        # Dropping one "@" of a run must not leave a mention behind.
        ("@@here now", "here now"),
        ("wake @@@channel", "wake channel"),
        ("(@@everyone)", "(everyone)"),
    ],
)
def test_mentions_are_neutralised(text, expected):
    assert clean(text, 1000) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("read <https://evil.example/x|the runbook>", "read the runbook (https://evil.example/x)"),
        ("read <https://wiki.example/rb>", "read https://wiki.example/rb"),
        ("<mailto:a@example.org|mail us>", "mail us (mailto:a@example.org)"),
        # A label that tries to mention through a link is neutralised too.
        ("<https://x.example|@channel>", "channel (https://x.example)"),
    ],
)
def test_slack_links_show_where_they_go(text, expected):
    assert clean(text, 1000) == expected


def test_leftover_angle_brackets_cannot_form_markup():
    out = clean("latency < 5 ms and loss > 1% <<!here>>", 1000)
    assert "<" not in out
    assert ">" not in out
    assert out == "latency \u2039 5 ms and loss \u203a 1% \u2039here\u203a"
    assert clean("<b>bold</b> <img src=x>", 100) == (
        "\u2039b\u203abold\u2039/b\u203a \u2039img src=x\u203a"
    )


def test_control_and_invisible_characters_are_removed():
    text = "re\x00boot\x07 sw1\x1b[31m\r\nthen\tcheck \u202eevil\u202c \u200bok\x7f\x85"
    assert clean(text, 1000) == "reboot sw1[31m\nthen check evil ok"


def test_ampersands_and_quotes_are_not_html_escaped():
    # The email template escapes; escaping here would show "&amp;" to readers.
    assert clean("R&D says \"drop\" & 'go'", 1000) == "R&D says \"drop\" & 'go'"


def test_cap_adds_an_ellipsis_only_when_cut():
    assert cap("abcdef", 6) == "abcdef"
    assert cap("abcdefg", 6) == "abcde…"
    assert len(cap("x" * 5000, 300)) == 300
    assert cap("abc   defg", 7) == "abc…"
    assert cap("abc", 0) == ""


def test_blank_runs_are_collapsed():
    assert clean("  a    b\n\n\n\n\nc  ", 100) == "a b\n\nc"


def analysis(**overrides):
    fields = {
        "summary": "Link down at site A",
        "root_cause": "Uplink sw1:Gi0/1 lost carrier",
        "impact": "Site A offline",
        "actions": ("Check the SFP", "Call the carrier"),
        "confidence": 0.8,
        "false_positive_likelihood": 0.1,
    }
    fields.update(overrides)
    return Analysis(**fields)


def test_sanitize_analysis_applies_the_documented_caps():
    long = "word " * 400
    out = sanitize_analysis(
        analysis(
            summary=long,
            root_cause=long,
            impact=long,
            actions=tuple(f"step {n} " + long for n in range(12)),
        )
    )
    assert (CAPS.summary, CAPS.root_cause, CAPS.impact, CAPS.action, CAPS.actions) == (
        300,
        600,
        400,
        200,
        8,
    )
    assert len(out.summary) == 300
    assert out.summary.endswith("…")
    assert len(out.root_cause) == 600
    assert len(out.impact) == 400
    assert len(out.actions) == 8
    assert all(len(a) == 200 and a.endswith("…") for a in out.actions)
    assert out.actions[7].startswith("step 7 ")
    # Numbers are not text: they pass through.
    assert (out.confidence, out.false_positive_likelihood) == (0.8, 0.1)


def test_sanitize_analysis_cleans_every_text_field():
    out = sanitize_analysis(
        analysis(
            summary="<!channel> down",
            root_cause="see <http://x.example|here>",
            impact="@everyone affected",
            actions=("page <@U1>", "", "  ", "run\nthis"),
        )
    )
    assert out.summary == "channel down"
    assert out.root_cause == "see here (http://x.example)"
    assert out.impact == "everyone affected"
    # Empty actions are dropped; an action stays on one line.
    assert out.actions == ("page user U1", "run this")


def test_custom_caps():
    out = sanitize_analysis(analysis(actions=("a", "b", "c")), Caps(summary=5, actions=2))
    assert out.summary == "Link…"
    assert out.actions == ("a", "b")


def test_format_actions_numbers_one_per_line():
    assert format_actions(("Check the SFP", "Call the carrier")) == (
        "1. Check the SFP\n2. Call the carrier"
    )
    assert format_actions(()) == ""


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("http://prometheus.example/graph?g0.expr=up%7Bjob%3D%22a%22%7D&g0.tab=1", True),
        ("HTTPS://grafana.example/d/x", True),
        ("", False),
        ("javascript:alert(1)", False),
        ("http://evil.example/|click", False),
        ("http://evil.example/<!channel>", False),
        ('http://evil.example/" onclick="x', False),
        ("http://evil.example/a b", False),
        ("http://evil.example/\u202e", False),
        ("ftp://files.example/x", False),
        ("http://x.example/" + "a" * 3000, False),
    ],
)
def test_safe_link_keeps_only_plain_http_urls(url, kept):
    assert safe_link(url) == (url if kept else None)


def test_cap_lines_ends_the_last_kept_line_with_an_ellipsis():
    assert cap_lines("a\nb\nc", 3) == "a\nb\nc"
    assert cap_lines("a\nb\nc\nd", 3) == "a\nb\nc …"
    assert clean("a\n\nb\n\nc", 100, max_lines=2) == "a\n…"
