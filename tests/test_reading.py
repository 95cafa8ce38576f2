"""How a chunk's rows are read and written on PostgreSQL: a server-side cursor, with the next
batch read ahead or the last batch's changes written while the transform works. (MySQL's
writes sent ahead are tested in test_mysql.py; a write's failure here, on both.)

Batches are made two rows long here so that a nine-row chunk takes five FETCHes. Whether the
next batch was read ahead is seen from a second connection: the rows of a batch are locked
(``FOR NO KEY UPDATE``) exactly when the server has read them. Whether a batch was written is
seen from the transform's own connection, inside the chunk's transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import DatabaseError, connection

import backfill
from backfill import events, strategies
from backfill.exceptions import RowFailed, TransformFailed
from example_site.blog.models import BlogPost
from tests.run_support import FakeClock, Recorder, make_counters
from tests.sessions import connect
from tests.support import committing, postgres_only, row_locks_only, seed_posts
from tests.test_safety import RowHolder, backend_pid, run_kind
from tests.testapp.models import Counter, Ticket

pytestmark = [committing]

FETCH = 2


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strategies, "FETCH_SIZE", FETCH)


def locked_elsewhere(ids: list[int]) -> list[int]:
    """Which of ``ids`` another transaction cannot lock now."""
    with connect() as other:
        free = other.execute(
            "SELECT id FROM blog_blogpost WHERE id = ANY(%s) FOR UPDATE SKIP LOCKED", [ids]
        ).fetchall()
    return sorted(set(ids) - {pk for (pk,) in free})


def run_on_posts(kind: str, on_row: Callable[[int], None]) -> backfill.Result:
    """Set every post's author to "x" in one chunk, calling ``on_row(pk)`` first for each row."""
    if kind == "iterate":

        def rename(post: BlogPost) -> None:
            on_row(post.pk)
            post.author = "x"

        return backfill.iterate(BlogPost.objects.all(), transform=rename, batch_size=100)

    def rename_row(row: dict[str, Any]) -> dict[str, Any]:
        on_row(row["pk"])
        return {"author": "x"}

    return backfill.cursor(
        BlogPost.objects.all(), fields=["author"], transform=rename_row, batch_size=100
    )


def written_here() -> int:
    """Posts with author "x" as this connection sees them (the chunk's own writes included).
    A query of the transform's own: it runs while a statement is in flight."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM blog_blogpost WHERE author = 'x'")
        (count,) = cursor.fetchone()
    return int(count)


@postgres_only
@pytest.mark.parametrize("kind", ["iterate", "cursor"])
def test_with_nothing_to_write_the_next_batch_is_read_while_the_transform_works(
    kind: str,
) -> None:
    ids = seed_posts(9)
    BlogPost.objects.filter(pk__in=ids[:6]).update(author="x")  # batches 1 to 3 change nothing
    locked: dict[int, list[int]] = {}

    def on_row(pk: int) -> None:
        if pk in (ids[0], ids[2]):
            assert written_here() == 6
            locked[pk] = locked_elsewhere(ids)

    result = run_on_posts(kind, on_row)

    # Transforming batch 1, batch 2 has been read too; transforming batch 2, batch 3.
    assert locked == {ids[0]: ids[:4], ids[2]: ids[:6]}
    assert result.rows_changed == 3
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"x"}


@postgres_only
@pytest.mark.parametrize("kind", ["iterate", "cursor"])
def test_a_batch_is_written_while_the_transform_works_on_the_next(kind: str) -> None:
    ids = seed_posts(9)
    seen: dict[int, tuple[int, list[int]]] = {}

    def on_row(pk: int) -> None:
        if pk in (ids[0], ids[2], ids[4]):
            seen[pk] = (written_here(), locked_elsewhere(ids))

    result = run_on_posts(kind, on_row)

    # Batch 1: batch 2 read ahead, nothing written yet. Batch 2: batch 1 written meanwhile, in
    # the chunk's transaction (batch 3 is read after it). Batch 3: batch 2 written.
    assert seen == {ids[0]: (0, ids[:4]), ids[2]: (2, ids[:4]), ids[4]: (4, ids[:6])}
    assert result.rows_changed == 9
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"x"}
    # Nothing of it was visible to others before the chunk's commit: one chunk, one commit.
    assert locked_elsewhere(ids) == []


@row_locks_only
def test_a_batch_write_the_transform_swallowed_still_fails_the_chunk() -> None:
    Ticket.objects.bulk_create(Ticket(code=f"t{i}") for i in range(6))
    pks = list(Ticket.objects.order_by("pk").values_list("pk", flat=True))
    swallowed: list[str] = []

    def same_code(row: dict[str, Any]) -> dict[str, Any]:
        if row["pk"] == pks[2]:
            # Batch 1's write (two rows given one code) is in flight; this query collects it.
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
            except DatabaseError as exc:
                swallowed.append(type(exc).__name__)
        return {"code": "same"}

    with pytest.raises(RowFailed) as failed:
        backfill.cursor(Ticket.objects.all(), fields=["code"], transform=same_code, batch_size=100)

    assert swallowed and set(swallowed) == {"IntegrityError"}  # bisection tries again
    # The chunk failed with the write's own error (not with "current transaction is aborted"
    # from the statement after it), narrowed to the row the database refused.
    assert type(failed.value.__cause__).__name__ == "IntegrityError"
    assert f"testapp.Ticket pk={pks[1]} was refused by the database: IntegrityError" in str(
        failed.value
    )
    assert sorted(Ticket.objects.values_list("code", flat=True)) == [f"t{i}" for i in range(6)]


@postgres_only
@pytest.mark.parametrize("kind", ["iterate", "cursor"])
def test_a_transform_failing_with_a_fetch_in_flight_rolls_back_cleanly(kind: str) -> None:
    ids = seed_posts(9)
    pid = backend_pid()

    def on_row(pk: int) -> None:
        if pk == ids[2]:  # batch 2, with batch 3 read ahead
            raise ValueError("bad row")

    with pytest.raises(TransformFailed, match=r"pk=\d+: ValueError: bad row"):
        run_on_posts(kind, on_row)

    # The rollback went through on the same connection (not dropped for a command in progress).
    assert backend_pid() == pid
    assert not BlogPost.objects.filter(author="x").exists()
    assert locked_elsewhere(ids) == []
    assert (
        backfill.cursor(
            BlogPost.objects.all(), fields=["author"], set={"author": "y"}, restart=True
        ).rows_changed
        == 9
    )


@postgres_only
@pytest.mark.parametrize("kind", ["iterate", "cursor"])
def test_a_lock_timeout_a_transform_caught_is_still_retried_as_one(kind: str) -> None:
    make_counters(9)
    pks = list(Counter.objects.order_by("pk").values_list("pk", flat=True))
    clock, recorder = FakeClock(), Recorder()
    holder = RowHolder(
        f'SELECT 1 FROM "{Counter._meta.db_table}" WHERE id = %s FOR UPDATE', [pks[2]]
    )
    sleep = holder.released_by_backoff(clock)
    caught: list[str] = []

    def on_row(pk: int) -> None:
        if pk == pks[0]:
            # Batch 2's FETCH is in flight; this query waits for it, and meets its lock timeout.
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
            except DatabaseError as exc:
                caught.append(type(exc).__name__)

    with holder:
        result = run_kind(
            kind, batch_size=9, lock_timeout=0.2, clock=sleep, reporter=recorder, on_row=on_row
        )

    assert caught == ["OperationalError"]
    # Retried as a lock timeout, not failed with "current transaction is aborted".
    retries = recorder.of(events.Retrying)
    assert [(r.reason, r.attempt) for r in retries] == [("lock timeout", 1)]
    assert result.status == "completed"
    assert result.rows_changed == 9
    assert set(Counter.objects.values_list("hits", flat=True)) == {1}


@postgres_only
@pytest.mark.parametrize("kind", ["iterate", "cursor"])
def test_a_lock_timeout_in_a_batch_read_ahead_is_retried(kind: str) -> None:
    make_counters(9)
    fifth = Counter.objects.order_by("pk").values_list("pk", flat=True)[4]  # batch 3
    clock, recorder = FakeClock(), Recorder()
    holder = RowHolder(
        f'SELECT 1 FROM "{Counter._meta.db_table}" WHERE id = %s FOR UPDATE', [fifth]
    )
    sleep = holder.released_by_backoff(clock)

    with holder:
        result = run_kind(kind, batch_size=9, lock_timeout=0.2, clock=sleep, reporter=recorder)

    retries = recorder.of(events.Retrying)
    assert [(r.reason, r.attempt) for r in retries] == [("lock timeout", 1)]
    assert result.status == "completed"
    assert result.rows_changed == 9
    assert set(Counter.objects.values_list("hits", flat=True)) == {1}
