"""Cancelling a task always ends it: no timeout in the sidecar swallows a cancel.

Python 3.11's ``asyncio.wait_for`` returns the inner result when the outer
task is cancelled in the same loop iteration as the inner awaitable finishes
(fixed in 3.12), and the cancel is lost. The worker lease's loop lost one
that way and ran on after its replica was asked to stop. The sidecar uses
``asyncio.timeout``, which tells its own expiry from a cancel from outside.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest

from ai_sidecar.store.postgres import lease as lease_module
from ai_sidecar.store.postgres.lease import Lease, lead

ROOT = Path(__file__).resolve().parents[2]


def _wait_for_calls(path: Path) -> list[int]:
    """Lines of ``path`` that call ``asyncio.wait_for`` (or a bare imported ``wait_for``)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "wait_for") or (
            isinstance(func, ast.Name) and func.id == "wait_for"
        ):
            lines.append(node.lineno)
    return lines


def test_no_source_bounds_an_await_with_wait_for() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in ("ai_sidecar", "exporter")
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in _wait_for_calls(path)
    ]
    assert offenders == []


def test_the_check_sees_wait_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import asyncio\nfrom asyncio import wait_for\n"
        "async def f(x):\n    await asyncio.wait_for(x, 1)\n    await wait_for(x, 1)\n"
    )
    assert _wait_for_calls(sample) == [4, 5]


class _Cursor:
    async def fetchone(self) -> tuple[bool, int]:
        return (False, 1)  # somebody else holds the lock


class _Connection:
    """A lock connection whose try-lock query finishes when the test says."""

    closed = False

    def __init__(self, answer: asyncio.Future[_Cursor]) -> None:
        self.answer = answer

    def execute(self, query: str, params: Any = None) -> asyncio.Future[_Cursor]:
        return self.answer

    async def close(self) -> None:
        self.closed = True


async def _never_called() -> None:
    raise AssertionError("the lease was never taken: no work may run")


async def test_stopping_the_lease_loop_as_its_query_answers_stops_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lease_module, "RETRY_INTERVAL", 0.01)
    answer: asyncio.Future[_Cursor] = asyncio.get_running_loop().create_future()
    lease = Lease(None)  # type: ignore[arg-type]  # never connects: the connection is given
    lease._conn = _Connection(answer)  # type: ignore[assignment]
    leading = asyncio.create_task(lead(lease, _never_called, lambda _: None))
    for _ in range(5):  # let the loop reach the try-lock query
        await asyncio.sleep(0)
    assert not leading.done()
    # The answer and the stop land in one loop iteration.
    answer.set_result(_Cursor())
    leading.cancel()
    await asyncio.wait({leading}, timeout=5)
    assert leading.done(), "the lease loop ran on after it was cancelled"
    assert leading.cancelled()
