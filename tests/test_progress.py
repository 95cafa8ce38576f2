"""Progress: a bar on a terminal, log lines on a clock elsewhere, a closing summary, --json."""

from __future__ import annotations

import json
import re
from io import StringIO
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import backfill
from backfill import events
from backfill.progress import BarReporter, LogReporter
from backfill.result import Result
from example_site.blog.models import BlogPost
from tests.conftest import RunManage
from tests.support import committing, postgres_only, run, seed_posts

pytestmark = committing


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def _chunk(total: int, changed: int, batch: int = 100) -> events.ChunkDone:
    return events.ChunkDone(None, total, batch, changed, 0.1, batch, total, changed, total // batch)


def test_log_reporter_writes_a_line_per_interval_of_its_clock() -> None:
    clock, stream = Clock(), StringIO()
    report = LogReporter(stream, interval=10.0, clock=clock)

    report(
        events.Started(
            "fix", "blog.BlogPost", "iterate", "default (sqlite x)", 1000, 0, False, None
        )
    )
    for seconds, done in [(4, 100), (8, 200), (12, 300), (16, 400), (21, 500), (30, 600)]:
        clock.now = 1000.0 + seconds
        report(_chunk(done, done // 2))
    report(events.Notice("only at verbosity 2"))
    report(events.Waiting("rate cap 50 rows/s", 2.0))

    assert stream.getvalue().splitlines() == [
        "backfill 'fix': iterate on blog.BlogPost at default (sqlite x), ~1,000 rows",
        # 12 s in: 300 rows at 25 rows/s, 700 left: 28 s.
        "300/~1,000 rows (30.0%), changed 150, 25 rows/s, batch 100, ETA 0:28",
        # Not at 16 or 21 s: 10 s after the last line, at 30 s.
        "600/~1,000 rows (60.0%), changed 300, 20 rows/s, batch 100, ETA 0:20",
        "waiting 2.0 s: rate cap 50 rows/s",
    ]


def test_log_reporter_on_a_resumed_run_counts_the_rate_from_where_it_resumed() -> None:
    clock, stream = Clock(), StringIO()
    report = LogReporter(stream, verbosity=2, interval=5.0, clock=clock)

    report(events.Started("fix", "blog.BlogPost", "cursor", "db", 2000, 1000, True, 1000))
    clock.now += 10
    report(_chunk(1500, 0, batch=500))
    report(events.Notice("Each chunk streams through a server-side cursor."))

    assert stream.getvalue().splitlines() == [
        "backfill 'fix': cursor on blog.BlogPost at db, ~2,000 rows, resuming after 1000",
        "1,500/~2,000 rows (75.0%), changed 0, 50 rows/s, batch 500, ETA 0:10",
        "Each chunk streams through a server-side cursor.",
    ]


def test_log_reporter_steps_with_a_real_run() -> None:
    """The engine's events through the reporter: the transform moves the clock 1 s per row."""
    seed_posts(12)
    clock, stream = Clock(), StringIO()

    def slow(post: BlogPost) -> None:
        clock.now += 1.0
        post.author = "x"

    backfill.iterate(
        BlogPost.objects.all(),
        transform=slow,
        batch_size=3,
        reporter=LogReporter(stream, interval=5.0, clock=clock),
    )

    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("backfill 'iterate blog.BlogPost ")
    # Chunks end at 3, 6, 9, 12 s; a line at 6 s and at 12 s. (The total is PostgreSQL's
    # estimate, which need not be exact.)
    assert [re.sub(r"/~[\d,]+ rows \([\d.]+%\)|, batch.*", "", line) for line in lines[1:]] == [
        "6, changed 6, 1 rows/s",
        "12, changed 12, 1 rows/s",
    ]


def test_bar_reporter_shows_rows_rate_and_eta_against_the_estimate() -> None:
    stream = StringIO()
    report = BarReporter(stream)

    report(events.Started("fix", "blog.BlogPost", "iterate", "db", 1000, 0, False, None))
    report(_chunk(250, 20, batch=250))
    report(events.Waiting("replica lag", 2.0))
    report(_chunk(500, 40, batch=250))
    report(events.Finished(Result("fix", "blog.BlogPost", "iterate", "default", "stopped")))

    text = stream.getvalue()
    assert "waiting 2.0 s: replica lag\n" in text
    # tqdm pads a line with spaces when it is shorter than the one before (a faster rate
    # prints fewer digits): they erase the old text on a terminal and are not part of the bar.
    final = text.rstrip("\n").split("\r")[-1].rstrip(" ")
    assert re.fullmatch(
        r"blog\.BlogPost:  50%\|#+ *\| 500/1\.00k \[\d\d:\d\d<\d\d:\d\d, [\d.]+[kM]? rows/s, "
        r"batch=250, changed=40\]",
        final,
    ), final


@pytest.mark.parametrize(
    ("estimate", "scanned", "shown"),
    # Low: the table grew since ANALYZE. High: a table just rewritten holds a dead version of
    # every row, so its estimate is about double.
    [(100, 150, " 150/150 "), (1700, 1000, " 1.00k/1.00k ")],
    ids=["estimate low", "estimate high"],
)
def test_a_completed_run_ends_the_bar_at_100_percent_of_the_rows_it_found(
    estimate: int, scanned: int, shown: str
) -> None:
    stream = StringIO()
    report = BarReporter(stream)

    report(events.Started("fix", "blog.BlogPost", "iterate", "db", estimate, 0, False, None))
    report(_chunk(scanned, 0, batch=scanned))
    report(events.Finished(Result("fix", "blog.BlogPost", "iterate", "default", "completed")))

    final = stream.getvalue().split("\r")[-1]
    assert "100%|" in final
    assert shown in final


def test_auto_progress_is_a_bar_on_a_terminal_and_log_lines_elsewhere() -> None:
    seed_posts(5)

    on_terminal = Terminal()
    bar = run("backfill_cursor", "blog.BlogPost", "--set", "author=a", stderr=on_terminal)
    logged = run("backfill_cursor", "blog.BlogPost", "--set", "author=b")

    assert bar.returncode == logged.returncode == 0
    assert re.search(r"blog\.BlogPost: +\d+%\|", on_terminal.getvalue())
    assert "rows/s" in on_terminal.getvalue()
    assert logged.stderr.startswith("backfill 'cursor blog.BlogPost set author ")
    assert "%|" not in logged.stderr


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("bar", r"blog\.BlogPost: +\d+%\|"), ("log", r"^backfill '"), ("none", r"^$")],
)
def test_progress_option_chooses_the_reporter(mode: str, expected: str) -> None:
    seed_posts(5)

    outcome = run("backfill_iterate", "blog.BlogPost", "--set", "author=a", "--progress", mode)

    assert outcome.returncode == 0
    assert re.search(expected, outcome.stderr), outcome.stderr
    assert outcome.stdout.startswith("Completed run ")


def test_closing_summary() -> None:
    seed_posts(7)

    outcome = run("backfill_update", "blog.BlogPost", "--set", "author=a", "--batch-size", "3")

    lines = outcome.stdout.splitlines()
    assert re.fullmatch(r"Completed run 'update blog\.BlogPost set author [0-9a-f]{8}'\.", lines[0])
    assert re.fullmatch(
        r"scanned 7 rows, changed 7, 3 chunks in \d+\.\d s \([\d,]+ rows/s\)", lines[1]
    )
    assert len(lines) == 2


def test_json_prints_the_summary_as_one_object() -> None:
    seed_posts(7)

    outcome = run(
        "backfill_iterate", "blog.BlogPost", "--only", "author", "--batch-size", "3", "--json"
    )

    summary: dict[str, Any] = json.loads(outcome.stdout)
    assert summary["status"] == "completed"
    assert (summary["rows_scanned"], summary["rows_changed"], summary["chunks"]) == (7, 7, 3)
    assert summary["strategy"] == "iterate" and summary["model"] == "blog.BlogPost"
    assert summary["database"] == "default"
    assert summary["elapsed"] >= 0 and summary["rate"] >= 0
    assert summary["name"].startswith("iterate blog.BlogPost normalize_author ")
    assert "plan" not in summary


def test_verbosity_0_prints_nothing_on_success() -> None:
    seed_posts(5)

    outcome = run("backfill_update", "blog.BlogPost", "--set", "author=a", "-v", "0")

    assert outcome == type(outcome)(0, "", "")
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"a"}


def test_verbosity_0_still_prints_errors(run_manage: RunManage) -> None:
    quiet = run_manage("backfill_update", "blog.BlogPost", "--set", "autor=a", "-v", "0")

    assert quiet.returncode == 2
    assert quiet.stdout == ""
    assert quiet.stderr.splitlines() == [
        "CommandError: Unknown field 'autor' on blog.BlogPost (--set). Did you mean 'author' or "
        "'author_slug'? Fields: id, title, author, author_slug, status."
    ]


@postgres_only
def test_postgres_total_is_the_planner_estimate_not_a_count() -> None:
    pks = seed_posts(50)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE blog_blogpost")
    # reltuples stays 50 until the next ANALYZE: a COUNT(*) would say 40.
    BlogPost.objects.filter(pk__in=pks[:10]).delete()

    with CaptureQueriesContext(connection) as queries:
        outcome = run("backfill_update", "blog.BlogPost", "--set", "author=a", "--progress", "log")

    assert outcome.returncode == 0
    assert ", ~50 rows" in outcome.stderr.splitlines()[0]
    counts = [
        # A count over the table itself; chunk planning counts only the keys of one chunk.
        q["sql"]
        for q in queries.captured_queries
        if re.search(r'COUNT\(\*\) FROM "?blog_blogpost', q["sql"])
    ]
    assert counts == []
