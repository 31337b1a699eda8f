"""The WinRM client's own bounds, at pypsrp's seam (no Windows runs here)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from pypsrp.wsman import NAMESPACES

from exporter.clients.winrm import CLEANUP_SECONDS, PypsrpShell, WinrmTimeoutError


class WedgedHost:
    """pypsrp's ``WSMan`` and ``WinRS`` for a host that stops answering after the command.

    Records the HTTP read timeout each clean-up request (Signal, Delete) would wait.
    """

    def __init__(self) -> None:
        self.operation_timeout = 60
        self.transport = SimpleNamespace(connection_timeout=60.0, read_timeout=60.0)
        self.resource_uri = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
        self._selector_set = None
        self.cleanup_waits: dict[str, float] = {}

    def command(self, executable: str, arguments: list[str]) -> ET.Element:
        body = ET.Element("Body")
        response = ET.SubElement(body, f"{{{NAMESPACES['rsp']}}}CommandResponse")
        ET.SubElement(response, f"{{{NAMESPACES['rsp']}}}CommandId").text = "C0FFEE"
        return body

    def send(self, *args: Any, **kwargs: Any) -> None:
        return None

    def invoke(self, *args: Any) -> ET.Element:
        raise requests.exceptions.ReadTimeout("read timed out")

    def signal(self, code: str, command_id: str) -> None:
        self.cleanup_waits["Signal"] = self.transport.read_timeout
        raise requests.exceptions.ReadTimeout("read timed out")

    def close(self) -> None:
        self.cleanup_waits.setdefault("Delete", self.transport.read_timeout)


def test_clean_up_after_a_timeout_waits_seconds_not_the_rest_of_the_deadline():
    # The host hung on Receive; Signal and Delete go to the same hung host. Were
    # they to wait as long as Receive could, a slow host would hold its worker
    # thread (and its next scrape) for several deadlines instead of one.
    host = WedgedHost()
    shell = PypsrpShell(host, host)
    with pytest.raises(WinrmTimeoutError):
        shell.run("powershell.exe", [], b"script", time.monotonic() + 30)
    shell.close()
    assert host.cleanup_waits.keys() == {"Signal", "Delete"}
    assert all(0 < wait <= CLEANUP_SECONDS for wait in host.cleanup_waits.values())
    assert CLEANUP_SECONDS <= 5
