"""SIGINT, SIGTERM and --max-runtime stop a run cleanly (exit 3, checkpointed, resumable).

Real subprocesses: the command runs `tests/manage.py` on the test database while the test
watches the run row and sends the signal.
"""

from __future__ import annotations

import signal
import time

import pytest

from backfill.models import Run, Worker
from tests.conftest import RunManage, SpawnManage
from tests.run_support import (
    SLOW_RUN,
    SLOWLY,
    assert_chunks_tile,
    assert_every_row_once,
    assert_ledger_matches_data,
    chunks_done_at_least,
    finish,
    make_counters,
    skip_locked_only,
    the_run,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 600
COMMAND = (*SLOW_RUN, "--progress", "log")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_after_the_chunk_in_flight_and_the_run_resumes(
    signum: signal.Signals, spawn_manage: SpawnManage, run_manage: RunManage
) -> None:
    make_counters(ROWS)
    process = spawn_manage(*COMMAND, env=SLOWLY)
    wait_for(chunks_done_at_least(2), "two chunks done")

    process.send_signal(signum)
    code, out, err = finish(process)

    assert code == 3, err
    run = the_run()
    assert run.status == Run.Status.STOPPED
    assert 2 <= run.chunks_done < ROWS // 50
    hint = (
        f"CommandError: Stopped by {signum.name} after {run.chunks_done} chunk(s); checkpoint "
        f"saved. Re-run the same command to resume run {run.name!r}."
    )
    assert hint in err.splitlines()
    assert out.splitlines()[0] == hint.removeprefix("CommandError: ")
    assert_ledger_matches_data(run)
    assert not Worker.objects.exists()

    code, out, err = finish_run(run_manage)

    assert code == 0, err
    assert f"resuming after {int(run.frontier or 0)}" in err
    assert_every_row_once()
    assert_chunks_tile()


def finish_run(run_manage: RunManage) -> tuple[int, str, str]:
    done = run_manage(*COMMAND, env={"BACKFILL_TEST_ROW_SECONDS": "0"})
    return done.returncode, done.stdout, done.stderr


def test_max_runtime_stops_cleanly_with_exit_3(run_manage: RunManage) -> None:
    make_counters(ROWS)

    done = run_manage(*COMMAND, "--max-runtime", "0.5", env=SLOWLY)

    assert done.returncode == 3, done.stderr
    run = the_run()
    assert 1 <= run.chunks_done < ROWS // 50
    assert (
        f"CommandError: Stopped by --max-runtime 0.5s after {run.chunks_done} chunk(s); "
        f"checkpoint saved. Re-run the same command to resume run {run.name!r}."
    ) in done.stderr
    assert_ledger_matches_data(run)

    code, _, err = finish_run(run_manage)

    assert code == 0, err
    assert_every_row_once()


def test_a_second_sigint_aborts_the_chunk_in_flight_and_still_exits_3(
    spawn_manage: SpawnManage, run_manage: RunManage
) -> None:
    make_counters(ROWS)
    # One chunk of 300 rows takes 1.2 s: both signals land inside it.
    process = spawn_manage(
        *COMMAND, "--batch-size", "300", env={"BACKFILL_TEST_ROW_SECONDS": "0.004"}
    )
    wait_for(lambda: Worker.objects.exists(), "the run to start")
    # Spacing, not timing: the first signal must be handled before the second is sent
    # (the kernel merges two pending SIGINTs), and both must land inside the 1.2 s chunk.
    time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)

    assert code == 3, err
    run = the_run()
    assert (
        "CommandError: Aborted by a second SIGINT; the chunk in flight was rolled back, the "
        "checkpoint is after the last committed chunk. Re-run the same command to resume run "
        f"{run.name!r}."
    ) in err.splitlines()
    assert "Traceback" not in err
    assert run.status == Run.Status.STOPPED
    assert run.chunks_done == 0
    assert_ledger_matches_data(run)

    code, _, err = finish_run(run_manage)

    assert code == 0, err
    assert_every_row_once()


@skip_locked_only
def test_sigterm_stops_every_worker_and_the_parallel_run_resumes(
    spawn_manage: SpawnManage, run_manage: RunManage
) -> None:
    make_counters(ROWS)
    process = spawn_manage(*COMMAND, "--workers", "3", env=SLOWLY)
    wait_for(chunks_done_at_least(3), "three chunks done")

    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)

    assert code == 3, err
    run = the_run()
    assert run.status == Run.Status.STOPPED
    assert run.chunks_done < ROWS // 50
    assert (
        f"CommandError: Stopped by SIGTERM after {run.chunks_done} chunk(s); checkpoint saved. "
        f"Re-run the same command to resume run {run.name!r}."
    ) in err.splitlines()
    assert_ledger_matches_data(run)
    assert not Worker.objects.exists()

    done = run_manage(*COMMAND, "--workers", "3", env={"BACKFILL_TEST_ROW_SECONDS": "0"})

    assert done.returncode == 0, done.stderr
    assert_every_row_once()
    assert_chunks_tile()
