"""Watching a run: JSON lines, Django signals, Prometheus metrics, OpenTelemetry spans."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any, cast

import pytest
from django.dispatch import Signal
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY

import backfill
from backfill import events, lifecycle, metrics
from backfill.exceptions import ChunkFailed, Interrupted, TransformFailed
from backfill.models import Run
from backfill.progress import JsonReporter
from backfill.result import Result
from backfill.stopping import StopFlag
from example_site.blog.models import BlogPost
from tests.conftest import MANAGE_PY, SpawnManage, manage_env
from tests.run_support import FAST, SLOW, make_counters, wait_for
from tests.support import committing, postgres_only, run, seed_posts
from tests.testapp.models import Counter

pytestmark = committing

# The global tracer provider can be set once per process: this module's, with an exporter
# the tests read and clear.
SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def fail_on_title_5(post: BlogPost) -> None:
    if post.title == "Title 5":
        raise ValueError("no fives")
    post.author = "x"


# -- --progress json -----------------------------------------------------------------------


def test_progress_json_prints_one_object_per_event() -> None:
    seed_posts(7)

    outcome = run(
        "backfill_iterate", "blog.BlogPost", "--set", "author=a", "--batch-size", "3",
        "--progress", "json", "--name", "fill authors",
    )  # fmt: skip

    assert outcome.returncode == 0, outcome.error
    lines = json_lines(outcome.stderr)
    assert [line["event"] for line in lines] == [
        "started", "chunk_done", "chunk_done", "chunk_done", "finished",
    ]  # fmt: skip
    assert {line["run"] for line in lines} == {"fill authors"}
    assert all(TS.fullmatch(line["ts"]) for line in lines), lines
    started, *chunks, finished = lines
    assert started["model"] == "blog.BlogPost" and started["strategy"] == "iterate"
    assert (started["rows_done"], started["resumed"], started["checkpoint"]) == (0, False, None)
    assert [(c["rows_scanned"], c["total_scanned"], c["chunks"]) for c in chunks] == [
        (3, 3, 1), (3, 6, 2), (1, 7, 3),
    ]  # fmt: skip
    assert [c["total_changed"] for c in chunks] == [3, 6, 7]
    pks = list(BlogPost.objects.order_by("pk").values_list("pk", flat=True))
    assert [(c["lo"], c["hi"]) for c in chunks] == [
        (None, pks[2]), (pks[2], pks[5]), (pks[5], pks[6]),
    ]  # fmt: skip
    assert finished["status"] == "completed"
    assert (finished["rows_scanned"], finished["rows_changed"], finished["chunks"]) == (7, 7, 3)
    assert finished["message"] == "Completed run 'fill authors'."
    # The summary still goes to stdout, apart from the event stream.
    assert outcome.stdout.startswith("Completed run 'fill authors'.")


def test_json_reporter_fields_of_waits_retries_and_notices() -> None:
    stream = StringIO()
    report = JsonReporter(stream, now=lambda: datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))

    report(events.Started("r", "blog.BlogPost", "cursor", "db", 10, 4, True, 4))
    report(events.Waiting("db-2 lags 3.50 s > --max-replica-lag 1 s; pausing", 2.5, "replica lag"))
    report(events.Retrying("lock timeout", 2, 5, 1.0, 500, "OperationalError: canceling"))
    report(events.Notice("Each chunk streams through a server-side cursor."))
    report(events.Finished(Result("r", "blog.BlogPost", "cursor", "default", "paused")))

    base = {"run": "r", "ts": "2026-01-02T03:04:05.678Z"}
    assert json_lines(stream.getvalue())[1:] == [
        {
            "event": "waiting", **base, "kind": "replica lag", "seconds": 2.5,
            "reason": "db-2 lags 3.50 s > --max-replica-lag 1 s; pausing",
        },
        {
            "event": "retrying", **base, "reason": "lock timeout", "attempt": 2, "of": 5,
            "delay": 1.0, "batch_size": 500, "error": "OperationalError: canceling",
        },
        {"event": "notice", **base, "message": "Each chunk streams through a server-side cursor."},
        {
            "event": "finished", **base, "status": "paused", "message": "", "rows_scanned": 0,
            "rows_changed": 0, "chunks": 0, "elapsed": 0.0, "rate": 0.0,
            "total_rows_scanned": 0, "total_rows_changed": 0, "total_chunks": 0,
            "checkpoint": None,
        },
    ]  # fmt: skip


def test_progress_json_reports_a_failed_chunk_as_finished_failed() -> None:
    seed_posts(9)

    outcome = run(
        "backfill_iterate", "blog.BlogPost", "--transform", f"{__name__}.fail_on_title_5",
        "--batch-size", "3", "--progress", "json",
    )  # fmt: skip

    assert outcome.returncode == 1
    lines = json_lines(outcome.stderr)
    assert [line["event"] for line in lines] == ["started", "chunk_done", "finished"]
    assert lines[-1]["status"] == "failed"
    assert "no fives" in lines[-1]["message"]
    assert (lines[-1]["rows_scanned"], lines[-1]["total_chunks"]) == (3, 1)


# -- Django signals --------------------------------------------------------------------------

ALL_SIGNALS = {
    "started": lifecycle.run_started,
    "chunk_done": lifecycle.chunk_done,
    "paused": lifecycle.run_paused,
    "stopped": lifecycle.run_stopped,
    "completed": lifecycle.run_completed,
    "failed": lifecycle.run_failed,
}


@contextmanager
def listening(signal: Signal, receiver: Callable[..., None]) -> Iterator[None]:
    signal.connect(receiver)
    try:
        yield
    finally:
        signal.disconnect(receiver)


@pytest.fixture
def heard() -> Any:
    """Every lifecycle signal sent during the test: (signal name, sender, kwargs)."""
    seen: list[tuple[str, Any, dict[str, Any]]] = []
    receivers = {}
    for name, signal in ALL_SIGNALS.items():

        def receive(sender: Any, name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal")
            seen.append((name, sender, kwargs))

        receivers[name] = receive
        signal.connect(receive)
    yield seen
    for name, signal in ALL_SIGNALS.items():
        signal.disconnect(receivers[name])


def test_signals_of_a_completed_run(heard: list[Any]) -> None:
    seed_posts(7)

    backfill.update(BlogPost.objects.all(), set={"author": "a"}, batch_size=3, name="sig")

    assert [name for name, _, _ in heard] == [
        "started", "chunk_done", "chunk_done", "chunk_done", "completed",
    ]  # fmt: skip
    assert {sender for _, sender, _ in heard} == {BlogPost}
    assert {kwargs["run"] for _, _, kwargs in heard} == {"sig"}
    assert [kw["event"].total_scanned for name, _, kw in heard if name == "chunk_done"] == [3, 6, 7]
    result = heard[-1][2]["result"]
    assert (result.status, result.rows_scanned, result.rows_changed, result.chunks) == (
        "completed", 7, 7, 3,
    )  # fmt: skip


def test_signals_of_a_paused_then_stopped_run(heard: list[Any]) -> None:
    seed_posts(9)

    def pause_after_first_chunk(sender: Any, run: str, event: Any, **kwargs: Any) -> None:
        Run.objects.filter(name=run).update(requested="pause", requested_by="ops")

    with listening(lifecycle.chunk_done, pause_after_first_chunk), pytest.raises(Interrupted):
        backfill.update(BlogPost.objects.all(), set={"author": "a"}, batch_size=3, name="p")
    stop = StopFlag()

    def stop_after_a_chunk(sender: Any, **kwargs: Any) -> None:
        stop.set("a test")

    with listening(lifecycle.chunk_done, stop_after_a_chunk), pytest.raises(Interrupted):
        backfill.update(
            BlogPost.objects.all(), set={"author": "a"}, batch_size=3, name="p", stop=stop
        )

    assert [name for name, _, _ in heard] == [
        "started", "chunk_done", "paused", "started", "chunk_done", "stopped",
    ]  # fmt: skip
    paused, stopped = heard[2][2]["result"], heard[5][2]["result"]
    assert (paused.status, paused.rows_scanned, paused.total_rows_scanned) == ("paused", 3, 3)
    assert (stopped.status, stopped.rows_scanned, stopped.total_rows_scanned) == ("stopped", 3, 6)
    assert heard[3][2]["event"].resumed is True


def test_signal_of_a_cancelled_run_is_stopped_with_its_status(heard: list[Any]) -> None:
    seed_posts(9)

    def cancel(sender: Any, run: str, **kwargs: Any) -> None:
        Run.objects.filter(name=run).update(requested="cancel", requested_by="ops")

    with listening(lifecycle.chunk_done, cancel), pytest.raises(Interrupted):
        backfill.update(BlogPost.objects.all(), set={"author": "a"}, batch_size=3, name="c")

    assert [name for name, _, _ in heard] == ["started", "chunk_done", "stopped"]
    assert heard[-1][2]["result"].status == "cancelled"


def test_signal_of_a_failed_run_and_a_receiver_that_raises(
    heard: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    seed_posts(9)

    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("the chat is down")

    with listening(lifecycle.run_started, broken), pytest.raises(TransformFailed):
        backfill.iterate(BlogPost.objects.all(), transform=fail_on_title_5, batch_size=3)

    assert [name for name, _, _ in heard] == ["started", "chunk_done", "failed"]
    result = heard[-1][2]["result"]
    assert result.status == "failed" and "no fives" in result.message
    assert (result.rows_scanned, result.total_rows_scanned) == (3, 3)
    # The receiver's failure is logged; the run went on to its first chunk anyway.
    assert "the chat is down" in caplog.text


def test_a_completed_run_sends_nothing_when_called_again(heard: list[Any]) -> None:
    seed_posts(3)
    backfill.update(BlogPost.objects.all(), set={"author": "a"}, name="again")
    heard.clear()

    backfill.update(BlogPost.objects.all(), set={"author": "a"}, name="again")

    assert heard == []


# -- Prometheus ------------------------------------------------------------------------------


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_metrics_of_a_run_in_process() -> None:
    seed_posts(7)
    labels = {"run": "metered", "model": "blog.BlogPost"}
    before = sample("backfill_chunk_duration_seconds_count", **labels) or 0

    backfill.update(BlogPost.objects.all(), set={"author": "a"}, batch_size=3, name="metered")

    assert sample("backfill_chunks_total", **labels) == 3
    assert sample("backfill_rows_scanned_total", **labels) == 7
    assert sample("backfill_rows_changed_total", **labels) == 7
    assert sample("backfill_chunk_duration_seconds_count", **labels) == before + 3
    assert sample("backfill_batch_size", **labels) == 3
    assert sample("backfill_run_rows_scanned", **labels) == 7
    assert sample("backfill_run_status", status="completed", **labels) == 1
    assert sample("backfill_run_status", status="running", **labels) == 0


def test_metrics_count_waits_and_retries_by_reason() -> None:
    report = metrics.MetricsReporter()
    labels = {"run": "waits", "model": "blog.BlogPost"}

    report(events.Started("waits", "blog.BlogPost", "update", "db", 100, 0, False, None))
    report(events.Waiting("rate cap 10 rows/s", 1.5, "rate cap"))
    report(events.Waiting("rate cap 10 rows/s", 2.0, "rate cap"))
    report(events.Retrying("deadlock", 1, 5, 0.5, 100, "OperationalError"))

    assert sample("backfill_waits_total", reason="rate cap", **labels) == 2
    assert sample("backfill_wait_seconds_total", reason="rate cap", **labels) == 3.5
    assert sample("backfill_retries_total", reason="deadlock", **labels) == 1
    assert sample("backfill_estimated_rows", **labels) == 100


@postgres_only
def test_metrics_and_spans_of_a_run_with_workers_count_every_chunk_once() -> None:
    make_counters(300)
    SPANS.clear()
    labels = {"run": "parallel", "model": "testapp.Counter"}

    result = backfill.iterate(
        Counter.objects.all(), transform=FAST, batch_size=25, workers=2, name="parallel"
    )

    assert result.total_chunks == 12
    assert sample("backfill_chunks_total", **labels) == 12
    assert sample("backfill_rows_scanned_total", **labels) == 300
    # The parent sees its workers' chunks summed once a second: no chunk duration to observe.
    assert not sample("backfill_chunk_duration_seconds_count", **labels)
    (run_span,) = [s for s in SPANS.get_finished_spans() if s.name == "backfill.run"]
    summed = [e for e in run_span.events if e.name == "progress"]
    assert sum(int(cast(int, (e.attributes or {}).get("backfill.chunks", 0))) for e in summed) == 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def scraped_chunks(port: int) -> float:
    """backfill_chunks_total of the Counter run as served, 0 while unreachable."""
    try:
        text = scrape(port)
    except OSError:
        return 0
    found = re.search(
        r'^backfill_chunks_total\{model="testapp.Counter",run="m"\} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0


@pytest.mark.parametrize("multiprocess", [False, True], ids=["plain", "multiprocess"])
def test_metrics_port_serves_metrics_over_http_while_the_command_runs(
    spawn_manage: SpawnManage, tmp_path: Path, multiprocess: bool
) -> None:
    make_counters(400)
    port = free_port()
    env = {"BACKFILL_TEST_ROW_SECONDS": "0.005"}
    if multiprocess:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)

    process = spawn_manage(
        "backfill_iterate", "testapp.Counter", "--transform", SLOW, "--batch-size", "40",
        "--name", "m", "--metrics-port", str(port), "--progress", "none", env=env,
    )  # fmt: skip
    seen = wait_for(lambda: scraped_chunks(port), "a scrape that counts a chunk", timeout=60)
    _, err = process.communicate(timeout=120)

    assert process.returncode == 0, err
    assert 1 <= seen < 10
    if multiprocess:
        # Every process's values land in the directory, for the task engine's exporter.
        assert list(tmp_path.glob("counter_*.db"))


def manage_with(url: str, prelude: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A management command in a fresh interpreter that first runs ``prelude``, and then
    prints which of the optional libraries it loaded."""
    code = (
        f"import sys; {prelude}; from django.core.management import execute_from_command_line; "
        "execute_from_command_line(['manage.py', *sys.argv[1:]]); "
        "print(sorted(m for m in ('prometheus_client', 'opentelemetry.trace') if m in sys.modules))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=manage_env(url), cwd=MANAGE_PY.parent.parent,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_metrics_port_without_prometheus_client_is_bad_input(django_db_url: str) -> None:
    """Importing and running backfill works without prometheus_client; asking for it fails."""
    seed_posts(3)
    hidden = "sys.modules['prometheus_client'] = None"
    command = ("backfill_update", "blog.BlogPost", "--set", "author=a")

    refused = manage_with(django_db_url, hidden, *command, "--metrics-port", "1")
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "CommandError: Metrics need prometheus_client, which is not installed. Install it with "
        "pip install 'django-backfill[prometheus]', or drop --metrics-port."
    ]
    assert not Run.objects.exists()
    plain = manage_with(django_db_url, hidden, *command, "--progress", "none")
    assert plain.returncode == 0, plain.stderr
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"a"}


def test_a_run_loads_neither_library_unless_the_process_uses_it(django_db_url: str) -> None:
    """Installed is not enough: importing them would cost every run's start ~0.5 s."""
    seed_posts(3)
    command = ("backfill_update", "blog.BlogPost", "--set", "author=a", "--progress", "none")

    plain = manage_with(django_db_url, "pass", *command)
    traced = manage_with(django_db_url, "import opentelemetry.trace", *command, "--restart")

    assert plain.returncode == traced.returncode == 0, plain.stderr + traced.stderr
    assert plain.stdout.splitlines()[-1] == "[]"
    assert traced.stdout.splitlines()[-1] == "['opentelemetry.trace']"


def test_metrics_port_in_use_is_bad_input() -> None:
    seed_posts(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        outcome = run(
            "backfill_update", "blog.BlogPost", "--set", "author=a", "--metrics-port", str(port)
        )

    assert outcome.returncode == 2
    assert outcome.error.startswith(f"Cannot serve metrics on 127.0.0.1:{port} (")
    assert not Run.objects.exists()


def test_manual_lists_every_metric() -> None:
    readme = (Path(__file__).resolve().parent.parent / "docs" / "watching.md").read_text()
    for metric in metrics.METRICS:
        assert f"| `{metric.name}` | {metric.type} |" in readme, metric.name


# -- OpenTelemetry ---------------------------------------------------------------------------


def test_a_span_per_run_and_per_chunk() -> None:
    seed_posts(7)
    SPANS.clear()

    backfill.update(BlogPost.objects.all(), set={"author": "a"}, batch_size=3, name="traced")

    spans = SPANS.get_finished_spans()
    (run_span,) = [s for s in spans if s.name == "backfill.run"]
    chunks = [s for s in spans if s.name == "backfill.chunk"]
    assert run_span.attributes is not None
    assert run_span.attributes["backfill.run"] == "traced"
    assert run_span.attributes["backfill.status"] == "completed"
    assert run_span.attributes["backfill.rows_changed"] == 7
    assert [(c.attributes or {}).get("backfill.rows_scanned") for c in chunks] == [3, 3, 1]
    assert {(c.attributes or {}).get("backfill.outcome") for c in chunks} == {"done"}
    assert run_span.context is not None
    assert all(
        c.parent is not None and c.parent.span_id == run_span.context.span_id for c in chunks
    )


def test_a_failed_run_span_is_an_error() -> None:
    seed_posts(9)
    SPANS.clear()

    with pytest.raises(ChunkFailed):
        backfill.iterate(BlogPost.objects.all(), transform=fail_on_title_5, batch_size=3)

    spans = SPANS.get_finished_spans()
    (run_span,) = [s for s in spans if s.name == "backfill.run"]
    assert run_span.status.status_code == StatusCode.ERROR
    outcomes = [(s.attributes or {}).get("backfill.outcome") for s in spans if s is not run_span]
    assert outcomes == ["done", "failed"]


def test_signal_objects_are_django_signals() -> None:
    assert all(isinstance(s, Signal) for s in ALL_SIGNALS.values())
