"""How ``--workers`` starts its processes: fork, forkserver (the default) and spawn all work,
and a child that starts clean sets Django up itself, on the parent's database."""

from __future__ import annotations

import pickle

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import backfill
from backfill import processes
from backfill.models import Run
from tests.conftest import RunManage
from tests.run_support import (
    SLOW,
    assert_chunks_tile,
    assert_every_row_once,
    make_counters,
    the_run,
)
from tests.support import postgres_only
from tests.testapp.models import Counter

pytestmark = pytest.mark.django_db(transaction=True)

FORK_WARNING = "use of fork() may lead to deadlocks"


@postgres_only
@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_two_workers_complete_a_run_with_each_start_method(
    run_manage: RunManage, method: str
) -> None:
    make_counters(400)

    done = run_manage(
        "backfill_iterate", "testapp.Counter", "--transform", SLOW, "--batch-size", "50",
        "--workers", "2", "--verbosity", "2",
        env={
            "BACKFILL_TEST_START_METHOD": method,
            "BACKFILL_TEST_ROW_SECONDS": "0.002",
            # Shown, not hidden: Python 3.12+ warns here when a multi-threaded parent forks.
            "PYTHONWARNINGS": "always::DeprecationWarning",
        },
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert f"Starting 2 worker processes ({method})." in done.stdout + done.stderr
    if method != "fork":
        assert FORK_WARNING not in done.stderr
    # Both workers started, set up and reported back: none "exited with code 1".
    assert done.stdout.startswith(f"Completed run {the_run().name!r} with 2 workers.\nscanned")
    assert_every_row_once()
    assert_chunks_tile()
    assert the_run().status == Run.Status.COMPLETED


@postgres_only
def test_set_values_travel_to_spawned_workers(run_manage: RunManage) -> None:
    make_counters(300)

    done = run_manage(
        "backfill_cursor", "testapp.Counter", "--set", "name=spawned", "--batch-size", "50",
        "--workers", "2", env={"BACKFILL_TEST_START_METHOD": "spawn"},
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert set(Counter.objects.values_list("name", flat=True)) == {"spawned"}


@postgres_only
def test_a_transform_that_cannot_travel_is_bad_input_before_anything_is_written() -> None:
    make_counters(10)

    with pytest.raises(backfill.BadInput) as raised:
        backfill.iterate(Counter.objects.all(), transform=lambda obj: None, workers=2)

    message = str(raised.value)
    assert message.startswith(
        "This backfill cannot be sent to worker processes started with 'forkserver': "
    )
    assert message.endswith(
        "Pass a transform defined at module level (not a lambda or a nested function) and a "
        "model that can be imported, or set BACKFILL['WORKER_START_METHOD'] = 'fork'."
    )
    assert not Run.objects.exists()


@postgres_only
def test_an_unknown_start_method_is_bad_input(settings: object) -> None:
    settings.BACKFILL = {"WORKER_START_METHOD": "frok"}  # type: ignore[attr-defined]
    make_counters(10)

    with pytest.raises(backfill.BadInput) as raised:
        backfill.iterate(Counter.objects.all(), transform=SLOW, workers=2)

    assert str(raised.value) == (
        "BACKFILL['WORKER_START_METHOD'] is 'frok', which is not a start method here. "
        "Set it to one of 'forkserver', 'spawn', 'fork'."
    )
    assert not Run.objects.exists()


def test_a_queryset_travels_as_its_query_without_reading_a_row() -> None:
    make_counters(5)
    queryset = Counter.objects.filter(name__startswith="c").only("hits")

    with CaptureQueriesContext(connection) as queries:
        copy = pickle.loads(processes.dumps(queryset))

    assert len(queries) == 0
    assert type(copy) is type(queryset)
    assert str(copy.query) == str(queryset.query)
    assert sorted(c.pk for c in copy) == sorted(c.pk for c in queryset)
