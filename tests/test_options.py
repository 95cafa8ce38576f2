"""The option table (``backfill.options``): one definition feeds argparse, the API's keywords,
``RunBackfill`` and the checks; the library speaks in keywords, the commands in flags."""

from __future__ import annotations

from typing import Any, cast

import pytest
from django.core.management import load_command_class

import backfill
from backfill.operations import RunBackfill
from backfill.options import FLAGS, MIGRATION_KEYWORDS, RUN_OPTIONS
from example_site.blog.models import BlogPost
from tests.support import run, seed_posts

pytestmark = pytest.mark.django_db(transaction=True)

COMMANDS = ("backfill_update", "backfill_iterate", "backfill_cursor")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_run_option_of_the_table_is_a_flag_of_each_command(command: str) -> None:
    parser = load_command_class("backfill", command).create_parser("manage.py", command)
    flags = {flag for action in parser._actions for flag in action.option_strings}
    assert {option.flag for option in FLAGS} <= flags


def test_run_backfill_takes_the_run_options_a_migration_can_honour() -> None:
    for keyword in MIGRATION_KEYWORDS:
        operation = RunBackfill("BlogPost", set={"author": "x"}, **cast(Any, {keyword: None}))
        assert operation.options == {}
    assert {"dry_run", "restart", "workers"}.isdisjoint(MIGRATION_KEYWORDS)
    assert len(MIGRATION_KEYWORDS) == len(RUN_OPTIONS) - 3
    with pytest.raises(TypeError, match=r"'restart'.*It takes: batch_size, name"):
        RunBackfill("BlogPost", set={"author": "x"}, restart=True)  # type: ignore[call-arg]


def test_a_typo_in_a_keyword_is_a_type_error_naming_its_neighbours() -> None:
    seed_posts(3, author="ann")

    with pytest.raises(TypeError) as excinfo:
        backfill.update(BlogPost.objects.all(), set={"author": "bob"}, max_runtim=5)  # type: ignore[call-arg]

    message = str(excinfo.value)
    assert message.startswith(
        "update() got an unexpected keyword argument 'max_runtim'. "
        "Did you mean 'max_runtime' or 'max_rate'?"
    )
    assert "It takes: batch_size, dry_run, name, restart, max_runtime" in message
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"ann"}


def test_the_library_says_keywords_and_the_command_says_flags() -> None:
    seed_posts(3, author="ann")

    with pytest.raises(backfill.BadInput) as excinfo:
        backfill.iterate(BlogPost.objects.all(), set={"author": "bob"}, max_runtime=-1)
    assert str(excinfo.value) == "max_runtime must be positive, got -1. Pass e.g. max_runtime=3600."

    outcome = run("backfill_iterate", "blog.BlogPost", "--set", "author=bob", "--max-runtime", "-1")
    assert (outcome.returncode, outcome.stdout) == (2, "")
    assert (
        outcome.error == "--max-runtime must be positive, got -1.0. Pass e.g. --max-runtime 3600."
    )
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"ann"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "--batch-size must be positive, got 0. Pass e.g. --batch-size 2000."),
        (
            "lots",
            "argument --batch-size: --batch-size 'lots' is not a whole number "
            "(e.g. --batch-size 2000).",
        ),
    ],
)
def test_the_batch_size_is_checked_once_with_one_message(value: str, message: str) -> None:
    seed_posts(3, author="ann")
    outcome = run("backfill_update", "blog.BlogPost", "--set", "author=bob", "--batch-size", value)
    assert outcome.returncode == 2
    assert outcome.error.removeprefix("Error: ").startswith(message)
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"ann"}


def test_an_engine_keyword_without_an_engine_is_bad_input() -> None:
    seed_posts(3, author="ann")
    with pytest.raises(backfill.BadInput, match="joiners= is about a run handed to a task engine"):
        backfill.update(BlogPost.objects.all(), set={"author": "bob"}, joiners=4)
    assert set(BlogPost.objects.values_list("author", flat=True)) == {"ann"}
