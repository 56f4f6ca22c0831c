"""Fixtures of the admin's browser tests: headless Chromium driven by Selenium against
pytest-django's live server (a ``StaticLiveServerTestCase`` server: static files served).

Chromium and its driver are the Debian packages (``apt-get install chromium
chromium-driver``; ``.ci/run`` installs them), Selenium is pinned in
``requirements-dev.txt``. Nothing is downloaded at run time: the driver is given by path.

Processing runs in-process (Celery eager) so a test sees its rows ready when the request
returns, and no message reaches the session's Redis (where the integration tests' worker
would pick it up with other settings). Originals stay in moto's primary bucket (the
field's storage); the public bucket is a folder served at ``/cdn/`` by the live server, so
the previews are real images the browser loads.

Screenshots go to ``$SCREENSHOT_DIR``, by default ``var/screenshots`` of the checkout
(kept after the run, unlike the harness's temporary folder); the session ends by saying
where.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.services import REPO

CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOT_DIR = Path(os.environ.get("SCREENSHOT_DIR") or REPO / "var" / "screenshots")
WAIT = 20  # seconds; pages here render in well under one

_saved: list[Path] = []


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium per module (a fresh one per test costs ~1 s; kept for the
    session, it would sit in memory through the rest of the suite)."""
    if not Path(CHROMEDRIVER).exists():
        pytest.fail(
            f"no {CHROMEDRIVER}: install Chromium and its driver "
            "(apt-get install -y chromium chromium-driver), or set CHROMEDRIVER"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",  # a small /dev/shm crashes tabs
        "--window-size=1280,1000",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def blank_page(browser: WebDriver) -> Iterator[None]:
    """Leave each test on a blank page: a page still polling would reach the live server
    after the test's database access ended."""
    yield
    browser.get("about:blank")


@pytest.fixture(autouse=True)
def browser_settings(tmp_path: Path, clean_buckets: None) -> Iterator[Path]:
    """The public bucket in a folder served at /cdn/, CDN invalidations recorded in a
    file, tasks in-process. Returns the folder of the public bucket."""
    from workers import app

    public = tmp_path / "public"
    public.mkdir()
    storages = {
        **settings.STORAGES,
        "public": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(public), "base_url": "/cdn/", "allow_overwrite": True},
        },
    }
    pipeline = {
        **settings.PIPELINE,
        "CDN": {
            "BACKEND": "pipeline.cdn.backends.LocalRecorderBackend",
            "OPTIONS": {"PATH": str(tmp_path / "cdn-invalidations.jsonl")},
        },
    }
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        with override_settings(
            STORAGES=storages, PIPELINE=pipeline, ROOT_URLCONF="tests.browser.urls"
        ):
            yield public
    finally:
        app.conf.task_always_eager = eager


# --- helpers ---------------------------------------------------------------------------


def wait(browser: WebDriver, timeout: float = WAIT) -> WebDriverWait:
    return WebDriverWait(browser, timeout)


def find(browser: WebDriver, css: str) -> WebElement:
    return wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def click_and_wait(browser: WebDriver, element: WebElement) -> None:
    """Click something that loads a new page, and wait until it has (as Django's
    ``AdminSeleniumTestCase.wait_page_loaded``)."""
    old = browser.find_element(By.TAG_NAME, "html")
    element.click()
    wait(browser).until(ec.staleness_of(old))
    wait(browser).until(lambda b: b.execute_script("return document.readyState") == "complete")


def login(browser: WebDriver, base_url: str, username: str, password: str) -> None:
    """Log in through the admin's login form."""
    browser.delete_all_cookies()
    browser.get(f"{base_url}/admin/login/?next=/admin/")
    find(browser, "#id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(password)
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "input[type=submit]"))
    find(browser, "#user-tools")


def messages(browser: WebDriver) -> list[str]:
    return [li.text for li in browser.find_elements(By.CSS_SELECTOR, "ul.messagelist li")]


def image_loaded(browser: WebDriver, img: WebElement) -> int:
    """Wait until ``img`` has loaded (scrolled into view first: previews load lazily);
    returns its natural width, 0 when it is broken."""
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
    wait(browser).until(lambda b: b.execute_script("return arguments[0].complete", img))
    return int(browser.execute_script("return arguments[0].naturalWidth", img))


def send_from_page(
    browser: WebDriver, url: str, data: dict[str, Any] | None = None, *, method: str = "POST"
) -> int:
    """Send a request from the logged-in page, with the CSRF token a form would carry (if
    the cookie is there); returns the HTTP status (302 for a redirect). What a user
    without the buttons could still send."""
    script = """
        const [url, method, data, done] = arguments;
        const token = (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || '';
        let body;
        if (method !== 'GET') {
            body = new FormData();
            for (const [k, v] of Object.entries(data)) {
                for (const one of [].concat(v)) body.append(k, one);
            }
        }
        fetch(url, {method, body, credentials: 'same-origin', redirect: 'manual',
                    headers: token ? {'X-CSRFToken': token} : {}})
            .then((r) => done(r.type === 'opaqueredirect' ? 302 : r.status))
            .catch(() => done(-1));
    """
    return int(browser.execute_async_script(script, url, method, data or {}))


def screenshot(browser: WebDriver, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of the page (the whole page by default) as a test artifact."""
    if not _saved and SCREENSHOT_DIR.is_dir() and "SCREENSHOT_DIR" not in os.environ:
        shutil.rmtree(SCREENSHOT_DIR)  # an earlier run's shots would pass for this one's
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOT_DIR / f"{name}.png"
    if full_page:
        # Grow the window to the page's height for one shot, then restore it.
        size = browser.get_window_size()
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(size["width"], max(size["height"], min(int(height) + 120, 4000)))
        try:
            browser.save_screenshot(str(target))
        finally:
            browser.set_window_size(size["width"], size["height"])
    else:
        browser.save_screenshot(str(target))
    _saved.append(target)
    return target


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _saved:
        terminalreporter.write_line(
            f"browser tests: {len(_saved)} screenshot(s) in {SCREENSHOT_DIR}"
        )
