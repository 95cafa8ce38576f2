"""The admin's run page for watching: ETA, rate over time, why it waits, workers, resume."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import backfill
from backfill import history
from backfill.admin import duration, rate_chart
from backfill.models import Chunk, Run, RunWait, Worker
from example_site.blog.models import BlogPost
from tests.run_support import FakeClock
from tests.support import committing, seed_posts

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the pace, stepped by hand ---------------------------------------------------------------


def test_pace_samples_spread_rows_over_time_and_eta_uses_the_recent_rate() -> None:
    # 100 rows per chunk: one a second for 10 s, then one every 5 s for 50 s.
    points = [(at(s), 100) for s in range(1, 11)] + [(at(10 + 5 * i), 100) for i in range(1, 11)]

    pace = history.measure(points, started=T0, left=1000, samples=6)

    assert [round(s.rate) for s in pace.samples] == [100, 20, 20, 20, 20, 20]
    assert pace.samples[-1].at == at(60)
    # The last 20 chunks, measured from the first of them: 19 * 100 rows in 59 s.
    assert pace.recent_rate == pytest.approx(1900 / 59)
    assert pace.eta_seconds == pytest.approx(1000 / (1900 / 59))


def test_pace_eta_follows_a_slowdown() -> None:
    fast = [(at(s), 100) for s in range(1, 41)]
    slow = [(at(40 + 10 * i), 100) for i in range(1, 22)]

    pace = history.measure(fast + slow, started=T0, left=500)

    # Only the slow chunks count: 10 rows/s, 50 s left.
    assert pace.recent_rate == pytest.approx(10.0)
    assert pace.eta_seconds == pytest.approx(50.0)


def test_pace_of_no_or_one_chunk() -> None:
    assert history.measure([], started=T0, left=10) == history.Pace((), None, None)
    one = history.measure([(at(4), 200)], started=T0, left=200)
    assert one.recent_rate == 50.0 and one.eta_seconds == 4.0
    assert history.measure([(at(4), 200)], started=None, left=None).recent_rate is None


def test_duration_words() -> None:
    assert [duration(s) for s in (45, 600, 12_000, 200_000)] == [
        "45 s", "10 min", "3 h 20 min", "2 d 7 h",
    ]  # fmt: skip


def test_rate_chart_is_an_inline_svg_scaled_to_the_peak() -> None:
    samples = [history.Sample(at(i), rate) for i, rate in enumerate([0.0, 50.0, 100.0])]

    svg = rate_chart(samples)

    assert svg.startswith('<svg class="backfill-rate-chart" role="img"')
    assert "<script" not in svg
    line = re.search(r'<polyline points="([^"]+)"', svg)
    assert line is not None
    assert line.group(1) == "0.0,60.0 180.0,31.0 360.0,2.0"
    assert "peak 100 rows/s" in svg
    assert rate_chart(samples[:1]) == "not enough chunks yet"


# -- the wait reason, recorded by a real run ---------------------------------------------------


@committing
def test_a_run_records_why_it_waits_and_clears_it_after() -> None:
    seed_posts(20)
    clock = FakeClock()
    seen: list[tuple[str, str]] = []

    def meanwhile(seconds: float) -> None:
        seen.extend(RunWait.objects.values_list("name", "reason"))

    clock.on_sleep = meanwhile
    backfill.update(
        BlogPost.objects.all(),
        set={"author": "a"},
        batch_size=10,
        max_rate=5,
        clock=clock,
        name="capped",
    )

    assert seen and set(seen) == {("capped", "rate cap 5 rows/s")}
    assert not RunWait.objects.exists()


# -- the page -------------------------------------------------------------------------------


def make_watched_run(**fields: Any) -> Run:
    now = timezone.now()
    run = Run.objects.create(
        name="iterate blog.BlogPost normalize_author 9c41d2b7",
        strategy="iterate",
        model_label="blog.BlogPost",
        spec={"transform": "normalize_author", "save": False},
        status=Run.Status.RUNNING,
        estimated_rows=100_000,
        rows_scanned=30_000,
        rows_changed=12_000,
        chunks_done=30,
        work_seconds=25.0,
        started_at=now - timedelta(seconds=300),
        heartbeat_at=now,
        **fields,
    )
    RunWait.objects.create(
        name=run.name,
        reason="db-replica-1 lags 4.20 s > --max-replica-lag 2 s; pausing",
        since=now - timedelta(seconds=20),
    )
    # A chunk every 10 s, the last 20 of 1,000 rows: 100 rows/s lately; 70,000 rows left:
    # 700 s. The first ten were faster, then slower: the chart has a shape.
    Chunk.objects.bulk_create(
        Chunk(
            run=run,
            lo=str(i * 1000) if i else None,
            hi=str((i + 1) * 1000),
            status=Chunk.Status.DONE,
            rows_scanned=1000 if i >= 10 else 1600 - 100 * i,
            finished_at=now - timedelta(seconds=300 - 10 * (i + 1)),
            worker="app-1:4242",
        )
        for i in range(30)
    )
    for host, pid in (("app-1", 4242), ("app-2", 77)):
        Worker.objects.create(run=run, host=host, pid=pid, heartbeat_at=now)
    return run


@pytest.fixture
def viewer() -> Client:
    user = User.objects.create_user("watcher", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_run"))
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_run_page_shows_eta_rate_chart_wait_workers_and_resume_command(viewer: Client) -> None:
    run = make_watched_run()

    page = viewer.get(reverse("admin:backfill_run_change", args=[run.pk])).content.decode()

    assert "12 min at 100 rows/s (the last 20 chunks&#x27; pace)" in page
    assert '<svg class="backfill-rate-chart"' in page
    assert re.search(
        r"db-replica-1 lags 4.20 s &gt; --max-replica-lag 2 s; pausing \(since 2\d s ago\)", page
    )
    assert "2 working: app-1 (pid 4242), app-2 (pid 77)" in page
    assert (
        "<code>python manage.py backfill_iterate blog.BlogPost --transform normalize_author "
        "--name &#x27;iterate blog.BlogPost normalize_author 9c41d2b7&#x27;</code>"
    ) in page


@pytest.mark.django_db
def test_run_page_of_a_finished_run_has_no_eta_and_no_wait(viewer: Client) -> None:
    run = make_watched_run()
    Run.objects.filter(pk=run.pk).update(status=Run.Status.COMPLETED)
    Worker.objects.all().delete()

    page = viewer.get(reverse("admin:backfill_run_change", args=[run.pk])).content.decode()

    eta = re.search(r"ETA:</label>\s*<div class=\"readonly\">([^<]*)</div>", page)
    assert eta is not None and eta.group(1) == "-"
    assert "none working" in page
    assert "pausing" not in page
    assert '<svg class="backfill-rate-chart"' in page


@committing
def test_a_waiting_run_works_on_a_ledger_migrated_only_to_0001() -> None:
    """A data migration that depends on backfill 0001 runs before 0003 creates RunWait."""
    seed_posts(20)
    call_command("migrate", "backfill", "0001", verbosity=0)
    try:
        result = backfill.update(
            BlogPost.objects.all(),
            set={"author": "a"},
            batch_size=10,
            max_rate=5,
            clock=FakeClock(),
        )
    finally:
        call_command("migrate", "backfill", verbosity=0)

    assert result.status == "completed"
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"a"}
