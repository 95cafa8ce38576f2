"""The runs admin in a real headless Chromium: log in, open the list, click Pause.

Needs Debian's chromium and chromium-driver (``.ci/run`` installs them); skipped, saying so,
where they are missing. The screenshots land in tests/artifacts/ (admin-runs.png, admin-run.png,
admin-run-watch.png).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from backfill.models import Run, Worker

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium is not installed: apt-get install chromium chromium-driver (.ci/run does)",
)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",  # as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1600,800",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def make_run(name: str, status: str, **fields: Any) -> Run:
    now = timezone.now()
    run = Run.objects.create(
        name=name,
        strategy=fields.pop("strategy", "iterate"),
        model_label="blog.BlogPost",
        spec=fields.pop("spec", {"transform": "normalize_author", "save": False}),
        status=status,
        started_at=now - timedelta(minutes=12),
        heartbeat_at=now - timedelta(seconds=2),
        **fields,
    )
    if status == Run.Status.RUNNING:
        assert run.heartbeat_at is not None
        Worker.objects.create(run=run, host="app-1", pid=4242, heartbeat_at=run.heartbeat_at)
    return run


def test_staff_pause_a_run_from_the_runs_list(live_server: Any, browser: WebDriver) -> None:
    make_run(
        "update blog.BlogPost set author 5f1c2a9e",
        Run.Status.COMPLETED,
        strategy="update",
        spec={"set": {"author": "anon"}},
        estimated_rows=4_000_000,
        rows_scanned=4_000_000,
        rows_changed=3_998_211,
        work_seconds=17.2,
    )
    make_run(
        "iterate blog.BlogPost fix titles 0b7d1e44",
        Run.Status.PAUSED,
        estimated_rows=4_000_000,
        rows_scanned=1_250_000,
        rows_changed=40_112,
        work_seconds=9.3,
        requested="pause",
        requested_by="alice",
    )
    running = make_run(
        "iterate blog.BlogPost normalize_author 9c41d2b7",
        Run.Status.RUNNING,
        estimated_rows=4_000_000,
        rows_scanned=2_600_000,
        rows_changed=812_455,
        work_seconds=19.4,
    )
    user = User.objects.create_user("ops", password="correct horse", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_run", "control_run"]))
    wait = WebDriverWait(browser, 20)

    browser.get(f"{live_server.url}/admin/login/?next=/admin/backfill/run/")
    browser.find_element(By.NAME, "username").send_keys("ops")
    browser.find_element(By.NAME, "password").send_keys("correct horse")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(expected_conditions.title_contains("Select run to view"))
    row = browser.find_element(By.XPATH, f"//tr[.//*[text()='{running.name}']]")
    assert "65.0%" in row.text
    # The admin's stylesheet was served: the page is styled, not bare HTML.
    header = browser.find_element(By.ID, "header")
    assert header.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"

    row.find_element(By.XPATH, ".//button[text()='Pause']").click()

    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
    assert "Pause requested for 1 run(s)" in browser.find_element(By.CLASS_NAME, "messagelist").text
    running.refresh_from_db()
    assert (running.requested, running.requested_by) == ("pause", "ops")
    # Once asked, the row offers no second Pause.
    row = browser.find_element(By.XPATH, f"//tr[.//*[text()='{running.name}']]")
    assert not row.find_elements(By.XPATH, ".//button[text()='Pause']")
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "admin-runs.png"))

    row.find_element(By.LINK_TEXT, running.name).click()
    wait.until(expected_conditions.title_contains("View run"))
    page = browser.find_element(By.ID, "content").text
    assert "running (pause requested)" in page
    assert "pause by ops" in page
    assert "1 live" not in page and "app-1" in page
    assert browser.find_elements(By.XPATH, "//button[text()='Cancel']")
    browser.set_window_size(1600, 1500)
    assert browser.save_screenshot(str(ARTIFACTS / "admin-run.png"))


def test_staff_watch_a_run_on_its_page(live_server: Any, browser: WebDriver) -> None:
    """ETA, the rate chart, why it waits, its workers and the resume command, as rendered."""
    from tests.test_run_page import make_watched_run

    run = make_watched_run()
    User.objects.create_superuser("root", password="correct horse")
    wait = WebDriverWait(browser, 20)

    browser.get(f"{live_server.url}/admin/login/?next=/admin/backfill/run/{run.pk}/change/")
    browser.find_element(By.NAME, "username").send_keys("root")
    browser.find_element(By.NAME, "password").send_keys("correct horse")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(expected_conditions.title_contains("View run"))

    page = browser.find_element(By.ID, "content").text
    assert "12 min at 100 rows/s" in page
    assert "db-replica-1 lags 4.20 s > --max-replica-lag 2 s; pausing (since" in page
    assert "2 working: app-1 (pid 4242), app-2 (pid 77)" in page
    assert "python manage.py backfill_iterate blog.BlogPost --transform normalize_author" in page
    chart = browser.find_element(By.CSS_SELECTOR, "svg.backfill-rate-chart")
    # Drawn, not just present: the browser laid the SVG out at its size, with its line.
    assert chart.size["width"] == 360 and chart.size["height"] > 60
    assert chart.find_element(By.TAG_NAME, "polyline").size["width"] > 300
    assert "peak 160 rows/s" in chart.text
    # Tall enough for the whole page, down to the resume command.
    browser.set_window_size(1600, 2000)
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "admin-run-watch.png"))
