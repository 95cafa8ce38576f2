"""A run handed to Celery: real workers (separate OS processes) on a real Redis broker.

Exactly-once rests on the ledger, whatever the engine does: every Counter row must end with
``hits == 1`` after N joiners, a task delivered twice, and a worker killed with kill -9.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

import backfill
from backfill import engines, ledger
from backfill.exceptions import BadInput
from backfill.models import Chunk, Run, RunRecipe, Worker
from tests.conftest import manage_env
from tests.run_support import (
    FAST,
    Workers,
    assert_every_row_once,
    assert_ledger_matches_data,
    assert_missing_engine_says_what_to_install,
    make_counters,
    make_many_counters,
    wait_for_run,
)
from tests.support import committing, postgres_only, run
from tests.testapp.models import Counter

pytest.importorskip("celery", reason="Celery is not installed: pip install 'celery[redis]'")

REPO = Path(__file__).resolve().parent.parent
BROKER = "redis://127.0.0.1:6379/15"
SLOW = "tests.transforms.count_hit_slowly"


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


needs_redis = pytest.mark.skipif(
    not redis_answers(), reason="no Redis answering at 127.0.0.1:6379 (the Celery broker)"
)


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of this test's own, so parallel test runs never take each other's tasks."""
    import tests.celery_app  # noqa: F401  (the app the API enqueues through)

    name = f"backfill-test-{uuid.uuid4().hex[:8]}"
    yield name
    import redis

    with contextlib.suppress(redis.ConnectionError):
        redis.Redis.from_url(BROKER).delete(name)


@pytest.fixture
def celery_workers(
    django_db_url: str, queue: str, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``celery worker`` processes on the test database, each in its own session."""
    workers = Workers(tmp_path, "worker")

    def start(
        concurrency: int = 2, row_seconds: float = 0.0, broker: str = BROKER
    ) -> subprocess.Popen[bytes]:
        env = manage_env(
            django_db_url,
            {"BACKFILL_TEST_BROKER": broker, "BACKFILL_TEST_ROW_SECONDS": str(row_seconds)},
        )
        return workers.start(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.celery_app",
                "worker",
                "-Q",
                queue,
                "-c",
                str(concurrency),
                "--pool",
                "prefork",
                "-n",
                f"{queue}-{len(workers.started)}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "info",
            ],
            env,
            cwd=REPO,
        )

    yield start
    workers.kill()


def hand_off(queue: str, name: str, transform: str = FAST, **options: Any) -> Any:
    return backfill.iterate(
        Counter.objects.all(),
        transform=transform,
        engine="celery",
        queue=queue,
        name=name,
        **{"batch_size": 100, **options},
    )


# -- bad input: refused before anything is written or enqueued ---------------------------------


@committing
@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            lambda: backfill.iterate(
                Counter.objects.all(), transform=lambda obj: None, engine="celery"
            ),
            "cannot be found again by its path",
        ),
        (
            lambda: backfill.iterate(
                Counter.objects.filter(hits=0), transform=FAST, engine="celery"
            ),
            "filter={'author__isnull': True}",
        ),
        (
            lambda: backfill.iterate(Counter.objects.all(), transform=FAST, engine="rq"),
            "engine='rq' is not a task engine",
        ),
        (
            lambda: backfill.iterate(
                Counter.objects.all(), transform=FAST, engine="celery", joiners=0
            ),
            "joiners must be from 1",
        ),
        (
            lambda: backfill.iterate(
                Counter.objects.all(), transform=FAST, engine="celery", budget=float("nan")
            ),
            "budget must be a number of seconds above 0",
        ),
        (
            lambda: backfill.iterate(
                Counter.objects.all(), transform=FAST, engine="celery", workers=4
            ),
            "pass joiners=",
        ),
        (
            lambda: backfill.iterate(
                Counter.objects.all(), transform=FAST, engine="celery", filter={"nope": 1}
            ),
            "nope",
        ),
    ],
)
def test_what_cannot_be_handed_over_is_refused(call: Callable[[], Any], expected: str) -> None:
    make_counters(10)
    with pytest.raises(BadInput) as caught:
        call()
    assert expected in str(caught.value)
    assert not Run.objects.exists()
    assert not RunRecipe.objects.exists()


@committing
def test_the_database_must_take_the_joiners() -> None:
    from django.db import connection

    make_counters(10)
    if connection.features.has_select_for_update_skip_locked:
        expected = "joiners=999 need 999 more connections"  # above max_connections
    else:
        expected = "needs a database that claims chunks with SKIP LOCKED"
    with pytest.raises(BadInput, match=expected):
        backfill.iterate(Counter.objects.all(), transform=FAST, engine="celery", joiners=999)
    assert not Run.objects.exists()


@committing
def test_only_a_run_handed_to_an_engine_can_be_handed_over_again() -> None:
    make_counters(10)
    backfill.iterate(Counter.objects.all(), transform=FAST, name="local")
    outcome = run("backfill_enqueue", "local")
    assert outcome.returncode == 2
    assert "Run 'local' was not handed to a task engine" in outcome.error
    assert run("backfill_enqueue", "lokal").returncode == 2


@committing
@pytest.mark.parametrize("flag", [["--wait"], ["--joiners", "3"], ["--budget", "60"]])
def test_engine_flags_without_an_engine_are_refused(flag: list[str]) -> None:
    make_counters(10)
    outcome = run("backfill_iterate", "testapp.Counter", "--transform", FAST, *flag)
    assert outcome.returncode == 2
    assert f"{flag[0]} is about a run handed to a task engine" in outcome.error
    assert not Run.objects.exists()


@committing
def test_command_refuses_an_unknown_engine_with_exit_2() -> None:
    make_counters(10)
    outcome = run("backfill_iterate", "testapp.Counter", "--transform", FAST, "--engine", "rq")
    assert outcome.returncode == 2
    assert "engine='rq' is not a task engine backfill knows" in outcome.error
    assert not Run.objects.exists()


@committing
def test_without_celery_the_app_imports_and_the_engine_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert_missing_engine_says_what_to_install(monkeypatch, "celery", ["celery"], "tasks", "celery")


# -- the hand-over and a joiner, in this process -------------------------------------------


@needs_redis
@postgres_only
@committing
def test_the_command_creates_the_run_and_enqueues_joiners(queue: str) -> None:
    import redis

    make_counters(300)
    outcome = run(
        "backfill_iterate",
        "testapp.Counter",
        "--transform",
        FAST,
        "--filter",
        "name__startswith=c1",
        "--engine",
        "celery",
        "--queue",
        queue,
        "--joiners",
        "3",
        "--name",
        "fleet",
    )
    assert outcome.returncode == 0, outcome.error
    assert "Handed run 'fleet' to celery: 3 joiner(s)" in outcome.stdout
    assert "python manage.py backfill_runs fleet" in outcome.stdout
    assert redis.Redis.from_url(BROKER).llen(queue) == 3
    the_run = Run.objects.get(name="fleet")
    assert the_run.status == Run.Status.RUNNING
    assert the_run.parallel
    assert not Worker.objects.exists()
    recipe = RunRecipe.objects.get(name="fleet").recipe
    assert recipe["engine"]["joiners"] == 3
    assert recipe["transform"] == FAST
    # A joiner rebuilds the run from its recipe alone, filter included.
    assert engines.join("fleet") == "completed"
    touched = set(Counter.objects.filter(hits=1).values_list("name", flat=True))
    assert touched == {f"c{i}" for i in range(300) if str(i).startswith("1")}
    assert Run.objects.get(name="fleet").status == Run.Status.COMPLETED


# -- real Celery workers -------------------------------------------------------------------------


@needs_redis
@postgres_only
@committing
def test_n_joiners_work_every_row_exactly_once(
    queue: str, celery_workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    make_counters(3000)
    celery_workers(concurrency=3, row_seconds=0.001)
    result = hand_off(queue, "fleet", SLOW, joiners=3, budget=1.0)
    assert result.status == "queued"
    finished, most = wait_for_run("fleet", timeout=45.0)
    assert finished.status == "completed", finished.last_error
    assert_every_row_once()
    assert_ledger_matches_data(finished)
    assert 1 <= most <= 3
    # Budgets of 1 s on ~3 s of work: joiners handed over to successors and worked side by side.
    assert Chunk.objects.filter(run=finished).values("worker").distinct().count() >= 2


@needs_redis
@postgres_only
@committing
def test_a_task_delivered_twice_changes_nothing(
    queue: str, celery_workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    make_counters(2000)
    celery_workers(concurrency=4, row_seconds=0.001)
    hand_off(queue, "twice", SLOW, joiners=2, budget=30.0)
    handover = engines.Handover(engine="celery", queue=queue, joiners=2, budget=30.0)
    engines.enqueue(handover, "twice", "default", 2)  # every task a second time
    finished, most = wait_for_run("twice", timeout=45.0)
    assert finished.status == "completed", finished.last_error
    assert_every_row_once()
    assert most <= 2


@needs_redis
@postgres_only
@committing
def test_a_worker_killed_mid_run_is_finished_by_a_new_one(
    queue: str, celery_workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    make_counters(3000)
    first = celery_workers(concurrency=2, row_seconds=0.003)
    hand_off(queue, "killed", SLOW, joiners=2, budget=60.0)
    deadline = time.monotonic() + 30
    while Run.objects.get(name="killed").chunks_done < 3:
        assert time.monotonic() < deadline, "no chunk was done"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # the machine dies: parent and pool processes
    first.wait()
    assert Run.objects.get(name="killed").status == Run.Status.RUNNING
    assert_ledger_matches_data(Run.objects.get(name="killed"))
    # No joiner is left: once their lease has run out (aged here rather than waited for),
    # backfill_runs shows the run stalled and the one command that revives it.
    long_ago = timezone.now() - timedelta(seconds=120)
    Worker.objects.filter(run__name="killed").update(heartbeat_at=long_ago)
    Run.objects.filter(name="killed").update(heartbeat_at=long_ago)
    shown = run("backfill_runs", "killed")
    assert "  status         stalled" in shown.stdout
    assert "  engine         celery" in shown.stdout
    assert "resume         python manage.py backfill_enqueue killed" in shown.stdout
    celery_workers(concurrency=2, row_seconds=0.0)
    revived = run("backfill_enqueue", "killed")
    assert revived.returncode == 0, revived.error
    assert "Handed run 'killed' to celery: 2 joiner(s)" in revived.stdout
    finished, _ = wait_for_run("killed", timeout=45.0)
    assert finished.status == "completed", finished.last_error
    assert_every_row_once()
    assert_ledger_matches_data(finished)


@needs_redis
@postgres_only
@committing
def test_a_pause_reaches_every_joiner_and_handing_over_again_resumes(
    queue: str, celery_workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    from backfill.control import pause as request_pause

    make_counters(2000)
    celery_workers(concurrency=3, row_seconds=0.003)
    hand_off(queue, "paused", SLOW, joiners=3, budget=60.0)
    deadline = time.monotonic() + 30
    while Run.objects.get(name="paused").chunks_done < 2:
        assert time.monotonic() < deadline, "no chunk was done"
        time.sleep(0.1)
    request_pause(Run.objects.filter(name="paused"), by="ops")
    paused, _ = wait_for_run("paused", ("paused",))
    deadline = time.monotonic() + 10
    while Worker.objects.filter(run=paused).exists():  # every joiner left at its next chunk
        assert time.monotonic() < deadline, "a joiner kept working a paused run"
        time.sleep(0.1)
    assert paused.chunks_done < 20
    assert_ledger_matches_data(paused)
    assert hand_off(queue, "paused", SLOW, joiners=3, budget=60.0).status == "queued"
    finished, _ = wait_for_run("paused", timeout=45.0)
    assert finished.status == "completed", finished.last_error
    assert_every_row_once()


@needs_redis
@postgres_only
@committing
def test_a_transform_that_raises_fails_the_run_and_names_the_row(
    queue: str, celery_workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    pks = make_counters(500)
    Counter.objects.filter(pk=pks[250]).update(name="poison")
    celery_workers(concurrency=2)
    hand_off(queue, "poisoned", "tests.transforms.count_hit_unless_poison", joiners=2)
    finished, _ = wait_for_run("poisoned", timeout=45.0)
    assert finished.status == "failed"
    assert f"row {pks[250]} is poisoned" in finished.last_error
    assert Counter.objects.get(pk=pks[250]).hits == 0
    with pytest.raises(backfill.ChunkFailed, match=f"row {pks[250]} is poisoned"):
        engines.follow("poisoned")


@needs_redis
@postgres_only
@committing
def test_wait_follows_the_run_and_exits_like_a_local_run(
    queue: str, celery_workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    make_counters(1000)
    celery_workers(concurrency=2)
    outcome = run(
        "backfill_iterate",
        "testapp.Counter",
        "--transform",
        FAST,
        "--engine",
        "celery",
        "--queue",
        queue,
        "--joiners",
        "2",
        "--batch-size",
        "100",
        "--wait",
        "--progress",
        "log",
    )
    assert outcome.returncode == 0, outcome.error
    assert "Completed run" in outcome.stdout
    assert_every_row_once()
    Counter.objects.filter(pk=Counter.objects.order_by("pk")[500].pk).update(name="poison")
    outcome = run(
        "backfill_iterate",
        "testapp.Counter",
        "--transform",
        "tests.transforms.count_hit_unless_poison",
        "--engine",
        "celery",
        "--queue",
        queue,
        "--wait",
    )
    assert outcome.returncode == 1
    assert "is poisoned" in outcome.error


@needs_redis
@postgres_only
@committing
def test_pending_runs_of_deferred_migrations_are_handed_to_the_engine(
    queue: str, celery_workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    from backfill import recipes

    make_counters(1000)
    recipe = recipes.build(
        model_label="testapp.Counter",
        strategy="iterate",
        set=None,
        transform=FAST,
        fields=None,
        filter=None,
        exclude=None,
        needs=None,
        options={},
    )
    ledger.record_pending("deferred counters", recipe, using="default")

    outcome = run("backfill_pending", "--engine", "celery", "--queue", queue, "--joiners", "2")

    assert outcome.returncode == 0, outcome.error
    assert "Handed run 'deferred counters' to celery: 2 joiner(s)" in outcome.stdout
    assert RunRecipe.objects.get(name="deferred counters").recipe["engine"]["queue"] == queue
    celery_workers(concurrency=2)
    finished, _most = wait_for_run("deferred counters", timeout=45.0)
    assert finished.status == "completed", finished.last_error
    assert_every_row_once()
    assert run("backfill_pending").stdout.strip() == "No pending backfill runs."


# -- joiners killed at random, the broker restarted ------------------------------------------


def assert_done_chunks_hold_exactly_the_changed_rows(name: str) -> None:
    """As ``assert_ledger_matches_data``, in O(rows log chunks) for the 200k-row run."""
    import bisect

    done = sorted(
        (int(hi), None if lo is None else int(lo))
        for lo, hi in Chunk.objects.filter(run__name=name, status=Chunk.Status.DONE).values_list(
            "lo", "hi"
        )
    )
    highs = [hi for hi, _ in done]
    for pk, hits in Counter.objects.values_list("pk", "hits").iterator(chunk_size=20_000):
        at = bisect.bisect_left(highs, pk)
        low = done[at][1] if at < len(done) else None
        inside = at < len(done) and (low is None or pk > low)
        assert hits == (1 if inside else 0), f"pk {pk} has hits {hits}, in a done chunk: {inside}"


@needs_redis
@postgres_only
@committing
def test_joiners_killed_at_random_then_revived_add_one_to_each_of_200k_rows(
    queue: str, celery_workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """Worker machines die (kill -9 of a worker and its pool) at random moments of a 200k-row
    run; new ones start; ``backfill_enqueue NAME`` revives the run. PostgreSQL only (once per
    ``make test``), like every Celery test here."""
    import random

    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    make_many_counters(200_000)
    workers = [celery_workers(concurrency=2) for _ in range(2)]
    hand_off(queue, "chaos", FAST, joiners=3, budget=3.0, batch_size=4000)
    for _ in range(3):
        time.sleep(rng.uniform(0.3, 2.0))
        victim = workers.pop(rng.randrange(len(workers)))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        assert_done_chunks_hold_exactly_the_changed_rows("chaos")
        workers.append(celery_workers(concurrency=2))
    revived = run("backfill_enqueue", "chaos")  # the killed joiners' tasks are lost
    assert revived.returncode == 0, revived.error

    finished, most = wait_for_run("chaos", timeout=120)

    assert finished.status == "completed", f"seed {seed}: {finished.last_error}"
    assert not Counter.objects.exclude(hits=1).exists(), f"seed {seed}"
    assert finished.rows_changed == 200_000, f"seed {seed}"
    assert most <= 3 + 2  # at most N live, plus dead joiners' rows not yet cleared


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def throwaway_redis() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """``redis-server`` processes on one free port of this test's own (never the system Redis):
    call it to start one, kill the last one to "restart the broker"."""
    import shutil

    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed: the broker-restart test starts its own")
    port = free_port()
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        return process

    start.url = f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


@postgres_only
@committing
def test_a_broker_restarted_mid_run_loses_nothing_twice(
    queue: str,
    celery_workers: Callable[..., subprocess.Popen[bytes]],
    throwaway_redis: Callable[[], subprocess.Popen[bytes]],
) -> None:
    """The broker is killed mid-run and started again empty (its queue lost): the joiners at
    work finish their budget; a successor enqueued while it was down is lost, so the run ends
    or stalls, and reviving it finishes every row exactly once."""
    from celery import Celery

    import tests.celery_app

    broker = throwaway_redis()
    url = throwaway_redis.url  # type: ignore[attr-defined]
    app = Celery("backfill_broker_test", broker=url)
    app.conf.update(tests.celery_app.app.conf.table(), broker_url=url)
    app.set_current()
    try:
        make_counters(4000)
        for _ in range(2):
            celery_workers(concurrency=2, row_seconds=0.002, broker=url)
        hand_off(queue, "restarted", SLOW, joiners=2, budget=1.0)
        deadline = time.monotonic() + 30
        while Run.objects.get(name="restarted").chunks_done < 4:
            assert time.monotonic() < deadline, "no chunk was done"
            time.sleep(0.1)
        broker.kill()
        broker.wait()
        time.sleep(1.5)  # joiners reaching their budget now cannot enqueue a successor
        throwaway_redis()
        assert_ledger_matches_data(Run.objects.get(name="restarted"))
        deadline = time.monotonic() + 20
        while Run.objects.get(name="restarted").status != Run.Status.COMPLETED:
            if (
                time.monotonic() > deadline
                or not Worker.objects.filter(run__name="restarted").exists()
            ):
                break
            time.sleep(0.2)
        engines.revive("restarted")  # what backfill_enqueue does; harmless if it completed
        finished, most = wait_for_run("restarted", timeout=60)
    finally:
        tests.celery_app.app.set_current()
    assert finished.status == "completed", finished.last_error
    assert_every_row_once()
    assert_ledger_matches_data(finished)
    assert most <= 2


@needs_redis
@postgres_only
@committing
def test_the_celery_beat_task_revives_stalled_runs(queue: str) -> None:
    import redis

    from backfill.tasks import revive_stalled

    make_counters(100)
    hand_off(queue, "lost", FAST, joiners=2)
    assert revive_stalled() == []  # queued, not stalled: the hand-over is within the lease
    Run.objects.filter(name="lost").update(heartbeat_at=timezone.now() - timedelta(seconds=600))

    assert revive_stalled() == ["lost"]

    assert redis.Redis.from_url(BROKER).llen(queue) == 4
    heartbeat = Run.objects.get(name="lost").heartbeat_at
    assert heartbeat is not None
    assert heartbeat > timezone.now() - timedelta(seconds=60)
