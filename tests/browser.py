"""Headless Chromium for the browser tests (tests/test_book.py, tests/test_jupyterlab.py).

Debian's ``chromium`` and ``chromium-driver``, driven through Selenium (the docs extra). A test
that needs them skips with the reason where there is none. Each browser gets a fresh profile
folder, removed when it quits, and starts with no network of its own (no background requests, no
component updates, no first-run pages).
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage")


@contextmanager
def chromium(window: str = "1280,2000", logs: bool = False):
    """A headless Chromium (a Selenium driver) in a fresh profile; quits and removes it on exit.

    Skips the test when no browser, driver or Selenium is installed. ``logs``: keep the console
    and the network log (``driver.get_log("browser")``, ``"performance"``).
    """
    if not (CHROMIUM and DRIVER):
        pytest.skip("no headless browser here: install Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (docs extra)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="van-edu-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={window}"):
        options.add_argument(flag)
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
        driver.set_page_load_timeout(120)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
