"""Debian's chromium driven by selenium through Debian's chromedriver, for the page's tests.

Tests that need it skip cleanly when chromium, chromedriver or selenium is missing. Screenshots go
to `tests/screenshots/` (kept out of the repository by .gitignore) so a person can look at them.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "tests" / "screenshots"
WAIT_S = 15.0

webdriver = pytest.importorskip("selenium.webdriver")

from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)",
)


@contextmanager
def chromium(
    *,
    width: int = 1400,
    height: int = 900,
    javascript: bool = True,
    credentials: tuple[str, str] | None = None,
) -> Iterator[WebDriver]:
    """A fresh headless chromium (its own profile directory, no network beyond the page).
    With `credentials` it sends them with every request, as a browser does once its user has
    answered the sign-in prompt (headless chromium cannot show the prompt)."""
    assert CHROMIUM is not None
    assert CHROMEDRIVER is not None
    with tempfile.TemporaryDirectory(prefix="vs121-chromium-") as profile:
        opts = Options()
        opts.binary_location = CHROMIUM
        for arg in (
            "--headless",
            "--no-sandbox",  # running as root in a container
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
        ):
            opts.add_argument(arg)
        if not javascript:
            opts.add_experimental_option(
                "prefs", {"profile.managed_default_content_settings.javascript": 2}
            )
        driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
        if credentials is not None:
            token = base64.b64encode(":".join(credentials).encode()).decode()
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd(
                "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
            )
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(
    driver: WebDriver, predicate: Callable[[WebDriver], Any], what: str, timeout: float = WAIT_S
) -> Any:
    """Selenium's own wait (it polls the page) with a deadline and a readable failure. A row
    replaced by a live update while being read is read again."""
    wait = WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.1,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )
    try:
        return wait.until(predicate)
    except TimeoutException as exc:
        raise AssertionError(f"timed out waiting for {what}") from exc


def screenshot(driver: WebDriver, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # The highlight of a row just updated fades within a second; the picture shows the steady page.
    driver.execute_script(
        "document.querySelectorAll('.flash').forEach(e => e.classList.remove('flash'));"
    )
    if full_page:
        driver.set_window_size(driver.get_window_size()["width"], 900)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        width = driver.get_window_size()["width"]
        driver.set_window_size(width, max(600, min(int(height) + 120, 4000)))
    driver.save_screenshot(str(path))
    return path
