"""kill -9 at random moments, then resume: every row transformed exactly once, none skipped.

Each trial starts the command in a subprocess and SIGKILLs it at a seeded random moment:
mostly while it works chunks, sometimes while it is still starting. After every kill the
ledger and the data must agree (a row was transformed exactly when its chunk is recorded
done), and the next trial resumes where the killed one left off. A final run finishes it.
Set BACKFILL_TEST_SEED to replay a failure.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from django.db import connection

from backfill.models import Run, Worker
from tests.conftest import RunManage, SpawnManage
from tests.run_support import (
    SLOW,
    assert_chunks_tile,
    assert_every_row_once,
    assert_ledger_matches_data,
    hits,
    make_counters,
    skip_locked_only,
    the_run,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)

SEED = int(os.environ.get("BACKFILL_TEST_SEED", "20261124"))
ROWS = 2000
COMMAND = (
    "backfill_iterate", "testapp.Counter", "--transform", SLOW, "--batch-size", "50",
    "--progress", "none",
)  # fmt: skip
SLOWLY = {"BACKFILL_TEST_ROW_SECONDS": "0.002"}  # about 0.1 s per chunk of 50 rows


def started_by(pid: int) -> bool:
    return Worker.objects.filter(host=socket.gethostname(), pid=pid).exists()


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def kill_at_random_moment(
    process: subprocess.Popen[str], rng: random.Random, trial: int, workers: int = 0
) -> str:
    """SIGKILL the process (and its workers) at a random moment; say which kind of moment."""
    if trial % 5 == 4:
        # From spawn: interpreter start-up, settings, ledger.start, or the first chunks.
        time.sleep(rng.uniform(0.0, 0.7))
        moment = "any"
    else:

        def working() -> bool:
            if process.poll() is not None:
                return True
            return started_by(process.pid) and Worker.objects.count() > workers

        wait_for(working, "the run to start")
        time.sleep(rng.uniform(0.0, 0.4))
        moment = "working"
    for pid in children_of(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    return moment


def quiet() -> bool:
    """No other session on the test database: every killed process's backend is gone."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        row = cursor.fetchone()
        assert row is not None
        return bool(row[0] == 0)


def check_after_kill(process: subprocess.Popen[str], trial: int) -> int:
    """The invariant after a kill; returns the run's chunks done (0 before it exists)."""
    context = f"seed {SEED}, trial {trial}"
    assert process.returncode in (-signal.SIGKILL, 0), (context, process.returncode)
    wait_for(quiet, "the killed backends to go")
    run = Run.objects.first()
    if run is None:
        assert set(hits().values()) == {0}, context
        return 0
    assert_ledger_matches_data(run)
    return run.chunks_done


def test_kill_9_at_random_moments_then_resume_transforms_every_row_once(
    spawn_manage: SpawnManage, run_manage: RunManage
) -> None:
    trials = 20 if connection.vendor == "postgresql" else 6
    rng = random.Random(SEED)
    make_counters(ROWS)
    progress = []

    for trial in range(trials):
        process = spawn_manage(*COMMAND, env=SLOWLY)
        moment = kill_at_random_moment(process, rng, trial)
        progress.append((moment, check_after_kill(process, trial)))

    done = run_manage(*COMMAND)

    assert done.returncode == 0, done.stderr
    assert_every_row_once()
    assert_chunks_tile()
    assert the_run().status == Run.Status.COMPLETED
    # The trials must have killed a run that was working, not only one that never started.
    chunks = [n for _, n in progress]
    advanced = sum(1 for before, after in zip([0, *chunks], chunks, strict=False) if after > before)
    assert advanced >= trials // 3, (SEED, progress)
    assert chunks[-1] < ROWS // 50, (SEED, progress)


@skip_locked_only
def test_kill_9_of_parent_and_workers_then_resume_transforms_every_row_once(
    spawn_manage: SpawnManage, run_manage: RunManage
) -> None:
    rng = random.Random(SEED + 1)
    make_counters(ROWS)
    command = (*COMMAND, "--workers", "3")
    progress = []

    for trial in range(8):
        process = spawn_manage(*command, env={"BACKFILL_TEST_ROW_SECONDS": "0.004"})
        moment = kill_at_random_moment(process, rng, trial, workers=3)
        progress.append((moment, check_after_kill(process, trial)))

    done = run_manage(*command)

    assert done.returncode == 0, done.stderr
    assert_every_row_once()
    assert_chunks_tile()
    assert the_run().status == Run.Status.COMPLETED
    chunks = [n for _, n in progress]
    assert chunks[-1] < ROWS // 50, (SEED, progress)
    assert sum(1 for a, b in zip([0, *chunks], chunks, strict=False) if b > a) >= 3, progress
