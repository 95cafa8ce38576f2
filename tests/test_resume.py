"""Runs resume from their checkpoint, restart on request, and finish only once."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import backfill
from backfill import events, status
from backfill.chunks import KeyPlanner
from backfill.exceptions import Interrupted
from backfill.identity import default_name
from backfill.ledger import Ledger
from backfill.models import Chunk, Run
from backfill.stopping import StopFlag
from backfill.strategies import IterateStrategy
from backfill.transforms import resolve
from tests.run_support import (
    FAST,
    FakeClock,
    assert_chunks_tile,
    assert_every_row_once,
    assert_ledger_matches_data,
    call,
    hits,
    make_counters,
    the_run,
)
from tests.testapp.models import Counter

pytestmark = pytest.mark.django_db(transaction=True)


def stop_after(chunks: int, flag: StopFlag) -> events.Reporter:
    """A reporter that asks the run to stop once ``chunks`` chunks are done in this call."""

    def report(event: events.Event) -> None:
        if isinstance(event, events.ChunkDone) and event.chunks >= chunks:
            flag.set("test")

    return report


def test_stopped_run_resumes_from_its_frontier() -> None:
    pks = make_counters(500)
    flag = StopFlag()

    with pytest.raises(Interrupted) as stopped:
        backfill.iterate(
            Counter.objects.all(), transform=FAST, batch_size=50, stop=flag,
            reporter=stop_after(3, flag),
        )  # fmt: skip

    run = the_run()
    assert run.status == Run.Status.STOPPED
    assert run.frontier == str(pks[149])
    assert stopped.value.result.checkpoint == pks[149]
    assert stopped.value.result.rows_scanned == 150
    assert "Re-run the same command to resume run" in str(stopped.value)
    assert_ledger_matches_data(run)
    assert sum(hits().values()) == 150

    seen: list[events.Event] = []
    result = backfill.iterate(
        Counter.objects.all(), transform=FAST, batch_size=50, reporter=seen.append
    )

    assert result.status == "completed"
    assert (result.rows_scanned, result.chunks) == (350, 7)
    assert (result.total_rows_scanned, result.total_chunks) == (500, 10)
    started = [e for e in seen if isinstance(e, events.Started)]
    assert started[0].resumed is True
    assert started[0].checkpoint == pks[149]
    first_new = Chunk.objects.filter(run=run).order_by("id")[3]
    assert first_new.lo == str(pks[149])
    assert_every_row_once()
    assert_chunks_tile(run)
    assert the_run().status == Run.Status.COMPLETED


def test_max_runtime_stops_on_the_injected_clock_and_resumes() -> None:
    make_counters(300)
    clock = FakeClock(0.0)

    def tick(event: events.Event) -> None:
        if isinstance(event, events.ChunkDone):
            clock.advance(10.0)

    with pytest.raises(Interrupted) as stopped:
        backfill.iterate(
            Counter.objects.all(), transform=FAST, batch_size=50, max_runtime=25,
            clock=clock, reporter=tick,
        )  # fmt: skip

    assert str(stopped.value).startswith("Stopped by --max-runtime 25s after 3 chunk(s)")
    assert the_run().status == Run.Status.STOPPED
    assert_ledger_matches_data()

    result = backfill.iterate(Counter.objects.all(), transform=FAST, batch_size=50)

    assert (result.rows_scanned, result.total_rows_scanned) == (150, 300)
    assert_every_row_once()


def test_rerunning_a_completed_run_says_so_and_writes_nothing() -> None:
    make_counters(120)
    args = ("backfill_iterate", "testapp.Counter", "--transform", FAST, "--batch-size", "50")
    assert call(*args)[0] == 0

    with CaptureQueriesContext(connection) as queries:
        code, out, _ = call(*args)

    assert code == 0
    name = the_run().name
    assert out.splitlines()[0] == (
        f"Run {name!r} already completed; nothing to do. "
        "Pass --restart to run it again from the beginning."
    )
    table = Counter._meta.db_table
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if table in q["sql"] and not q["sql"].lstrip().upper().startswith("SELECT")
    ]
    assert writes == []
    assert_every_row_once()
    assert Chunk.objects.count() == 3


def test_restart_starts_over_from_the_beginning() -> None:
    make_counters(120)
    args = ("backfill_iterate", "testapp.Counter", "--transform", FAST, "--batch-size", "50")
    assert call(*args)[0] == 0

    code, out, _ = call(*args, "--restart")

    assert code == 0
    assert out.startswith(f"Completed run {the_run().name!r}.")
    assert set(hits().values()) == {2}
    run = the_run()
    assert (run.rows_scanned, run.chunks_done) == (120, 3)
    assert_chunks_tile(run)


def test_restart_of_a_stopped_run_forgets_its_checkpoint() -> None:
    make_counters(200)
    flag = StopFlag()
    with pytest.raises(Interrupted):
        backfill.iterate(
            Counter.objects.all(), transform=FAST, batch_size=50, stop=flag,
            reporter=stop_after(2, flag),
        )  # fmt: skip

    result = backfill.iterate(Counter.objects.all(), transform=FAST, batch_size=50, restart=True)

    assert (result.rows_scanned, result.total_rows_scanned) == (200, 200)
    counts = sorted(hits().items())
    assert [n for _, n in counts[:100]] == [2] * 100
    assert [n for _, n in counts[100:]] == [1] * 100


def test_run_identity_comes_from_command_model_transform_and_filters() -> None:
    pks = make_counters(100)
    low = ("--filter", f"id__lte={pks[49]}")
    args = ("backfill_iterate", "testapp.Counter", "--transform", FAST, "--batch-size", "50")

    assert call(*args, *low)[0] == 0
    assert "already completed" in call(*args, *low)[1]  # the same command: the same run
    assert call(*args)[0] == 0  # no filter: another run

    assert Run.objects.count() == 2
    strategy = IterateStrategy(
        Counter.objects.filter(id__lte=pks[49]), resolve(Counter, FAST, rows=False)
    )
    expected = default_name(strategy, strategy.describe(None).spec)
    assert Run.objects.filter(name=expected, status=Run.Status.COMPLETED).exists()
    assert expected.startswith(f"iterate testapp.Counter {FAST} ")


def test_a_name_used_by_another_backfill_is_bad_input() -> None:
    make_counters(60)
    args = ("backfill_iterate", "testapp.Counter", "--batch-size", "50", "--name", "counters")
    assert call(*args, "--transform", FAST)[0] == 0
    Run.objects.update(status=Run.Status.STOPPED)

    code, _, message = call(*args, "--transform", "tests.transforms.count_hit_slowly")

    assert code == 2
    assert message.startswith("Run 'counters' was started as a different backfill (iterate ")
    assert set(hits().values()) == {1}


def test_a_failed_run_resumes_after_the_cause_is_fixed() -> None:
    pks = make_counters(200)
    Counter.objects.filter(pk=pks[120]).update(name="poison")
    poison = "tests.transforms.count_hit_unless_poison"
    args = ("backfill_iterate", "testapp.Counter", "--transform", poison, "--batch-size", "50")

    code, _, message = call(*args)

    assert code == 1
    assert f"pk={pks[120]}" in message
    run = the_run()
    assert run.status == Run.Status.FAILED
    assert run.frontier == str(pks[99])
    assert_ledger_matches_data(run)

    Counter.objects.filter(pk=pks[120]).update(name="fixed")
    code, out, _ = call(*args)

    assert code == 0, out
    assert_every_row_once()
    assert_chunks_tile()


def test_the_checkpoint_is_the_table_start_while_the_first_chunk_waits() -> None:
    """A pending chunk from the table's start (lo None) holds the checkpoint there, whatever
    the frontier, in the ledger (what a resume reports) and in backfill_runs alike."""
    pks = make_counters(30)
    run = Run.objects.create(
        name="first chunk pending",
        strategy="iterate",
        model_label="testapp.Counter",
        parallel=True,
        frontier=str(pks[19]),
    )
    Chunk.objects.create(run=run, lo=None, hi=str(pks[9]), rows_scanned=10)
    Chunk.objects.create(
        run=run, lo=str(pks[9]), hi=str(pks[19]), rows_scanned=10, status=Chunk.Status.DONE
    )
    ledger = Ledger("default", KeyPlanner(Counter, connection), lease=60.0)

    assert ledger.checkpoint(run) is None
    assert status.get_run("first chunk pending").checkpoint is None
