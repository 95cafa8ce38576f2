"""Python transforms: registered in <app>/backfills.py, chosen by name or alone, or by path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import backfill
from backfill import registry
from backfill.models import Run
from example_site.blog.models import BlogPost
from tests.conftest import RunManage
from tests.support import committing, run, seed_posts
from tests.testapp.models import CodeItem, Tagged

pytestmark = committing


def test_the_blogs_backfills_module_is_discovered_at_start_up() -> None:
    instance = registry.registered("blog.BlogPost", rows=False)
    rows = registry.registered(BlogPost, rows=True)

    assert [(t.name, t.path, t.kind) for t in instance] == [
        ("normalize_author", "example_site.blog.backfills.normalize_author", "instance")
    ]
    assert [(t.name, t.path, t.kind) for t in rows] == [
        ("normalize_author_row", "example_site.blog.backfills.normalize_author_row", "row")
    ]


def test_runbook_line_in_a_fresh_process_uses_the_registered_transform(
    run_manage: RunManage,
) -> None:
    seed_posts(4, author="  ada   lovelace ")

    process = run_manage("backfill_iterate", "blog.BlogPost", "--only", "author", "--json")

    assert process.returncode == 0, process.stderr
    summary = json.loads(process.stdout)
    assert summary["name"].startswith("iterate blog.BlogPost normalize_author ")
    assert summary["rows_changed"] == 4
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"Ada Lovelace"}


@pytest.mark.parametrize(
    ("command", "name"),
    [("backfill_iterate", "normalize_author"), ("backfill_cursor", "normalize_author_row")],
)
def test_transform_chosen_by_name(command: str, name: str) -> None:
    seed_posts(3, author="grace  hopper")

    outcome = run(command, "blog.BlogPost", "--transform", name, "--json")

    assert json.loads(outcome.stdout)["rows_changed"] == 3
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"Grace Hopper"}


@pytest.mark.parametrize(
    ("command", "path"),
    [
        ("backfill_iterate", "tests.sample_transforms.shout_author"),
        ("backfill_iterate", "tests.sample_transforms:shout_author"),
        ("backfill_cursor", "tests.sample_transforms.shout_author_row"),
    ],
)
def test_transform_chosen_by_dotted_path(command: str, path: str) -> None:
    seed_posts(3, author="quiet")

    outcome = run(command, "blog.BlogPost", "--transform", path, "--only", "author")

    assert outcome.returncode == 0, outcome
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"QUIET"}


@pytest.fixture
def two_code_transforms() -> Iterator[None]:
    @backfill.register(CodeItem)
    def lower_name(item: CodeItem) -> None:
        item.name = item.name.lower()

    @backfill.register("testapp.CodeItem", name="upper_name")
    def make_upper(item: CodeItem) -> None:
        item.name = item.name.upper()

    yield
    registry.unregister(CodeItem, "lower_name")
    registry.unregister("testapp.codeitem", "upper_name")


@pytest.mark.usefixtures("two_code_transforms")
def test_one_of_several_registered_transforms_by_name() -> None:
    CodeItem.objects.bulk_create(CodeItem(code=f"c{i}", name="MiXed") for i in range(3))

    several = run("backfill_iterate", "testapp.CodeItem")
    chosen = run("backfill_iterate", "testapp.CodeItem", "--transform", "upper_name")

    assert several.returncode == 2
    assert "lower_name (tests.test_transforms." in several.error
    assert "upper_name (tests.test_transforms." in several.error
    assert chosen.returncode == 0, chosen
    assert set(CodeItem.objects.values_list("name", flat=True)) == {"MIXED"}
    assert Run.objects.get().name.startswith("iterate testapp.CodeItem upper_name ")


def test_registering_another_function_under_a_taken_name_fails() -> None:
    def normalize_author(post: BlogPost) -> None:
        pass

    with pytest.raises(ValueError, match=r"already registered for blog\.blogpost"):
        backfill.register("blog.BlogPost")(normalize_author)

    assert registry.registered("blog.BlogPost", rows=False)[0].path == (
        "example_site.blog.backfills.normalize_author"
    )


def test_iterate_transform_returning_false_skips_the_row() -> None:
    pks = seed_posts(6)

    def every_other(post: BlogPost) -> bool | None:
        post.author = "changed"
        return False if post.pk in pks[::2] else None

    result = backfill.iterate(BlogPost.objects.all(), transform=every_other)

    assert (result.rows_scanned, result.rows_changed) == (6, 3)
    authors = dict(BlogPost.objects.values_list("pk", "author"))
    assert [authors[pk] for pk in pks] == [" some  author ", "changed"] * 3


def test_iterate_transform_setting_a_deferred_field_writes_it() -> None:
    seed_posts(3)

    def retitle(post: BlogPost) -> None:
        post.title = "new title"  # not loaded: only("author")

    result = backfill.iterate(BlogPost.objects.only("author"), transform=retitle)

    assert result.rows_changed == 3
    assert set(BlogPost.objects.values_list("title", "author")) == {("new title", " some  author ")}


def test_cursor_transform_returning_nothing_changes_nothing() -> None:
    pks = seed_posts(4)

    def sometimes(row: dict[str, Any]) -> dict[str, Any] | None:
        return {"author": "x"} if row["pk"] == pks[1] else ({} if row["pk"] == pks[2] else None)

    result = backfill.cursor(BlogPost.objects.all(), fields=["author"], transform=sometimes)

    assert (result.rows_scanned, result.rows_changed) == (4, 1)
    assert BlogPost.objects.get(pk=pks[1]).author == "x"


def test_cursor_row_holds_the_loaded_columns_and_the_pk() -> None:
    Tagged.objects.create(name="t", data={"k": 1})
    rows: list[dict[str, Any]] = []

    backfill.cursor(Tagged.objects.all(), fields=["name", "data"], transform=rows.append)

    assert rows == [{"pk": Tagged.objects.get().pk, "name": "t", "data": {"k": 1}}]


def test_cursor_transform_returning_an_unknown_column_fails_naming_the_row() -> None:
    pks = seed_posts(2)

    outcome = run(
        "backfill_cursor", "blog.BlogPost", "--transform", "tests.sample_transforms.shout_author"
    )

    # shout_author expects an instance: given a dict it raises on the first row.
    assert outcome.returncode == 1
    assert f"pk={pks[0]}" in outcome.error
    assert "AttributeError" in outcome.error

    def bad_key(row: dict[str, Any]) -> dict[str, Any]:
        return {"autor": "x"}

    with pytest.raises(backfill.TransformFailed) as failed:
        backfill.cursor(BlogPost.objects.all(), fields=["author"], transform=bad_key, name="bad")

    assert failed.value.pk == pks[0]
    assert "'autor'" in str(failed.value) and "not a writable column" in str(failed.value)
    assert set(BlogPost.objects.values_list("author", flat=True)) == {" some  author "}


def test_iterate_sees_in_place_changes_to_json_even_when_the_first_row_holds_text() -> None:
    Tagged.objects.create(name="first", data="text")
    second = Tagged.objects.create(name="second", data={"n": 1})

    def mark(obj: Tagged) -> None:
        if isinstance(obj.data, dict):
            obj.data["seen"] = True  # mutated in place, not reassigned

    result = backfill.iterate(Tagged.objects.all(), transform=mark)

    assert result.rows_changed == 1
    second.refresh_from_db()
    assert second.data == {"n": 1, "seen": True}


def test_cursor_sees_changes_made_in_place_to_the_row_it_was_given() -> None:
    first = Tagged.objects.create(name="first", data={"n": 1})
    rows: list[dict[str, Any]] = []

    def mutate_and_return_row(row: dict[str, Any]) -> dict[str, Any]:
        row["name"] = row["name"].upper()
        row["data"]["seen"] = True
        rows.append(row)
        return {"name": row["name"], "data": row["data"]}

    preview = backfill.cursor(
        Tagged.objects.all(), fields=["name", "data"], transform=mutate_and_return_row, dry_run=True
    )
    result = backfill.cursor(
        Tagged.objects.all(), fields=["name", "data"], transform=mutate_and_return_row
    )

    assert preview.plan is not None
    assert preview.plan.preview[0]["before"] == {"name": "first", "data": "{'n': 1}"}
    assert result.rows_changed == 1
    first.refresh_from_db()
    assert (first.name, first.data) == ("FIRST", {"n": 1, "seen": True})
