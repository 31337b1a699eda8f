"""A real browser for the console's tests: Debian's chromium through chromedriver.

Selenium drives ``chromium`` and ``chromedriver`` found on PATH (the Debian
packages ``chromium`` and ``chromium-driver``), given to it by path so that its
driver manager never tries to download a browser. Each :class:`Browser` runs
headless with a profile of its own (no cookie, cache or storage shared between
tests) at the window size of a phone or of a desktop.

Two things every console test gets from it:

- **Screenshots as artefacts.** :meth:`Browser.screenshot` writes numbered PNGs
  under the test's artefact directory (``$SCOUT_TEST_ARTEFACTS`` or pytest's
  base temporary directory, ``artefacts/<test>/``); the fixture prints their
  paths when a test fails.
- **No JavaScript error goes unnoticed.** After each page load and action, and
  when the test ends, the browser's console log is read and any ``SEVERE``
  entry (a script error, a resource that failed to load, a CSP violation)
  fails the test.
- **Basic accessibility.** Every page shown must have a language, one
  ``<main>`` and a label for every control (:meth:`Browser.check_accessibility`).
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait


@dataclass(frozen=True, slots=True)
class WindowSize:
    name: str
    # CSS pixels of the viewport.
    width: int
    height: int
    # A phone: emulated as chromium's device mode does (touch, device pixel
    # ratio, mobile viewport), since a desktop window cannot be made that narrow.
    mobile: bool = False


# A common phone in portrait and a laptop screen.
PHONE = WindowSize("phone", 390, 844, mobile=True)
DESKTOP = WindowSize("desktop", 1366, 900)

# How long a page or an action may take before the wait gives up: generous,
# since a 2-core machine runs other tests alongside (a wait, not a timing).
PAGE_WAIT = 20.0


class BrowserUnavailableError(Exception):
    """chromium or chromedriver is missing, or the browser would not start."""


class ConsoleErrorsFound(AssertionError):
    """The page logged JavaScript console errors."""


class InaccessiblePage(AssertionError):
    """The page lacks what assistive technology needs (language, landmark, labels)."""


# What every console page must have for screen readers and keyboard users: a
# language, one main landmark, and a name for every form control a person
# fills in (a <label>, aria-label or aria-labelledby).
_ACCESSIBILITY_PROBLEMS = """
const problems = [];
if (!document.documentElement.lang) problems.push('<html> has no lang');
if (document.querySelectorAll('main').length !== 1) problems.push('not exactly one <main>');
for (const el of document.querySelectorAll('input, select, textarea')) {
  if (['hidden', 'submit', 'button', 'reset'].includes(el.type)) continue;
  const named = (el.labels && el.labels.length) || el.getAttribute('aria-label')
    || el.getAttribute('aria-labelledby');
  if (!named) problems.push(`unlabelled ${el.tagName.toLowerCase()} name=${el.name}`);
}
return problems;
"""


def chromium_options(profile: Path, size: WindowSize) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    binary = shutil.which("chromium")
    if binary is None:
        raise BrowserUnavailableError(
            "the chromium command is not installed (Debian package chromium)"
        )
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--disable-gpu",
        # Nothing but the page under test goes on the network: no updates,
        # sync, safe-browsing lists or first-run pages.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--no-first-run",
        "--no-default-browser-check",
        # /dev/shm is small in containers; chromium then crashes tabs.
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    if size.mobile:
        options.add_experimental_option(
            "mobileEmulation",
            {"deviceMetrics": {"width": size.width, "height": size.height, "pixelRatio": 3.0}},
        )
    else:
        options.add_argument(f"--window-size={size.width},{size.height}")
    if os.geteuid() == 0:
        # Chromium refuses to start as root with its sandbox on: the sandbox
        # drops privileges through a user namespace owned by an ordinary user.
        # Tests run as root in containers and on CI; the pages they open are
        # the console's own, on loopback.
        options.add_argument("--no-sandbox")
    # Every console message, so the test can fail on errors (get_log("browser")).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


def start_chromium(profile: Path, size: WindowSize) -> webdriver.Chrome:
    """A headless chromium with a fresh profile at ``size``; raises BrowserUnavailableError."""
    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        raise BrowserUnavailableError(
            "the chromedriver command is not installed (Debian package chromium-driver)"
        )
    profile.mkdir(parents=True, exist_ok=True)
    options = chromium_options(profile, size)
    try:
        driver = webdriver.Chrome(options=options, service=DriverService(driver_path))
    except WebDriverException as exc:
        raise BrowserUnavailableError(f"chromium did not start: {exc.msg}") from exc
    driver.set_page_load_timeout(PAGE_WAIT)
    return driver


def severe_entries(log: list[dict[str, Any]]) -> list[str]:
    """The messages of a browser log's SEVERE entries (errors)."""
    return [str(entry.get("message", "")) for entry in log if entry.get("level") == "SEVERE"]


@dataclass
class Browser:
    """One headless chromium with helpers for the console's pages and forms."""

    driver: webdriver.Chrome
    base_url: str
    size: WindowSize
    artefacts: Path
    # Screenshot numbers, shared by the browsers of one test so that their
    # files sort in the order the test took them.
    numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    screenshots: list[Path] = field(default_factory=list)

    # --- navigation ---------------------------------------------------------------

    def open(self, path: str, page_status: int | None = None) -> None:
        """Load ``base_url + path``, screenshot it, and fail on console errors.

        ``page_status`` as for :meth:`settled`.
        """
        self.driver.get(self.base_url + path)
        self.settled(f"open {path}", page_status)

    def settled(self, label: str, page_status: int | None = None) -> None:
        """After a load or an action: wait for the document, screenshot, check the log.

        ``page_status``: the page is expected to come with this HTTP error
        status (a refused login), which chromium logs as an error; only that
        entry is let through.
        """
        WebDriverWait(self.driver, PAGE_WAIT).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        self.screenshot(label)
        self.check_console(page_status)
        self.check_accessibility()

    @property
    def path(self) -> str:
        """The path of the page shown now, without its query."""
        return urlsplit(self.driver.current_url).path

    @property
    def location(self) -> str:
        """The path and query of the page shown now."""
        parts = urlsplit(self.driver.current_url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    # --- reading the page ---------------------------------------------------------

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def fits_width(self) -> bool:
        """Whether the page fits the window's width (no sideways scrolling, as on a phone)."""
        return bool(
            self.driver.execute_script(
                "return document.documentElement.scrollWidth <= window.innerWidth"
            )
        )

    def status_message(self) -> str:
        """The flash message pages show after an action (``role="status"``)."""
        return " ".join(e.text for e in self.find_all('[role="status"]')).strip()

    def alert_message(self) -> str:
        """The error message a page shows (``role="alert"``)."""
        return " ".join(e.text for e in self.find_all('[role="alert"]')).strip()

    # --- acting ---------------------------------------------------------------------

    def fill(self, form: str, values: dict[str, str]) -> None:
        """Type ``values`` into the named fields of ``form`` (a CSS selector).

        Radio buttons are clicked by value, selects chosen by value; anything
        else is cleared and typed into, as a person would.
        """
        container = self.find(form)
        for name, value in values.items():
            fields = container.find_elements(By.NAME, name)
            assert fields, f"{form} has no field named {name!r}"
            first = fields[0]
            if first.get_attribute("type") == "radio":
                [radio] = [f for f in fields if f.get_attribute("value") == value]
                radio.click()
            elif first.tag_name == "select":
                Select(first).select_by_value(value)
            else:
                first.clear()
                first.send_keys(value)

    def submit(
        self, form: str, values: dict[str, str] | None = None, page_status: int | None = None
    ) -> None:
        """Fill ``form``, press its submit button, and wait for the next page.

        ``page_status`` as for :meth:`settled`.
        """
        if values:
            self.fill(form, values)
        button = self.find(f'{form} [type="submit"]')
        old_page = self.find("html")
        button.click()
        WebDriverWait(self.driver, PAGE_WAIT).until(
            lambda d: _is_stale(old_page), message=f"{form} was submitted but no page followed"
        )
        self.settled(f"submit {form}", page_status)

    def press_enter(self, page_status: int | None = None) -> None:
        """Press Enter in the focused field and wait for the page the form leads to."""
        old_page = self.find("html")
        self.type_keys(Keys.ENTER)
        WebDriverWait(self.driver, PAGE_WAIT).until(
            lambda d: _is_stale(old_page), message="Enter submitted nothing"
        )
        self.settled("press Enter", page_status)

    def press_tab_until(self, field_name: str, limit: int = 15) -> int:
        """Press Tab until the field named ``field_name`` has focus; return how many presses.

        Zero when it has focus already (``autofocus``).
        """
        if self.driver.switch_to.active_element.get_attribute("name") == field_name:
            return 0
        for presses in range(1, limit + 1):
            ActionChains(self.driver).send_keys(Keys.TAB).perform()
            if self.driver.switch_to.active_element.get_attribute("name") == field_name:
                return presses
        raise AssertionError(f"{limit} presses of Tab never reached the field {field_name!r}")

    def type_keys(self, *keys: str) -> None:
        """Keys sent to whatever has focus, as a keyboard does."""
        ActionChains(self.driver).send_keys(*keys).perform()

    def replace_text(self, text: str) -> None:
        """Select all in the focused field (Ctrl+A) and type ``text`` over it."""
        chain = ActionChains(self.driver).key_down(Keys.CONTROL).send_keys("a")
        chain.key_up(Keys.CONTROL).send_keys(text).perform()

    # --- cookies, for requests made outside the browser ------------------------------

    def cookie_header(self) -> str:
        return "; ".join(f"{c['name']}={c['value']}" for c in self.driver.get_cookies())

    # --- artefacts and the console log ----------------------------------------------

    def screenshot(self, label: str) -> Path:
        words = "".join(c if c.isalnum() else " " for c in label).split()
        safe = "-".join(words)[:60]
        path = self.artefacts / f"{next(self.numbers):02d}-{self.size.name}-{safe}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        self.screenshots.append(path)
        return path

    def check_console(self, page_status: int | None = None) -> None:
        """Fail on any SEVERE entry logged since the last check (reading drains the log).

        With ``page_status``, the entry chromium logs for the page's own
        expected error status is not counted.
        """
        errors = severe_entries(self.driver.get_log("browser"))
        if page_status is not None:
            expected = f"{self.driver.current_url} - Failed to load resource: "
            expected += f"the server responded with a status of {page_status}"
            errors = [e for e in errors if not e.startswith(expected)]
        if errors:
            raise ConsoleErrorsFound(
                f"JavaScript console errors on {self.driver.current_url}:\n  " + "\n  ".join(errors)
            )

    def check_accessibility(self) -> None:
        problems = self.driver.execute_script(_ACCESSIBILITY_PROBLEMS)
        if problems:
            raise InaccessiblePage(f"{self.driver.current_url}: " + "; ".join(problems))

    def quit(self) -> None:
        self.driver.quit()


# What the ``browser`` fixture gives a test: ``browser(base_url, size=DESKTOP)``.
OpenBrowser = Callable[..., Browser]


def _is_stale(element: WebElement) -> bool:
    """Whether ``element`` belongs to a page that has been replaced."""
    try:
        element.tag_name  # noqa: B018 (touching it is the check)
    except WebDriverException:
        return True
    return False


def artefact_root(basetemp: Path) -> Path:
    """Where screenshots go: ``$SCOUT_TEST_ARTEFACTS`` (CI uploads it) or the basetemp."""
    configured = os.environ.get("SCOUT_TEST_ARTEFACTS", "").strip()
    return Path(configured) if configured else basetemp / "artefacts"


def unavailable(reason: str) -> None:
    """Skip when chromium cannot run here, but never on CI, where it must run."""
    if os.environ.get("CI"):
        pytest.fail(f"chromium is required on CI: {reason}")
    pytest.skip(f"real-browser test skipped, chromium cannot start here: {reason}")
