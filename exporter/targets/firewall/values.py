"""Reading a vendor's JSON without trusting its shape.

Firewall APIs change between firmware releases: a field moves, a number comes
back as a string (``"1234"``, ``"4.2 ms"``, ``"0.0 %"``), an object becomes a
list. ``Node`` wraps any decoded JSON value; every accessor answers "not
there" (``None``, ``""``, empty) instead of raising, so a vendor mapping reads
what it can and a family it cannot fill is left out (the schema's "not
reported"), never made up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# A number, optionally followed by a unit the vendors write: "4.2 ms", "0.0 %", "12%".
_NUMBER_WITH_UNIT = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(ms|%)?\s*")
# JSON may escape half of a surrogate pair (\ud800) alone: Python keeps it, UTF-8 cannot
# encode it, and the exposition of the whole answer would fail on that one label value.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _encodable(text: str) -> str:
    """``text`` with each unpaired surrogate replaced by U+FFFD, so it encodes as UTF-8."""
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)


@dataclass(frozen=True, slots=True)
class Node:
    """One JSON value, read defensively."""

    value: object = None

    def __getitem__(self, key: str | int) -> Node:
        """The member ``key`` of an object, or element ``key`` of an array; else an empty node."""
        if isinstance(key, str) and isinstance(self.value, dict):
            return Node(self.value.get(key))
        if isinstance(key, int) and isinstance(self.value, list) and -len(self.value) <= key:
            return Node(self.value[key]) if key < len(self.value) else Node()
        return Node()

    def get(self, *keys: str | int) -> Node:
        """A nested member: ``node.get("a", 0, "b")`` is ``node["a"][0]["b"]``."""
        node = self
        for key in keys:
            node = node[key]
        return node

    @property
    def present(self) -> bool:
        return self.value is not None

    def is_object(self) -> bool:
        return isinstance(self.value, dict)

    def is_array(self) -> bool:
        return isinstance(self.value, list)

    def items(self) -> Iterator[tuple[str, Node]]:
        """An object's members, in order; nothing for anything else."""
        if isinstance(self.value, dict):
            for key, member in self.value.items():
                yield _encodable(str(key)), Node(member)

    def elements(self) -> Iterator[Node]:
        """An array's elements; nothing for anything else."""
        if isinstance(self.value, list):
            for element in self.value:
                yield Node(element)

    def number(self) -> float | None:
        """A finite number, from a JSON number or a numeric string ("12", "4.2 ms", "0 %")."""
        value = self.value
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            try:
                number = float(value)
            except OverflowError:  # JSON integers have no bound; floats stop near 1.8e308
                return None
        elif isinstance(value, float):
            number = value
        elif isinstance(value, str) and (match := _NUMBER_WITH_UNIT.fullmatch(value)):
            number = float(match.group(1))
        else:
            return None
        return number if math.isfinite(number) else None

    def text(self) -> str:
        """A string as given (fit for UTF-8), a number as written; ``""`` for anything else."""
        value = self.value
        if isinstance(value, str):
            return _encodable(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return ""

    def flag(self) -> bool | None:
        """A JSON boolean, or 0/1; ``None`` for anything else."""
        value = self.value
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        return None


def percent_ratio(node: Node) -> float | None:
    """A percentage (0 to 100) as the schema's ratio (0 to 1); out-of-range values are dropped."""
    number = node.number()
    if number is None or not 0.0 <= number <= 100.0:
        return None
    return number / 100.0


def milliseconds(node: Node) -> float | None:
    """Milliseconds as the schema's seconds."""
    number = node.number()
    return None if number is None or number < 0 else number / 1000.0


def counter(node: Node) -> float | None:
    """A counter value: a number that is not negative."""
    number = node.number()
    return None if number is None or number < 0 else number


def total(values: Iterable[float | None]) -> float | None:
    """The sum of the values known; ``None`` when none is."""
    known = [value for value in values if value is not None]
    return sum(known) if known else None
