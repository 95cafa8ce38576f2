"""Keyset chunks over the primary key: any orderable key, no OFFSET, fixed and filter-free."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

import backfill
from backfill.models import Run
from example_site.blog.models import BlogPost
from tests import sample_transforms
from tests.support import chunk_bounds, committing, run, seed_posts
from tests.testapp.models import CodeItem, SparseItem, UUIDItem

pytestmark = committing

SPARSE_IDS = [1, 2, 50, 51, 10_000, 10_001, 2**31 + 5, 2**40, 2**40 + 1, 2**62]


def _seed_uuid(n: int) -> list[Any]:
    UUIDItem.objects.bulk_create(UUIDItem(id=uuid.uuid4(), name="u") for _ in range(n))
    return sorted(UUIDItem.objects.values_list("pk", flat=True))


def _seed_code(n: int) -> list[Any]:
    # Inserted out of key order: keyset order is the key's, not the insertion's.
    CodeItem.objects.bulk_create(CodeItem(code=f"k-{(i * 7) % n:03d}", name="n") for i in range(n))
    return sorted(CodeItem.objects.values_list("pk", flat=True))


def _seed_sparse(n: int) -> list[Any]:
    SparseItem.objects.bulk_create(SparseItem(id=i, name="s") for i in SPARSE_IDS[:n])
    return sorted(SparseItem.objects.values_list("pk", flat=True))


def _seed_blog(n: int) -> list[Any]:
    return seed_posts(n)


KEYS = {
    "integer": ("blog.BlogPost", "author", _seed_blog),
    "big integer": ("testapp.SparseItem", "name", _seed_sparse),
    "uuid": ("testapp.UUIDItem", "name", _seed_uuid),
    "string": ("testapp.CodeItem", "name", _seed_code),
}


@pytest.mark.parametrize("command", ["backfill_update", "backfill_iterate", "backfill_cursor"])
@pytest.mark.parametrize(("model", "field", "seed"), KEYS.values(), ids=KEYS.keys())
def test_every_orderable_key_is_chunked_in_key_order(
    command: str, model: str, field: str, seed: Any
) -> None:
    if model == "testapp.UUIDItem" and getattr(connection, "mysql_is_mariadb", False):
        pytest.skip(
            "MariaDB's native UUID type orders keys by its own byte order, not by their text: "
            "the chunks follow the server's order, which this test's sorted() cannot predict"
        )
    keys = seed(10)

    outcome = run(command, model, "--set", f"{field}=Z", "--batch-size", "3", "--json")

    assert outcome.returncode == 0, outcome
    values = {getattr(obj, field) for obj in _model(model).objects.all()}
    assert values == {"Z"}
    pk = _model(model)._meta.pk
    text = [str(pk.to_python(k)) for k in keys]
    # (None, k3], (k3, k6], (k6, k9], (k9, k10]: full chunks, each starting where the last ended.
    assert chunk_bounds() == [
        (None, text[2], 3),
        (text[2], text[5], 3),
        (text[5], text[8], 3),
        (text[8], text[9], 1),
    ]


def _model(label: str) -> Any:
    from django.apps import apps

    return apps.get_model(label)


def test_sparse_keys_still_give_full_chunks() -> None:
    _seed_sparse(10)

    outcome = run("backfill_update", "testapp.SparseItem", "--set", "views=7", "--batch-size", "4")

    assert outcome.returncode == 0, outcome
    # Gaps of up to 2**61 between keys: a range-by-value plan would make empty chunks here.
    assert [rows for _lo, _hi, rows in chunk_bounds()] == [4, 4, 2]
    assert set(SparseItem.objects.values_list("views", flat=True)) == {7}


def test_no_offset_paging_anywhere() -> None:
    seed_posts(30)

    with CaptureQueriesContext(connection) as queries:
        for command in ("backfill_update", "backfill_iterate", "backfill_cursor"):
            outcome = run(command, "blog.BlogPost", "--set", "author=x", "--batch-size", "7")
            assert outcome.returncode == 0, outcome

    sql = [q["sql"].upper() for q in queries.captured_queries]
    assert any("BLOG_BLOGPOST" in s for s in sql)
    assert not [s for s in sql if "OFFSET" in s]


def test_chunk_bounds_do_not_depend_on_the_filter() -> None:
    pks = seed_posts(20)
    BlogPost.objects.filter(pk__in=pks[::6]).update(author="")

    everything = run(
        "backfill_update", "blog.BlogPost", "--set", "title=t", "--batch-size", "5", "--json"
    )
    filtered = run(
        "backfill_update",
        "blog.BlogPost",
        "--set",
        "title=t",
        "--filter",
        "author=",
        "--batch-size",
        "5",
        "--json",
    )

    assert everything.returncode == filtered.returncode == 0
    names = list(Run.objects.order_by("created_at").values_list("name", flat=True))
    assert len(names) == 2
    assert chunk_bounds(names[0]) == chunk_bounds(names[1])
    assert len(chunk_bounds(names[1])) == 4
    assert Run.objects.get(name=names[1]).rows_changed == 0  # titles already "t"


def test_filter_limits_rows_written_not_rows_scanned() -> None:
    pks = seed_posts(20)
    BlogPost.objects.filter(pk__in=pks[:3]).update(author="")

    outcome = run(
        "backfill_update",
        "blog.BlogPost",
        "--set",
        "author=anon",
        "--filter",
        "author=",
        "--exclude",
        f"pk={pks[0]}",
        "--batch-size",
        "8",
        "--json",
    )

    assert outcome.returncode == 0, outcome
    assert list(BlogPost.objects.filter(author="anon").values_list("pk", flat=True)) == [
        pks[1],
        pks[2],
    ]
    assert BlogPost.objects.get(pk=pks[0]).author == ""
    assert chunk_bounds()[-1][1] == str(pks[-1])


def test_upper_bound_is_fixed_when_the_run_starts() -> None:
    pks = seed_posts(10)
    inserted: list[int] = []

    def transform(post: BlogPost) -> None:
        if not inserted:  # in the first chunk: 5 rows above the table's end, committed with it
            late = BlogPost.objects.bulk_create(
                BlogPost(title="late", author="late") for _ in "12345"
            )
            inserted.extend(p.pk for p in late)
        post.author = "done"

    result = backfill.iterate(BlogPost.objects.all(), transform=transform, batch_size=3)

    assert result.rows_scanned == 10
    assert Run.objects.get().pk_end == str(pks[-1])
    assert set(BlogPost.objects.filter(pk__in=pks).values_list("author", flat=True)) == {"done"}
    assert len(inserted) == 5
    assert set(BlogPost.objects.filter(pk__in=inserted).values_list("author", flat=True)) == {
        "late"
    }


def test_each_chunk_commits_in_its_own_transaction() -> None:
    """While chunk 3 runs, a second connection already sees chunks 1 and 2 and not chunk 3."""
    pks = seed_posts(9)
    seen: dict[int, str] = {}
    other = connections.create_connection("default")

    def transform(row: dict[str, Any]) -> dict[str, Any]:
        if row["pk"] == pks[6]:
            with other.cursor() as cursor:
                cursor.execute("SELECT id, author FROM blog_blogpost ORDER BY id")
                seen.update({pk: author for pk, author in cursor.fetchall()})
        return {"author": "done"}

    try:
        backfill.cursor(
            BlogPost.objects.all(), fields=["author"], transform=transform, batch_size=3
        )
    finally:
        other.close()

    assert [seen[pk] for pk in pks] == ["done"] * 6 + [" some  author "] * 3
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"done"}


@pytest.mark.parametrize("command", ["backfill_iterate", "backfill_cursor"])
def test_a_failing_transform_keeps_earlier_chunks_and_leaves_later_rows(command: str) -> None:
    pks = seed_posts(20)
    sample_transforms.FAIL_ON["pk"] = pks[11]  # the second row of the third chunk
    func = "explode" if command == "backfill_iterate" else "explode_row"
    try:
        outcome = run(
            command,
            "blog.BlogPost",
            "--transform",
            f"tests.sample_transforms.{func}",
            "--batch-size",
            "5",
        )
    finally:
        sample_transforms.FAIL_ON["pk"] = None

    assert outcome.returncode == 1
    assert f"pk={pks[11]}" in outcome.error
    assert f"ValueError: boom on {pks[11]}" in outcome.error
    assert "earlier chunks are committed" in outcome.error
    assert outcome.error.endswith("re-run the same command to resume.")
    authors = dict(BlogPost.objects.values_list("pk", "author"))
    assert [authors[pk] for pk in pks[:10]] == ["done"] * 10
    # The failing chunk rolled back as a whole, including the row before the failing one.
    assert [authors[pk] for pk in pks[10:]] == [" some  author "] * 10
    failed = Run.objects.get()
    assert (failed.status, failed.chunks_done, failed.rows_changed) == ("failed", 2, 10)
    assert f"pk={pks[11]}" in failed.last_error
