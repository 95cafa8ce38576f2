"""Every bad input of the contract: one line naming the input and the fix, exit 2, nothing written.

One test per case. Each runs the real command on seeded tables and compares every table it
could touch before and after; no Run row may be created either.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backfill import registry
from backfill.models import Run
from example_site.blog.models import BlogPost
from tests.support import run, seed_posts, snapshot
from tests.testapp.models import CodeItem, Place, Restaurant, SparseItem, Tagged, UUIDItem

# Bad input is caught before a run starts, so the test transaction (rolled back afterwards)
# is enough; a request that reached the engine would fail on it with a different message.
pytestmark = pytest.mark.django_db

TABLES = (BlogPost, SparseItem, Tagged, CodeItem, Place, Restaurant, UUIDItem)


def _first(item: CodeItem) -> None:
    item.name = "first"


def _second(item: CodeItem) -> None:
    item.name = "second"


@pytest.fixture
def seeded() -> Iterator[None]:
    seed_posts(5)
    SparseItem.objects.bulk_create(SparseItem(id=i * 10, name=f"s{i}") for i in range(1, 4))
    Tagged.objects.create(name="t", data={"a": 1})
    CodeItem.objects.bulk_create(CodeItem(code=f"c{i}", name="n") for i in range(3))
    Place.objects.create(name="plain place")
    Restaurant.objects.create(name="diner", rating=3)
    UUIDItem.objects.create(name="u")
    # Two instance transforms on CodeItem: choosing between them needs --transform.
    registry.register("testapp.CodeItem")(_first)
    registry.register("testapp.CodeItem")(_second)
    yield
    registry.unregister("testapp.CodeItem", "_first")
    registry.unregister("testapp.CodeItem", "_second")


# (command, arguments, text the one-line message must contain)
CASES = {
    "unknown app": (
        "backfill_update",
        ["blg.BlogPost", "--set", "author=x"],
        ["'blg'", "Did you mean 'blog'?"],
    ),
    "unknown model": (
        "backfill_update",
        ["blog.BlogPst", "--set", "author=x"],
        ["'blog.BlogPst'", "Did you mean 'BlogPost'?"],
    ),
    "model path without a dot": (
        "backfill_iterate",
        ["BlogPost", "--set", "author=x"],
        ["'BlogPost'", "blog.BlogPost"],
    ),
    "unknown field": (
        "backfill_update",
        ["blog.BlogPost", "--set", "autor=x"],
        ["'autor'", "Did you mean 'author'"],
    ),
    "unknown field in --only": (
        "backfill_iterate",
        ["blog.BlogPost", "--only", "auther", "--set", "author=x"],
        ["'auther'", "Did you mean 'author'"],
    ),
    "many-to-many field": (
        "backfill_update",
        ["testapp.Tagged", "--set", "tags=1"],
        ["'tags'", "not a concrete column"],
    ),
    "reverse relation": (
        "backfill_iterate",
        ["testapp.Place", "--set", "restaurant=1"],
        ["'restaurant'", "not a concrete column"],
    ),
    "primary key in --set": (
        "backfill_update",
        ["blog.BlogPost", "--set", "id=5"],
        ["'id'", "primary key"],
    ),
    "primary key in --set of cursor": (
        "backfill_cursor",
        ["testapp.CodeItem", "--set", "code=x"],
        ["'code'", "primary key"],
    ),
    "value the field rejects": (
        "backfill_update",
        ["testapp.SparseItem", "--set", "views=abc"],
        ["'views=abc'", "must be an integer"],
    ),
    "value the field rejects in iterate": (
        "backfill_iterate",
        ["testapp.SparseItem", "--set", "views=1.5"],
        ["'views=1.5'", "must be an integer"],
    ),
    "too long a string": (
        "backfill_cursor",
        ["testapp.SparseItem", "--set", "name=" + "x" * 51],
        ["'name=" + "x" * 51 + "'", "at most 50 characters"],
    ),
    "null into NOT NULL": (
        "backfill_update",
        ["testapp.SparseItem", "--set-json", "views=null"],
        ["'views=null'", "NOT NULL"],
    ),
    "not a boolean": (
        "backfill_update",
        ["testapp.UUIDItem", "--set", "flag=maybe"],
        ["'flag=maybe'", "not a boolean"],
    ),
    "malformed --set-json": (
        "backfill_update",
        ["testapp.Tagged", "--set-json", "data={oops"],
        ["'data={oops'", "not JSON"],
    ),
    "malformed --set": (
        "backfill_update",
        ["blog.BlogPost", "--set", "author"],
        ["--set 'author'", "FIELD=VALUE"],
    ),
    "malformed --filter": (
        "backfill_update",
        ["blog.BlogPost", "--set", "author=x", "--filter", "author"],
        ["--filter 'author'", "FIELD=VALUE"],
    ),
    "unknown lookup in --filter": (
        "backfill_update",
        ["blog.BlogPost", "--set", "author=x", "--filter", "author__foo=1"],
        ["'author__foo=1'", "Unsupported lookup 'foo'"],
    ),
    "unknown lookup on pk": (
        "backfill_update",
        ["blog.BlogPost", "--set", "author=x", "--filter", "pk__near=3"],
        ["'pk__near=3'", "Unsupported lookup 'near'"],
    ),
    "unknown field in --exclude": (
        "backfill_iterate",
        ["blog.BlogPost", "--set", "author=x", "--exclude", "autor=x"],
        ["--exclude 'autor=x'", "Did you mean 'author'"],
    ),
    "filter value of the wrong type": (
        "backfill_cursor",
        ["blog.BlogPost", "--set", "author=x", "--filter", "id__lte=abc"],
        ["'id__lte=abc'", "expected a number"],
    ),
    "filter boolean that is not one": (
        "backfill_update",
        ["testapp.UUIDItem", "--set", "name=x", "--filter", "flag=perhaps"],
        ["'flag=perhaps'", "not a boolean"],
    ),
    "expression: __import__": (
        "backfill_update",
        ["blog.BlogPost", "--set-expr", 'author=__import__("os")'],
        ["__import__", "not allowed"],
    ),
    "expression: attribute access": (
        "backfill_update",
        ["blog.BlogPost", "--set-expr", 'author=F("author").lower'],
        ['F("author").lower', "not allowed"],
    ),
    "expression: lambda": (
        "backfill_update",
        ["blog.BlogPost", "--set-expr", "author=lambda: 1"],
        ["lambda: 1", "not allowed"],
    ),
    "expression: not Python": (
        "backfill_update",
        ["blog.BlogPost", "--set-expr", "author=Lower(("],
        ["'author=Lower(('", "not a valid expression"],
    ),
    "expression: wrong type for the field": (
        "backfill_update",
        ["testapp.SparseItem", "--set-expr", 'views=Concat(F("name"), Value("x"))'],
        ["views=Concat", "holds number"],
    ),
    "expression: mixed types": (
        "backfill_update",
        ["testapp.SparseItem", "--set-expr", 'views=F("views") + "abc"'],
        ['F("views") + "abc"', "Cannot infer type"],
    ),
    "expression: unknown field": (
        "backfill_update",
        ["blog.BlogPost", "--set-expr", 'author=Lower("autor")'],
        ["'autor'", "Did you mean 'author'"],
    ),
    "transform path that does not import": (
        "backfill_iterate",
        ["blog.BlogPost", "--transform", "nope.module.func"],
        ["'nope.module.func'", "cannot import"],
    ),
    "transform path to a missing function": (
        "backfill_cursor",
        ["blog.BlogPost", "--transform", "tests.sample_transforms.missing"],
        ["'tests.sample_transforms.missing'", "no attribute 'missing'"],
    ),
    "transform path that is not callable": (
        "backfill_iterate",
        ["blog.BlogPost", "--transform", "tests.sample_transforms:NOT_CALLABLE"],
        ["'tests.sample_transforms:NOT_CALLABLE'", "not a callable"],
    ),
    "no transform and none registered": (
        "backfill_iterate",
        ["testapp.SparseItem"],
        ["testapp.SparseItem", "no registered instance transform", "--transform"],
    ),
    "no transform and several registered": (
        "backfill_iterate",
        ["testapp.CodeItem"],
        ["testapp.CodeItem", "2 registered", "_first (", "_second (", "--transform NAME"],
    ),
    "no row transform and none registered": (
        "backfill_cursor",
        ["testapp.CodeItem"],
        ["testapp.CodeItem", "no registered row transform"],
    ),
    "unregistered transform name": (
        "backfill_iterate",
        ["testapp.CodeItem", "--transform", "third"],
        ["'third'", "Registered: _first", "_second"],
    ),
    "row transform name given to iterate": (
        "backfill_iterate",
        ["blog.BlogPost", "--transform", "normalize_author_row"],
        ["'normalize_author_row'", "use backfill_cursor"],
    ),
    "--only and --defer together": (
        "backfill_iterate",
        ["blog.BlogPost", "--only", "author", "--defer", "title", "--set", "author=x"],
        ["--only and --defer"],
    ),
    "batch size zero": (
        "backfill_update",
        ["blog.BlogPost", "--set", "author=x", "--batch-size", "0"],
        ["--batch-size", "got 0"],
    ),
    "batch size negative": (
        "backfill_cursor",
        ["blog.BlogPost", "--set", "author=x", "--batch-size", "-5"],
        ["--batch-size", "got -5"],
    ),
    "batch size not a number": (
        "backfill_iterate",
        ["blog.BlogPost", "--set", "author=x", "--batch-size", "lots"],
        ["--batch-size 'lots'"],
    ),
    "--set and --transform together (iterate)": (
        "backfill_iterate",
        ["blog.BlogPost", "--set", "author=x", "--transform", "normalize_author"],
        ["--set", "--transform", "not both"],
    ),
    "--set and --transform together (cursor)": (
        "backfill_cursor",
        ["blog.BlogPost", "--set", "author=x", "--transform", "normalize_author_row"],
        ["--set", "--transform", "not both"],
    ),
    "update with nothing to set": (
        "backfill_update",
        ["blog.BlogPost"],
        ["--set", "--set-json", "--set-expr"],
    ),
    "unknown database alias": (
        "backfill_update",
        ["blog.BlogPost", "--set", "author=x", "--database", "replica"],
        ["Unknown database alias 'replica': not in settings.DATABASES. Use one of: default."],
    ),
    "an option the command does not take": (
        "backfill_cursor",
        ["blog.BlogPost", "--set", "author=1", "--defer", "title"],
        ["--defer"],
    ),
    "a value with a newline, echoed in the field's own message": (
        "backfill_update",
        ["testapp.SparseItem", "--set-json", 'views="\\n"'],
        ["rejects the value", "\\n"],
    ),
    "--set-json and --transform together": (
        "backfill_cursor",
        ["testapp.Tagged", "--set-json", "data=[]", "--transform", "tests.sample_transforms.x"],
        ["--set-json", "--transform", "not both"],
    ),
}


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("command", "args", "needles"), CASES.values(), ids=CASES.keys())
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    command: str, args: list[str], needles: list[str]
) -> None:
    before = snapshot(*TABLES)

    outcome = run(command, *args)

    assert outcome.returncode == 2, outcome
    message = outcome.error
    assert "\n" not in message.strip(), message
    assert "atomic" not in message, "the request reached the engine"
    for needle in needles:
        assert needle in message, (needle, message)
    assert snapshot(*TABLES) == before
    assert not Run.objects.exists()
