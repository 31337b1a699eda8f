"""The console in English and in French in a real browser: French strings are longer,
and no page may overflow sideways or cut a button's text, on a desktop or a phone.

The stack is :mod:`test_console`'s (a real sidecar and Alertmanager, the demo
storm), with ``language: fr``. A user of their own picks French on ``/console/preferences``; an
English user reads the same pages. Every page's screenshot is kept as an
artefact; ``SCOUT_README_SCREENSHOT`` names a PNG to write the French incident
page to (the README's picture is taken so).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.ai_sidecar.console.browser.harness import (
    DESKTOP,
    PHONE,
    Browser,
    OpenBrowser,
    WindowSize,
)
from tests.ai_sidecar.console.browser.test_console import (
    SIDECAR_CONFIG,
    ConsoleStack,
    add_user,
    incident_path,
    running_stack,
    sign_in,
)

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    """:mod:`test_console`'s stack with ``language: fr``: analyses and reasons in French,
    which the English reader sees as made (the page's own words are theirs)."""
    with running_stack(tmp_path_factory, SIDECAR_CONFIG + "language: fr\n") as started:
        yield started


# Elements that scroll on purpose (tables in a .table-wrap) are not overflow.
# Inline boxes have no client width of their own and are judged by their parent.
_OVERFLOWING = """
const found = [];
const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
  + (typeof e.className === 'string' && e.className
     ? '.' + e.className.trim().split(/\\s+/).join('.') : '');
for (const e of document.querySelectorAll('body *')) {
  const style = getComputedStyle(e);
  if (style.display === 'none' || style.visibility === 'hidden' || e.clientWidth === 0) continue;
  if (e.closest('.visually-hidden, .skip')) continue;
  const scrolls = style.overflowX === 'auto' || style.overflowX === 'scroll';
  if (!scrolls && !e.closest('.table-wrap') && e.scrollWidth > e.clientWidth + 1) {
    found.push('overflows: ' + name(e) + ' ' + e.scrollWidth + '>' + e.clientWidth
      + ' "' + e.innerText.slice(0, 60) + '"');
  }
}
for (const b of document.querySelectorAll('button, select, input[type=submit]')) {
  if (b.clientWidth && b.scrollWidth > b.clientWidth + 1) {
    found.push('cut: ' + name(b) + ' "' + (b.innerText || b.value).slice(0, 60) + '"');
  }
}
if (document.documentElement.scrollWidth > window.innerWidth) {
  found.push('page wider than the window: ' + document.documentElement.scrollWidth);
}
return found;
"""

# A button too narrow for its words and a box its text spills out of (styled from
# script: the console's CSP refuses style attributes).
_PLANT = """
const main = document.querySelector('main');
for (const [tag, text] of [['button', 'Prendre en compte'], ['p', 'Plus anciens et plus longs']]) {
  const e = document.createElement(tag);
  e.textContent = text;
  e.style.width = '40px';
  e.style.whiteSpace = 'nowrap';
  if (tag === 'button') e.style.overflow = 'hidden';
  main.appendChild(e);
}
"""

FRENCH_USER = "francoise"
ENGLISH_USER = "edward"
PASSWORD = "une phrase de passe assez longue"
# The pages a reader goes through, and a word each must show in French.
PAGES = {
    "/console/incidents": "Prise en charge",
    "incident": "Chronologie",
    "/console/anomalies": "Anomalies",
    "/console/reports": "Télécharger ce rapport",
    "/console/preferences": "La langue dans laquelle vous lisez la console",
}


def layout_problems(window: Browser) -> list[str]:
    return list(window.driver.execute_script(_OVERFLOWING))


def signed_in(browser: OpenBrowser, console: ConsoleStack, user: str, size: WindowSize) -> Browser:
    if user not in console.passwords:
        add_user(console.data_dir, user, "operator", PASSWORD)
        console.passwords[user] = PASSWORD
    window = browser(console.url, size)
    sign_in(window, console, user)
    return window


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=lambda s: s.name)
def test_both_languages_fit_the_window(
    stack: ConsoleStack,
    browser: OpenBrowser,
    size: WindowSize,
) -> None:
    french = signed_in(browser, stack, FRENCH_USER, size)
    french.open("/console/preferences")
    french.submit("form#preferences", {"language": "fr"})
    assert "Votre langue est enregistrée." in french.status_message()
    english = signed_in(browser, stack, ENGLISH_USER, size)
    problems: dict[str, list[str]] = {}
    for path, word in PAGES.items():
        page = incident_path(stack) if path == "incident" else path
        for language, window in (("fr", french), ("en", english)):
            window.open(page)
            assert window.find("html").get_attribute("lang") == language
            if language == "fr":
                assert word in window.find("main").text, (page, word)
            found = layout_problems(window)
            if found:
                problems[f"{language} {page}"] = found
    assert problems == {}
    # The check sees a cut button and a box its text spills out of.
    french.driver.execute_script(_PLANT)
    planted = layout_problems(french)
    assert any(p.startswith("cut: button") for p in planted), planted
    assert any(p.startswith("overflows: p") for p in planted), planted
    readme = os.environ.get("SCOUT_README_SCREENSHOT")
    if readme and size is DESKTOP:
        french.open(incident_path(stack))
        french.driver.save_screenshot(readme)
        # A palette of 64 colours: text and flat colours stay sharp, the file small.
        Image.open(readme).quantize(colors=64).save(readme, optimize=True)
