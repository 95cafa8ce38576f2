"""One run, one holder: a second process exits 4 naming it, and a dead holder never blocks."""

from __future__ import annotations

import signal
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

import backfill
from backfill.conf import get_setting
from backfill.control import process_exists
from backfill.exceptions import Interrupted
from backfill.models import Run, Worker
from backfill.stopping import StopFlag
from tests.conftest import RunManage, SpawnManage
from tests.run_support import (
    FAST,
    SLOW,
    assert_every_row_once,
    assert_ledger_matches_data,
    call,
    chunks_done_at_least,
    finish,
    make_counters,
    the_run,
    wait_for,
)
from tests.support import postgres_only
from tests.testapp.models import Counter

pytestmark = pytest.mark.django_db(transaction=True)

COMMAND = ("backfill_iterate", "testapp.Counter", "--transform", FAST, "--batch-size", "50")


def stopped_run(rows: int = 200) -> Run:
    """A run that started and stopped at once: resumable, with no live worker."""
    make_counters(rows)
    flag = StopFlag()
    flag.set("test")
    with pytest.raises(Interrupted):
        backfill.iterate(Counter.objects.all(), transform=FAST, batch_size=50, stop=flag)
    return the_run()


def holder(run: Run, host: str, pid: int, seconds_ago: float) -> Worker:
    return Worker.objects.create(
        run=run, host=host, pid=pid, heartbeat_at=timezone.now() - timedelta(seconds=seconds_ago)
    )


def test_a_fresh_holder_on_another_host_makes_the_run_busy() -> None:
    run = stopped_run()
    holder(run, "db-worker-2", 4242, seconds_ago=3)

    code, out, message = call(*COMMAND)

    assert code == 4
    assert out == ""
    assert message == (
        f"Run {run.name!r} is already being worked by db-worker-2 pid 4242 (last heartbeat 3 s "
        "ago). Wait for it or stop it (SIGTERM); a dead process's claim expires 60 s after its "
        "last heartbeat. To work it in parallel, start every process with --workers."
    )
    assert set(hits().values()) == {0}
    assert Worker.objects.get().pid == 4242


def hits() -> dict[int, int]:
    return dict(Counter.objects.values_list("pk", "hits"))


def test_a_holder_past_its_lease_has_expired_and_the_run_resumes() -> None:
    run = stopped_run()
    lease = float(get_setting("LEASE_SECONDS"))
    holder(run, "db-worker-2", 4242, seconds_ago=lease + 1)

    code, out, _ = call(*COMMAND)

    assert code == 0, out
    assert_every_row_once()
    assert not Worker.objects.exists()
    assert the_run().status == Run.Status.COMPLETED


def test_a_holder_on_this_host_whose_process_is_gone_does_not_block() -> None:
    run = stopped_run()
    gone = subprocess.Popen(["sleep", "30"])
    gone.kill()
    gone.wait()
    assert not process_exists(gone.pid)
    holder(run, socket.gethostname(), gone.pid, seconds_ago=1)

    code, out, _ = call(*COMMAND)

    assert code == 0, out
    assert_every_row_once()


def test_a_live_holder_on_this_host_makes_the_run_busy() -> None:
    run = stopped_run()
    with subprocess.Popen(["sleep", "30"]) as alive:
        holder(run, socket.gethostname(), alive.pid, seconds_ago=1)
        try:
            code, _, message = call(*COMMAND)
        finally:
            alive.kill()

    assert code == 4
    assert f"already being worked by {socket.gethostname()} pid {alive.pid} " in message
    assert set(hits().values()) == {0}


def test_an_unreaped_zombie_counts_as_gone() -> None:
    process = subprocess.Popen(["true"])
    stat = Path(f"/proc/{process.pid}/stat")
    wait_for(lambda: stat.read_text().split()[2] == "Z", "a zombie")
    try:
        assert not process_exists(process.pid)
    finally:
        process.wait()


def test_restart_is_refused_while_another_process_holds_the_run() -> None:
    run = stopped_run()
    holder(run, "db-worker-2", 4242, seconds_ago=1)

    code, _, message = call(*COMMAND, "--restart")

    assert code == 4
    assert "db-worker-2 pid 4242" in message
    assert the_run().frontier == run.frontier


def test_a_second_process_on_a_running_run_exits_4_at_once(
    spawn_manage: SpawnManage, run_manage: RunManage
) -> None:
    make_counters(400)
    command = ("backfill_iterate", "testapp.Counter", "--transform", SLOW, "--batch-size", "50")
    first = spawn_manage(*command, env={"BACKFILL_TEST_ROW_SECONDS": "0.02"})
    wait_for(chunks_done_at_least(1), "the first process to work")

    second = run_manage(*command, timeout=30)

    assert second.returncode == 4, second.stderr
    assert (
        f"is already being worked by {socket.gethostname()} pid {first.pid} (last heartbeat"
    ) in second.stderr
    assert second.stderr.startswith("CommandError: Run ")
    first.send_signal(signal.SIGTERM)
    code, _, err = finish(first)
    assert code == 3, err
    assert_ledger_matches_data()


@postgres_only
def test_workers_do_not_join_a_single_process_run(
    spawn_manage: SpawnManage, run_manage: RunManage
) -> None:
    make_counters(400)
    command = ("backfill_iterate", "testapp.Counter", "--transform", SLOW, "--batch-size", "50")
    first = spawn_manage(*command, env={"BACKFILL_TEST_ROW_SECONDS": "0.02"})
    wait_for(chunks_done_at_least(1), "the first process to work")

    second = run_manage(*command, "--workers", "2", timeout=30)

    assert second.returncode == 4, second.stderr
    assert f"pid {first.pid}" in second.stderr
    first.send_signal(signal.SIGTERM)
    assert finish(first)[0] == 3
    assert_ledger_matches_data()
