"""The ``browser`` fixture: headless chromium windows that a test opens on a console."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ai_sidecar.console.browser.harness import (
    DESKTOP,
    Browser,
    BrowserUnavailableError,
    ConsoleErrorsFound,
    OpenBrowser,
    WindowSize,
    artefact_root,
    start_chromium,
    unavailable,
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's report on the test, so the fixture knows whether it failed."""
    report = yield
    setattr(item, f"report_{call.when}", report)
    return report


@pytest.fixture
def browser(
    request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenBrowser]:
    """``browser(base_url, size=DESKTOP)``: a fresh headless chromium (its own profile).

    Every browser is closed at the end of the test, after a last look at its
    console log: a JavaScript error logged late fails the test too. When the
    test fails, the paths of its screenshots are printed.
    """
    artefacts = artefact_root(tmp_path_factory.getbasetemp()) / request.node.name
    opened: list[Browser] = []
    numbers = itertools.count(1)

    def open_browser(base_url: str, size: WindowSize = DESKTOP) -> Browser:
        try:
            driver = start_chromium(tmp_path / f"profile-{len(opened)}", size)
        except BrowserUnavailableError as exc:
            unavailable(str(exc))
            raise
        window = Browser(driver, base_url.rstrip("/"), size, artefacts, numbers)
        opened.append(window)
        return window

    yield open_browser
    late_errors: list[str] = []
    for window in opened:
        try:
            window.check_console()
        except ConsoleErrorsFound as exc:
            late_errors.append(str(exc))
        finally:
            window.quit()
    call = getattr(request.node, "report_call", None)
    if late_errors or (call is not None and call.failed):
        shots = [str(path) for window in opened for path in window.screenshots]
        print("screenshots of the failed test:\n  " + "\n  ".join(shots or ["(none)"]))
    if late_errors:
        pytest.fail("\n".join(late_errors))
