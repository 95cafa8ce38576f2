"""The public Python API: ``backfill.update / iterate / cursor`` return a Result."""

from __future__ import annotations

from typing import Any, cast

import pytest
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat

import backfill
from backfill import events
from backfill.models import Run
from example_site.blog.models import BlogPost
from tests.support import committing, run, seed_posts
from tests.testapp.models import SparseItem


def _fix_author(post: BlogPost) -> None:
    post.author = post.author.strip()


def _fix_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"author": row["author"].strip()}


@committing
class TestResult:
    def test_update(self) -> None:
        pks = seed_posts(7)
        BlogPost.objects.filter(pk__in=pks[:2]).update(author="")

        result = backfill.update(
            BlogPost.objects.filter(author=""), set={"author": "anon"}, batch_size=3
        )

        assert isinstance(result, backfill.Result)
        assert (result.status, result.completed, result.strategy) == ("completed", True, "update")
        assert (result.rows_scanned, result.rows_changed, result.chunks) == (7, 2, 3)
        assert result.elapsed > 0 and result.rate > 0
        assert (result.model, result.database) == ("blog.BlogPost", "default")
        assert BlogPost.objects.filter(author="anon").count() == 2

    def test_update_with_expressions(self) -> None:
        SparseItem.objects.bulk_create(SparseItem(id=i, name="n", views=i) for i in (1, 2, 3))

        result = backfill.update(
            SparseItem.objects.all(),
            set={"views": F("views") * 10, "name": Concat(F("name"), Value("!"))},
        )

        assert result.rows_changed == 3
        assert list(SparseItem.objects.order_by("id").values_list("name", "views")) == [
            ("n!", 10),
            ("n!", 20),
            ("n!", 30),
        ]

    def test_iterate_with_a_callable(self) -> None:
        seed_posts(5)

        result = backfill.iterate(
            BlogPost.objects.only("author"), transform=_fix_author, batch_size=2
        )

        assert (result.rows_scanned, result.rows_changed, result.chunks) == (5, 5, 3)
        assert result.name.startswith("iterate blog.BlogPost tests.test_api._fix_author ")
        assert set(BlogPost.objects.values_list("author", flat=True)) == {"some  author"}

    def test_cursor_with_fields(self) -> None:
        seed_posts(5)

        result = backfill.cursor(BlogPost.objects.all(), fields=["author"], transform=_fix_row)

        assert (result.rows_scanned, result.rows_changed, result.chunks) == (5, 5, 1)
        assert set(BlogPost.objects.values_list("author", flat=True)) == {"some  author"}

    def test_reporter_receives_typed_events_in_order(self) -> None:
        seed_posts(5)
        seen: list[events.Event] = []

        result = backfill.iterate(
            BlogPost.objects.all(), set={"author": "e"}, batch_size=2, reporter=seen.append
        )

        kinds = [type(e).__name__ for e in seen if not isinstance(e, events.Notice)]
        assert kinds == ["Started", "ChunkDone", "ChunkDone", "ChunkDone", "Finished"]
        started, *done, finished = [e for e in seen if not isinstance(e, events.Notice)]
        assert isinstance(started, events.Started) and started.model == "blog.BlogPost"
        chunks = cast(list[events.ChunkDone], done)
        assert [(d.rows_scanned, d.total_scanned) for d in chunks] == [(2, 2), (2, 4), (1, 5)]
        assert isinstance(finished, events.Finished) and finished.result == result

    def test_command_and_api_are_the_same_run(self) -> None:
        """The command is a thin adapter: it resolves to the same run as the API call."""
        seed_posts(4)

        result = backfill.iterate(BlogPost.objects.all(), transform="normalize_author")
        outcome = run("backfill_iterate", "blog.BlogPost", "--json")

        assert result.rows_changed == 4
        assert f'"name": "{result.name}"' in outcome.stdout
        assert '"status": "already completed"' in outcome.stdout
        assert Run.objects.count() == 1

    def test_bad_input_raises_before_anything_is_written(self) -> None:
        seed_posts(2)

        with pytest.raises(backfill.BadInput, match="'autor'"):
            backfill.update(BlogPost.objects.all(), set={"autor": "x"})
        with pytest.raises(backfill.BadInput, match="batch_size must be positive, got 0"):
            backfill.update(BlogPost.objects.all(), set={"author": "x"}, batch_size=0)
        with pytest.raises(backfill.BadInput, match="Sliced querysets"):
            backfill.iterate(BlogPost.objects.all()[:1], set={"author": "x"})
        with pytest.raises(backfill.BadInput, match="Expected a QuerySet"):
            backfill.cursor(BlogPost, set={"author": "x"})  # type: ignore[arg-type]
        with pytest.raises(backfill.BadInput, match=r"needs backfill\.update\(\)"):
            backfill.iterate(BlogPost.objects.all(), set={"author": Concat(F("title"), Value("!"))})
        with pytest.raises(backfill.BadInput, match="not both"):
            backfill.cursor(BlogPost.objects.all(), set={"author": "x"}, transform=_fix_row)

        assert not Run.objects.exists()
        assert set(BlogPost.objects.values_list("author", flat=True)) == {" some  author "}


@pytest.mark.django_db
def test_inside_a_transaction_it_says_to_make_the_migration_non_atomic() -> None:
    seed_posts(2)

    with transaction.atomic(), pytest.raises(backfill.InsideTransaction) as raised:
        backfill.update(BlogPost.objects.all(), set={"author": "x"})

    assert "`atomic = False`" in str(raised.value)
    assert raised.value.exit_code == 2
    assert set(BlogPost.objects.values_list("author", flat=True)) == {" some  author "}
