"""``--workers N``: N processes, each with its own connection, claim disjoint chunks of one run."""

from __future__ import annotations

import os
import random
import signal
import socket

import pytest
from django.db import connection, transaction

import backfill
from backfill import events
from backfill.exceptions import InsideTransaction
from backfill.models import Chunk, Run, Worker
from tests.conftest import RunManage, SpawnManage
from tests.run_support import (
    FAST,
    SLOW,
    SLOW_RUN,
    SLOWLY,
    assert_chunks_tile,
    assert_every_row_once,
    assert_ledger_matches_data,
    call,
    chunks_done_at_least,
    finish,
    hits,
    make_counters,
    skip_locked_only,
    the_run,
    wait_for,
)
from tests.support import sqlite_only
from tests.testapp.models import Counter

pytestmark = pytest.mark.django_db(transaction=True)

COMMAND = SLOW_RUN


@sqlite_only
def test_workers_need_postgresql() -> None:
    make_counters(100)

    code, out, message = call(*COMMAND, "--workers", "2")

    assert code == 2
    assert out == ""
    assert message == (
        "--workers 2 needs PostgreSQL (chunks are claimed with SKIP LOCKED); database "
        "'default' is sqlite. Run with one worker."
    )
    assert not Run.objects.exists()
    assert set(hits().values()) == {0}


@skip_locked_only
@pytest.mark.skipif(
    connection.vendor == "mysql",
    reason="on MariaDB the workers' ledger transactions sometimes deadlock (1213); the retry "
    "splits a pending chunk, so the exact chunk count asserted here varies (rows stay "
    "exactly-once)",
)
def test_workers_split_the_run_and_the_parent_reports_progress() -> None:
    make_counters(600)
    seen: list[events.Event] = []

    result = backfill.iterate(
        Counter.objects.all(), transform=SLOW, batch_size=50, workers=3, reporter=seen.append
    )

    assert result.status == "completed"
    assert result.message == f"Completed run {result.name!r} with 3 workers."
    assert (result.rows_scanned, result.rows_changed, result.chunks) == (600, 600, 12)
    assert_every_row_once()
    assert_chunks_tile()
    workers = set(Chunk.objects.values_list("worker", flat=True))
    assert len(workers) >= 2, workers
    assert all(w.startswith(f"{socket.gethostname()}:") for w in workers)
    assert not Worker.objects.exists()
    assert [type(e).__name__ for e in seen if isinstance(e, events.Started | events.Finished)] == [
        "Started",
        "Finished",
    ]
    progress = [e for e in seen if isinstance(e, events.ChunkDone)]
    assert progress[-1].total_scanned == 600
    assert progress[-1].chunks == 12
    assert [e.total_scanned for e in progress] == sorted(e.total_scanned for e in progress)


@skip_locked_only
def test_two_commands_with_workers_started_together_both_join(
    spawn_manage: SpawnManage,
) -> None:
    make_counters(800)
    first = spawn_manage(*COMMAND, "--workers", "2", env=SLOWLY)
    second = spawn_manage(*COMMAND, "--workers", "2", env=SLOWLY)

    results = [finish(first), finish(second)]

    for code, _, err in results:
        assert code == 0, err
        assert "already being worked" not in err
    assert_every_row_once()
    assert_chunks_tile()
    assert the_run().status == Run.Status.COMPLETED
    # Both commands' workers claimed chunks: more than the 2 worker processes of one of them.
    assert len(set(Chunk.objects.values_list("worker", flat=True))) >= 3


@skip_locked_only
def test_a_worker_killed_mid_run_loses_no_row_and_the_run_resumes(
    spawn_manage: SpawnManage, run_manage: RunManage
) -> None:
    make_counters(1200)
    parent = spawn_manage(*COMMAND, "--workers", "4", env=SLOWLY)
    here = socket.gethostname()
    wait_for(lambda: Worker.objects.filter(host=here).count() == 5, "the parent and 4 workers")
    wait_for(chunks_done_at_least(4), "four chunks done")
    workers = list(
        Worker.objects.filter(host=here).exclude(pid=parent.pid).values_list("pid", flat=True)
    )
    victim = random.Random(4).choice(sorted(workers))

    os.kill(victim, signal.SIGKILL)
    code, out, err = finish(parent)

    killed = f"Worker pid {victim} was killed by SIGKILL"
    if code == 0:
        # The other workers found its chunk unlocked again and finished the run.
        assert f"{killed}; the others finished its chunks." in out
    else:
        assert code == 1, err
        assert f"CommandError: {killed}; its chunk in flight was rolled back" in err
        assert_ledger_matches_data()
    assert not Worker.objects.filter(pid=victim).exists()

    done = run_manage(*COMMAND, "--workers", "4")

    assert done.returncode == 0, done.stderr
    assert_every_row_once()
    assert_chunks_tile()
    assert not Chunk.objects.filter(worker=f"{here}:{victim}", status="pending").exists()


@skip_locked_only
def test_a_command_that_stops_leaves_the_run_running_for_the_one_still_working_it(
    spawn_manage: SpawnManage, run_manage: RunManage
) -> None:
    make_counters(4000)
    other = spawn_manage(*COMMAND, "--workers", "2", env=SLOWLY)
    wait_for(chunks_done_at_least(1), "the other command to work")

    stopped = run_manage(*COMMAND, "--workers", "2", "--max-runtime", "1", env=SLOWLY)

    assert stopped.returncode == 3, stopped.stderr
    assert other.poll() is None, "the other command ended first: the run was too short"
    run = the_run()
    assert run.status == Run.Status.RUNNING
    assert (
        f"Run {run.name!r} goes on in the other processes working it; re-run the same command "
        "to join them."
    ) in stopped.stderr
    code, _, err = finish(other)
    assert code == 0, err
    assert the_run().status == Run.Status.COMPLETED
    assert_every_row_once()
    assert_chunks_tile()


@skip_locked_only
def test_commands_stopping_together_leave_the_run_stopped(spawn_manage: SpawnManage) -> None:
    make_counters(2000)
    both = [
        spawn_manage(*COMMAND, "--workers", "2", "--max-runtime", "1", env=SLOWLY) for _ in range(2)
    ]

    for process in both:
        code, _, err = finish(process)
        assert code == 3, err

    run = the_run()
    assert run.status == Run.Status.STOPPED
    assert not Worker.objects.exists()
    assert_ledger_matches_data(run)


@skip_locked_only
def test_restart_with_workers_starts_over_once() -> None:
    make_counters(300)
    args = (*COMMAND, "--workers", "3")
    assert call(*args)[0] == 0

    code, out, _ = call(*args, "--restart")

    assert code == 0, out
    assert set(hits().values()) == {2}
    run = the_run()
    assert (run.rows_scanned, run.chunks_done) == (300, 6)
    assert_chunks_tile(run)


@skip_locked_only
def test_a_pause_request_stops_every_worker(spawn_manage: SpawnManage) -> None:
    make_counters(800)
    process = spawn_manage(*COMMAND, "--workers", "2", env=SLOWLY)
    wait_for(chunks_done_at_least(2), "two chunks done")

    Run.objects.update(requested=Run.Request.PAUSE, requested_by="ops")
    code, _, err = finish(process)

    assert code == 3, err
    run = the_run()
    assert run.status == Run.Status.PAUSED
    assert (
        f"CommandError: Paused by ops. Re-run the same command to resume run {run.name!r}."
    ) in err.splitlines()
    assert_ledger_matches_data(run)


@skip_locked_only
def test_a_failing_chunk_fails_the_parallel_run_with_exit_1(run_manage: RunManage) -> None:
    pks = make_counters(300)
    Counter.objects.filter(pk=pks[170]).update(name="poison")
    command = (
        "backfill_iterate", "testapp.Counter", "--transform",
        "tests.transforms.count_hit_unless_poison", "--batch-size", "50", "--workers", "2",
    )  # fmt: skip

    failed = run_manage(*command)

    assert failed.returncode == 1, failed.stderr
    assert (
        f"Transform 'tests.transforms.count_hit_unless_poison' raised on testapp.Counter "
        f"pk={pks[170]}: ValueError: row {pks[170]} is poisoned"
    ) in failed.stderr
    assert the_run().status == Run.Status.FAILED
    assert_ledger_matches_data()

    Counter.objects.filter(pk=pks[170]).update(name="fixed")
    done = run_manage(*command)

    assert done.returncode == 0, done.stderr
    assert_every_row_once()
    assert_chunks_tile()


@skip_locked_only
def test_parallel_mode_is_refused_inside_a_transaction_before_forking() -> None:
    with transaction.atomic(), pytest.raises(InsideTransaction):
        backfill.iterate(Counter.objects.all(), transform=FAST, workers=2)
    assert not Run.objects.exists()
