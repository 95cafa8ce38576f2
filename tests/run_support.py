"""Helpers of the run tests (resume, signals, kill -9, reconnect, busy, workers).

The Counter model is the witness: every transform here adds 1 to ``hits``, so after a run
every row must hold exactly 1, and at any moment a row holds 1 exactly when it lies in a
chunk the ledger records as done.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from backfill import events
from backfill.exceptions import BadInput
from backfill.models import Chunk, Run, Worker
from tests.support import run
from tests.testapp.models import Counter

# Workers claim chunks with SKIP LOCKED: PostgreSQL, MySQL 8 and MariaDB 10.6+ (SQLite has none).
skip_locked_only = pytest.mark.skipif(
    connection.vendor == "sqlite", reason="needs SELECT … FOR UPDATE SKIP LOCKED (not in SQLite)"
)

SLOW = "tests.transforms.count_hit_slowly"
FAST = "tests.transforms.count_hit"
# A run to watch while it works: 50-row chunks of 0.2 s each with SLOWLY in its environment.
SLOW_RUN = ("backfill_iterate", "testapp.Counter", "--transform", SLOW, "--batch-size", "50")
SLOWLY = {"BACKFILL_TEST_ROW_SECONDS": "0.004"}


class FakeClock:
    """A monotonic clock that only moves when told: by ``sleep`` or by ``advance``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        # Called with the seconds of each sleep before time moves: what happens meanwhile.
        self.on_sleep: Callable[[float], None] = lambda seconds: None

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.on_sleep(seconds)
        self.slept.append(seconds)
        self.now += seconds


class Recorder:
    """A reporter that keeps every event."""

    def __init__(self) -> None:
        self.events: list[events.Event] = []

    def __call__(self, event: events.Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def make_counters(count: int) -> list[int]:
    """``count`` Counter rows with hits 0; their pks in order."""
    Counter.objects.bulk_create(Counter(name=f"c{i}") for i in range(count))
    return list(Counter.objects.order_by("pk").values_list("pk", flat=True))


def make_many_counters(count: int) -> None:
    """``count`` Counter rows with hits 0, in one statement on PostgreSQL (bulk_create of 200k
    rows takes ten seconds here)."""
    if connection.vendor != "postgresql":
        Counter.objects.bulk_create((Counter(name=f"c{i}") for i in range(count)), 10_000)
        return
    table = connection.ops.quote_name(Counter._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (name, hits) SELECT 'c' || g, 0 FROM generate_series(0, %s) g",
            [count - 1],
        )


def hits() -> dict[int, int]:
    return dict(Counter.objects.values_list("pk", "hits"))


def assert_every_row_once() -> None:
    counts = hits()
    wrong = {pk: n for pk, n in counts.items() if n != 1}
    assert not wrong, f"{len(wrong)} of {len(counts)} rows not hit exactly once: {wrong}"


def the_run() -> Run:
    return Run.objects.get()


def assert_ledger_matches_data(run: Run | None = None) -> None:
    """A row was transformed (hits 1) exactly when it lies in a chunk recorded as done.

    This holds at every instant, also right after a kill -9, because a chunk's write and its
    ledger entry commit in one transaction. Pending chunks (parallel mode) hold untouched rows.
    """
    run = run or the_run()
    done = list(Chunk.objects.filter(run=run, status=Chunk.Status.DONE).values_list("lo", "hi"))
    ranges = [(None if lo is None else int(lo), int(hi)) for lo, hi in done]
    for pk, count in hits().items():
        inside = sum(1 for lo, hi in ranges if (lo is None or pk > lo) and pk <= hi)
        assert inside <= 1, f"pk {pk} lies in {inside} done chunks"
        assert count == inside, f"pk {pk} has hits {count} but lies in {inside} done chunks"
    run.refresh_from_db()
    assert run.rows_changed == sum(hits().values())
    assert run.chunks_done == len(done)


def assert_chunks_tile(run: Run | None = None) -> None:
    """The chunks cover (start, pk_end] edge to edge: no gap, no overlap."""
    run = run or the_run()
    bounds = sorted(
        (int(hi), None if lo is None else int(lo))
        for lo, hi in Chunk.objects.filter(run=run).values_list("lo", "hi")
    )
    previous: int | None = None
    for hi, lo in bounds:
        assert lo == previous, f"chunk ({lo}, {hi}] does not start at {previous}"
        previous = hi
    assert previous is not None and str(previous) == run.pk_end


def call(command: str, *args: str) -> tuple[int, str, str]:
    """``run`` as a tuple: (exit code, stdout, the error message, or stderr when none)."""
    outcome = run(command, *args)
    return outcome.returncode, outcome.stdout, outcome.error or outcome.stderr


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"Timed out after {timeout:g} s waiting for {what}")


def chunks_done_at_least(count: int) -> Callable[[], bool]:
    def check() -> bool:
        return Run.objects.filter(chunks_done__gte=count).exists()

    return check


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL and reap, so the pid is gone (not a zombie) when the next process starts."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


def wait_for_run(
    name: str, statuses: tuple[str, ...] = ("completed", "failed"), timeout: float = 90.0
) -> tuple[Run, int]:
    """Run ``name`` once its status is one of ``statuses``; and the most processes seen
    working it at once (a task engine's joiners)."""
    deadline = time.monotonic() + timeout
    most = 0
    while time.monotonic() < deadline:
        most = max(most, Worker.objects.filter(run__name=name).count())
        found = Run.objects.get(name=name)
        if found.status in statuses:
            return found, most
        time.sleep(0.1)
    raise AssertionError(f"run {name!r} still {found.status} after {timeout:g} s")


class Workers:
    """Worker processes of a task engine, each in its own process group with its output in a
    log file of ``directory``; ``kill()`` ends every one of them with its children."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{self.name}{len(self.started)}.log").open("wb")
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append(process)
        return process

    def kill(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def assert_missing_engine_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, engine: str, blocked: list[str], module: str, extra: str
) -> None:
    """With the engine's packages ``blocked`` (importing them raises ImportError), handing a
    run to ``engine`` is bad input naming the extra to install, and records nothing."""
    import backfill

    make_counters(10)
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, f"backfill.{module}", raising=False)
    monkeypatch.delattr(backfill, module, raising=False)
    with pytest.raises(BadInput, match=rf"pip install 'django-backfill\[{extra}\]'"):
        backfill.iterate(Counter.objects.all(), transform=FAST, engine=engine)
    assert not Run.objects.exists()
