"""Headless Chromium through selenium: screenshots of report pages (and the browser tests).

Needs ``pip install selenium`` and the system ``chromium`` and ``chromedriver`` (Debian:
``apt-get install chromium chromium-driver``). The driver found on ``PATH`` is always used, so
selenium never tries to download one; the browser runs with ``--headless=new --no-sandbox
--disable-dev-shm-usage`` so it also works as root and in containers with a small ``/dev/shm``.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from reconguard.errors import ConfigError, DataError
from reconguard.files import atomic_write

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def missing_requirement() -> str | None:
    """Why no headless browser can be started here (``None`` when selenium, Chromium and
    chromedriver are all available)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if _browser_binary() is None:
        return "no Chromium/Chrome binary on PATH (apt-get install chromium)"
    if shutil.which("chromedriver") is None:
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    return None


def _browser_binary() -> str | None:
    return next((found for name in _BROWSERS if (found := shutil.which(name))), None)


@contextmanager
def headless_chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium ``selenium.webdriver.Chrome`` with a ``width`` x ``height`` window,
    quit on exit.

    Raises:
        ConfigError: selenium, Chromium or chromedriver is missing.
    """
    reason = missing_requirement()
    if reason is not None:
        raise ConfigError(f"headless browser unavailable: {reason}")
    from selenium import webdriver  # optional dependency (extra 'browser')
    from selenium.webdriver.chrome.service import Service  # optional dependency (extra 'browser')

    options = webdriver.ChromeOptions()
    options.binary_location = _browser_binary()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    service = Service(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


def screenshot(
    html_path: str | os.PathLike,
    png_path: str | os.PathLike,
    width: int = 1280,
    height: int = 900,
    *,
    full_page: bool = False,
) -> Path:
    """Save a PNG screenshot of a local HTML page: its top ``width`` x ``height`` CSS pixels, or
    the whole page ``width`` wide when ``full_page``.

    Args:
        html_path: The page (e.g. ``OUTDIR/report/index.html``).
        png_path: Destination PNG; written atomically, parent directories created.
        width: Viewport width in CSS pixels.
        height: Viewport height in CSS pixels (the minimum height when ``full_page``).
        full_page: Capture the whole scrollable page instead of the first screen.

    Returns:
        ``png_path``.

    Raises:
        DataError: ``html_path`` does not exist.
        ConfigError: No headless browser (see :func:`missing_requirement`), or a size < 1.
    """
    source, target = Path(html_path).resolve(), Path(png_path)
    if not source.is_file():
        raise DataError(f"{html_path}: no such page")
    if width < 1 or height < 1:
        raise ConfigError(f"screenshot size must be positive, got {width}x{height}")
    with headless_chromium(width, height) as driver:
        driver.get(source.as_uri())
        _set_viewport(driver, width, height)
        if full_page:
            _set_viewport(driver, width, max(height, driver.execute_script(_PAGE_HEIGHT)))
        return atomic_write(target, driver.get_screenshot_as_png())


_PAGE_HEIGHT = "return Math.ceil(document.documentElement.scrollHeight);"


def _set_viewport(driver: Any, width: int, height: int) -> None:
    # the window size includes browser chrome in some versions: pin the viewport itself
    metrics = {"width": width, "height": int(height), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
