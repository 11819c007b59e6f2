"""Headless Chromium for the web view's bench scripts (bench/ui.py, bench/ui_screens.py):
Debian's ``chromium`` driven through Debian's ``chromium-driver`` by Selenium, never a
downloaded browser or driver (Selenium Manager is kept offline), and a login through the
web view's form."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def missing() -> str | None:
    """Why no browser can start here, or None."""
    absent = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if absent:
        return f"{' and '.join(absent)} missing (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 900, page_load: str = "normal") -> Iterator[Any]:
    """A WebDriver session on a headless Chromium with a temp profile (removed after)."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="ci-pool-bench-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.page_load_strategy = page_load
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
                f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except Exception:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    try:
        driver.set_page_load_timeout(120)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def login(driver: Any, base: str, token: str, timeout: float = 30) -> None:
    """Log in through the form; returns on the pool page."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/ui/login")
    driver.find_element(By.NAME, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, '[data-test="login"]').click()
    deadline = time.monotonic() + timeout
    while not driver.current_url.rstrip("/").endswith("/ui"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"login did not reach /ui/ (at {driver.current_url})")
        time.sleep(0.05)
