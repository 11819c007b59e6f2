"""A headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium, one
for the whole test run. Missing here, its tests skip with the reason; under CI=true they
fail."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_options(profile: Path, width: int = 1280, height: int = 900) -> Any:
    """Headless Chromium options: its own profile dir, no sandbox (the tests run as root),
    no GPU, nothing fetched from outside (no sync, no component updates)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    return options


def start_chromium(profile: Path, **size: int) -> Any:
    """A WebDriver session on Debian's chromedriver. The driver's path is given, and
    Selenium Manager is told to stay offline, so nothing is downloaded."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver = webdriver.Chrome(
        service=Service(executable_path=CHROMEDRIVER), options=chromium_options(profile, **size)
    )
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the run; its profile dir is removed at the end."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    need(not missing, f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        need(False, "selenium is not installed (pip install -e '.[test]')")
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    try:
        driver = start_chromium(profile)
    except Exception:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
