"""The script's rows as families: choices the module makes about them."""

from __future__ import annotations

from exporter.targets.winrm.metrics import ProcessSample, service
from exporter.targets.winrm.modules import WinrmModule
from tests.exporter.targets.winrm.fake_host import ROWS


def _running(module: WinrmModule) -> dict[str, float]:
    [state, *_] = service({"ok": True, "rows": ROWS["service"]}, module, ProcessSample())
    return {s.labels["name"]: s.value for s in state.samples if s.labels["state"] == "running"}


def test_a_critical_service_is_reported_even_when_the_filter_leaves_it_out():
    # WindowsServiceStopped joins on the state series: a critical service the
    # filter dropped would have none, and its alert could never fire.
    module = WinrmModule.model_validate(
        {
            "prober": "winrm",
            "services": {"include": "wuauserv"},
            "critical_services": ["LanmanServer"],
        }
    )
    assert _running(module) == {"wuauserv": 0.0, "lanmanserver": 1.0}


def test_the_filter_still_drops_services_nobody_marked_critical():
    module = WinrmModule.model_validate({"prober": "winrm", "services": {"include": "wuauserv"}})
    assert _running(module) == {"wuauserv": 0.0}
