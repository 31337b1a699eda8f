"""The browser harness itself: it sees script errors, sizes windows, keeps screenshots.

The console tests rely on it to fail on a JavaScript error; these tests show it
does, on plain pages served from a temporary directory (the console's own pages
allow no inline script).
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ai_sidecar.console.browser.harness import (
    PHONE,
    BrowserUnavailableError,
    ConsoleErrorsFound,
    InaccessiblePage,
    OpenBrowser,
    start_chromium,
)

pytestmark = pytest.mark.peers

CLEAN = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>clean</title></head>
<body><main><h1>Nothing wrong here</h1></main></body></html>"""
BROKEN = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<link rel="icon" href="data:,"><title>broken</title></head>
<body><main><script>undefinedFunctionOfTheConsole();</script></main></body></html>"""


UNLABELLED = """<!doctype html><html><head><meta charset="utf-8">
<link rel="icon" href="data:,"><title>unlabelled</title></head>
<body><form><input name="q"></form></body></html>"""


class Handler(http.server.SimpleHTTPRequestHandler):
    # Error pages as accessible as the console's, so only their status counts.
    error_message_format = (
        '<!doctype html><html lang="en"><head><link rel="icon" href="data:,">'
        "<title>%(code)d</title></head><body><main>%(message)s</main></body></html>"
    )

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """A static HTTP server on loopback serving CLEAN and BROKEN pages."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "clean.html").write_text(CLEAN)
    (root / "broken.html").write_text(BROKEN)
    (root / "unlabelled.html").write_text(UNLABELLED)
    handler = functools.partial(Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_script_error_fails_the_page_and_a_clean_page_passes(browser: OpenBrowser, site: str):
    window = browser(site)
    window.open("/clean.html")
    assert window.find("h1").text == "Nothing wrong here"
    with pytest.raises(ConsoleErrorsFound, match="undefinedFunctionOfTheConsole"):
        window.open("/broken.html")
    # The log is drained by the check: the next clean page passes again.
    window.open("/clean.html")


def test_an_error_status_is_an_error_unless_the_page_expects_it(browser: OpenBrowser, site: str):
    window = browser(site)
    with pytest.raises(ConsoleErrorsFound, match="404"):
        window.open("/nothing-here.html")
    # A page expected to come with its status (a refused login) passes;
    # another error on it would not.
    window.open("/nothing-here.html", page_status=404)
    with pytest.raises(ConsoleErrorsFound, match="404"):
        window.open("/nothing-here.html", page_status=401)


def test_phone_window_and_screenshots(browser: OpenBrowser, site: str):
    window = browser(site, PHONE)
    window.open("/clean.html")
    assert window.driver.execute_script("return window.innerWidth") == PHONE.width
    [shot] = window.screenshots
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert shot.name == "01-phone-open-clean-html.png"


def test_each_browser_has_its_own_profile(browser: OpenBrowser, site: str):
    first = browser(site)
    first.open("/clean.html")
    first.driver.add_cookie({"name": "session", "value": "first"})
    second = browser(site)
    second.open("/clean.html")
    assert second.driver.get_cookies() == []
    assert [c["value"] for c in first.driver.get_cookies()] == ["first"]


def test_a_page_without_language_landmark_or_labels_fails(browser: OpenBrowser, site: str):
    window = browser(site)
    with pytest.raises(InaccessiblePage) as problems:
        window.open("/unlabelled.html")
    assert str(problems.value).endswith(
        "unlabelled.html: <html> has no lang; not exactly one <main>; unlabelled input name=q"
    )


def test_without_chromium_the_reason_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrowserUnavailableError, match=r"\(Debian package chromium-driver\)"):
        start_chromium(tmp_path / "profile", PHONE)
    # A driver but no browser: the browser's package is named.
    driver = tmp_path / "chromedriver"
    driver.write_text("#!/bin/sh\nexit 1\n")
    driver.chmod(0o755)
    with pytest.raises(BrowserUnavailableError, match=r"\(Debian package chromium\)"):
        start_chromium(tmp_path / "profile", PHONE)
