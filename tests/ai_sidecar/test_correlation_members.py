"""Incident values that share one member log still behave as the plain member dicts they replace."""

from __future__ import annotations

import ipaddress
import pickle
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ai_sidecar.correlate.members import MemberLog
from ai_sidecar.correlate.outside import _INSIDE as INSIDE
from ai_sidecar.correlate.outside import is_outside
from ai_sidecar.models import Member

from .builders import member

NAMES = ("a", "b", "c", "d", "e")


def version(name: str, flaps: int) -> Member:
    return replace(member("Down", name), flap_count=flaps)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.integers(0, 3)), max_size=200))
def test_every_view_equals_the_dict_a_copy_would_have_held(puts: list[tuple[str, int]]) -> None:
    log = MemberLog()
    expected: dict[str, Member] = {}
    views = []
    for name, flaps in puts:
        value = version(name, flaps)
        log = log.put(value)
        expected[value.fingerprint] = value
        views.append((log.view(), dict(expected)))
    # Each value kept what it held when made, in a dict's order, whatever came later
    # (compaction included: 200 puts of 5 members start the log afresh).
    for view, held in views:
        assert view == held
        assert list(view) == list(held)
        assert list(view.items()) == list(held.items())
        assert len(view) == len(held)
        for name in NAMES:
            fingerprint = f"Down-{name}"
            assert (fingerprint in view) == (fingerprint in held)
            assert view.get(fingerprint) == held.get(fingerprint)


def test_a_view_is_read_only_pickles_as_a_dict_and_reads_as_one() -> None:
    log = MemberLog({"Down-a": version("a", 0)})
    view = log.put(version("b", 0)).view()
    assert not hasattr(view, "__setitem__")
    copied = pickle.loads(pickle.dumps(view))
    assert type(copied) is dict
    assert copied == {"Down-a": version("a", 0), "Down-b": version("b", 0)}
    assert repr(view) == repr(copied)


def test_a_log_given_members_starts_from_them() -> None:
    given = {"Down-b": version("b", 1), "Down-a": version("a", 0)}
    log = MemberLog(given)
    assert log.view() == given
    assert list(log.view()) == ["Down-b", "Down-a"]
    assert log.latest("Down-b") == version("b", 1)
    assert "Down-a" in log
    assert "Down-z" not in log


ADDRESSES = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["10.", "10.1", "192.168.", "10.0.0.1x", "100.64.1.1", "172.16.0.1"]),
    st.text(alphabet="0123456789abcdef.:x", max_size=20),
)


def parsed_outside(host: str) -> bool:
    """What is_outside answered before its shortcuts: parse, then look in every range."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not any(address.version == net.version and address in net for net in INSIDE)


@settings(max_examples=500, deadline=None)
@given(ADDRESSES)
def test_outside_shortcuts_answer_as_parsing_does(host: str) -> None:
    assert is_outside(host) == parsed_outside(host)
