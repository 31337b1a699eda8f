"""The compiled versions of the scrape's innermost loops, or ``None`` without them.

``_speedups.c`` is built at install time where a C compiler is (setup.py marks
it optional). Each of its functions handles the common case and hands anything
else back to the Python function it stands in for, which stays the reference:
tests feed both the same hostile inputs. ``SCOUT_PURE_PYTHON=1`` in the
environment makes the exporter ignore the compiled module (to compare, or to
rule it out).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:  # values imports ber, which imports this module
    from exporter.clients.snmp.values import Oid, VarBind

    Labels = tuple[tuple[str, str], ...]

RawVarBinds = list[tuple[bytes, int, bytes]]


class Compiled(Protocol):
    """What ``_speedups.c`` offers (its docstrings say what each does)."""

    def decode_varbinds(self, buf: bytes, pos: int, end: int, /) -> RawVarBinds | None: ...

    def count_in_subtree(self, share: RawVarBinds, prefix: bytes, /) -> int: ...

    def take_share(
        self,
        share: RawVarBinds,
        count: int,
        root: tuple[int, ...],
        cut: int,
        previous: tuple[int, ...],
        table: dict[bytes, tuple[int, ...]],
        kinds: Mapping[int, object],
        out: list[VarBind],
        decode_subids: Callable[[bytes], tuple[int, ...]],
        varbind: type[VarBind],
        /,
    ) -> tuple[tuple[int, ...], int]: ...

    def map_plain(
        self,
        varbinds: Sequence[VarBind],
        cut: int,
        known: Mapping[Oid, Labels | None],
        absent: AbstractSet[object],
        numeric: AbstractSet[object],
        wrap_at: int | None,
        counter64: object,
        out: list[tuple[Labels, int | float]],
        varbind: type[VarBind],
        /,
    ) -> int: ...

    def render_int_samples(self, name: str, texts: object, samples: object, /) -> str | None: ...


def _load() -> Compiled | None:
    if os.environ.get("SCOUT_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        module = importlib.import_module("exporter.clients.snmp._speedups")
    except ImportError:
        return None
    return cast(Compiled, module)


compiled = _load()
