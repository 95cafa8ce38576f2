"""Generated input (Hypothesis) for what an operator types and what a transform returns.

Every input is either carried out exactly as a Python reference says it should be (the same on
PostgreSQL and SQLite, since both are held to the one reference), or refused: exit 2 with one
line and nothing recorded, or, for a value only the data can show to be wrong, exit 1 naming
the row with its chunk rolled back. Never a traceback, another exit code, a row changed by a
refused input, or a run left ``running``. The example count is bounded for ``make test``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from backfill.columns import text_problem
from backfill.expressions import _simple_case
from backfill.models import Run
from example_site.blog.models import BlogPost
from tests import transforms
from tests.support import Outcome, committing, snapshot
from tests.support import run as run_command
from tests.testapp.models import SparseItem

pytestmark = committing

EXAMPLES = settings(
    # make test keeps it short; BACKFILL_HYPOTHESIS_EXAMPLES=500 for a longer hunt.
    max_examples=int(os.environ.get("BACKFILL_HYPOTHESIS_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
# Text as an operator may type it: any code point, lone surrogates and NUL included.
ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=80)
NAMES = ["ann", "Bob é", "ÉCOLE straße", "  x  ", ""]
VIEWS = [0, 7, -7, 1000, 2**31 - 1]


def run(*args: str) -> Outcome:
    """The command, with its exit code counted in Hypothesis's statistics."""
    outcome = run_command(*args)
    event(f"exit {outcome.returncode}")
    return outcome


def reset_items() -> dict[str, list[tuple[Any, ...]]]:
    Run.objects.all().delete()
    SparseItem.objects.all().delete()
    SparseItem.objects.bulk_create(
        SparseItem(id=i, name=name, views=views)
        for i, (name, views) in enumerate(zip(NAMES, VIEWS, strict=True), start=1)
    )
    return snapshot(SparseItem)


def reset_posts() -> dict[str, list[tuple[Any, ...]]]:
    Run.objects.all().delete()
    BlogPost.objects.all().delete()
    BlogPost.objects.bulk_create(
        BlogPost(title=f"t{i}", author=name) for i, name in enumerate(NAMES)
    )
    return snapshot(BlogPost)


def assert_refused_cleanly(outcome: Outcome, before: Any, after: Any) -> None:
    assert outcome.returncode == 2, outcome
    assert outcome.error and "\n" not in outcome.error.strip(), outcome.error
    assert "Traceback" not in outcome.stderr
    assert after == before
    assert not Run.objects.exists()


def assert_no_run_running() -> None:
    assert not Run.objects.filter(status="running").exists()


# -- --set and --set-json -------------------------------------------------------------------


@EXAMPLES
@given(value=ANY_TEXT)
def test_set_text_is_stored_as_given_or_refused(value: str) -> None:
    before = reset_posts()
    outcome = run("backfill_update", "blog.BlogPost", "--set", f"author={value}")
    if outcome.returncode == 2:
        assert_refused_cleanly(outcome, before, snapshot(BlogPost))
        assert len(value) > 60 or text_problem(value) is not None
        return
    assert outcome.returncode == 0, outcome
    assert set(BlogPost.objects.values_list("author", flat=True)) == {value}
    assert_no_run_running()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=5,
)


@EXAMPLES
@given(value=st.one_of(st.integers(), st.floats(), JSON_VALUES))
def test_set_json_numbers_are_stored_exactly_or_refused(value: Any) -> None:
    before = reset_items()
    try:
        text = json.dumps(value)
    except (ValueError, UnicodeEncodeError):
        return
    outcome = run("backfill_update", "testapp.SparseItem", "--set-json", f"views={text}")
    if outcome.returncode == 2:
        assert_refused_cleanly(outcome, before, snapshot(SparseItem))
        return
    assert outcome.returncode == 0, outcome
    stored = set(SparseItem.objects.values_list("views", flat=True))
    # Only a whole number in the column's range (or text the field reads as one) is stored.
    assert not isinstance(value, (bool, list, dict)) and value is not None
    assert not isinstance(value, float) or value.is_integer()
    expected = int(value)
    assert stored == {expected}
    assert -(2**31) <= expected < 2**31
    assert_no_run_running()


# -- --set-expr against a Python reference --------------------------------------------------


class Refused(Exception):
    """The reference cannot compute this expression: the tool must have refused it too."""


def _lpad(text: str, length: int, fill: str, left: bool) -> str:
    if len(text) >= length:
        return text[:length]
    if not fill:
        return text
    padding = (fill * length)[: length - len(text)]
    return padding + text if left else text + padding


def _trunc_div(a: int, b: int) -> int:
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b >= 0) else -quotient


TEXT_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "Lower": lambda s: _simple_case(s, False),
    "Upper": lambda s: _simple_case(s, True),
    "Trim": lambda s: s.strip(" "),
    "LTrim": lambda s: s.lstrip(" "),
    "RTrim": lambda s: s.rstrip(" "),
    "Reverse": lambda s: s[::-1],
    "MD5": lambda s: hashlib.md5(s.encode()).hexdigest(),
    "Length": len,
    "Left": lambda s, n: s[:n],
    "Right": lambda s, n: s[max(0, len(s) - n) :] if n else "",
    "Substr": lambda s, p, n=None: s[p - 1 :] if n is None else s[p - 1 : p - 1 + n],
    "LPad": lambda s, n, f=" ": _lpad(s, n, f, True),
    "RPad": lambda s, n, f=" ": _lpad(s, n, f, False),
    "Replace": lambda s, a, b="": s if a == "" else s.replace(a, b),
    "StrIndex": lambda s, sub: s.find(sub) + 1,
}


def evaluate(tree: Any, row: dict[str, Any]) -> Any:
    """The reference result of a generated expression tree on one row."""
    kind = tree[0]
    if kind == "field":
        return row[tree[1]]
    if kind in ("int", "text"):
        return tree[1]
    if kind == "op":
        a, b = evaluate(tree[2], row), evaluate(tree[3], row)
        if not (isinstance(a, int) and isinstance(b, int)):
            raise Refused(f"{tree[1]} on {a!r}, {b!r}")
        if a is None or b is None:
            return None
        if tree[1] == "+":
            return a + b
        if tree[1] == "-":
            return a - b
        if tree[1] == "*":
            return a * b
        if b == 0:
            raise ZeroDivisionError
        quotient = _trunc_div(a, b)
        return quotient if tree[1] == "/" else a - b * quotient
    name, args = tree[1], [evaluate(a, row) for a in tree[2]]
    if name == "Concat":
        return "".join("" if a is None else str(a) for a in args)
    if name == "Coalesce":
        return next((a for a in args if a is not None), None)
    if name == "Abs":
        if not isinstance(args[0], int):
            raise Refused("Abs of text")
        return abs(args[0])
    if any(a is None for a in args):
        return None
    if not isinstance(args[0], str):
        raise Refused(f"{name} of a number")
    return TEXT_FUNCTIONS[name](*args)


def render(tree: Any) -> str:
    kind = tree[0]
    if kind == "field":
        return f'F("{tree[1]}")'
    if kind == "int":
        return str(tree[1])
    if kind == "text":
        return f"Value({json.dumps(tree[1])})"
    if kind == "op":
        return f"({render(tree[2])} {tree[1]} {render(tree[3])})"
    return f"{tree[1]}({', '.join(render(a) for a in tree[2])})"


LEAVES = st.one_of(
    st.sampled_from([("field", "name"), ("field", "views"), ("field", "id")]),
    st.tuples(st.just("int"), st.integers(-3, 12)),
    st.tuples(st.just("text"), st.text(st.sampled_from("ab é*"), max_size=4)),
)


def _call(children: Any) -> Any:
    names = st.sampled_from([*TEXT_FUNCTIONS, "Concat", "Coalesce", "Abs"])
    return st.tuples(st.just("call"), names, st.lists(children, min_size=1, max_size=3))


# Anything the grammar allows, most of it ill-typed: the refusals.
WILD = st.recursive(
    LEAVES,
    lambda children: (
        _call(children) | st.tuples(st.just("op"), st.sampled_from("+-*/%"), children, children)
    ),
    max_leaves=6,
)
COUNT = st.tuples(st.just("int"), st.integers(0, 12))
POSITION = st.tuples(st.just("int"), st.integers(1, 6))
TEXT_LEAF = st.one_of(
    st.just(("field", "name")),
    st.tuples(st.just("text"), st.text(st.sampled_from("ab é*"), max_size=4)),
)
INT_LEAF = st.one_of(
    st.sampled_from([("field", "views"), ("field", "id")]),
    st.tuples(st.just("int"), st.integers(-3, 12)),
)


def _typed(text: Any, number: Any) -> tuple[Any, Any]:
    """One level of well-typed text and whole-number expressions over ``text``/``number``."""
    unary = st.sampled_from(["Lower", "Upper", "Trim", "LTrim", "RTrim", "Reverse", "MD5"])

    def call(name: Any, *parts: Any) -> Any:
        return st.tuples(st.just("call"), name, st.tuples(*parts).map(list))

    texts = st.one_of(
        call(unary, text),
        call(st.sampled_from(["Left", "Right"]), text, COUNT),
        call(st.just("Substr"), text, POSITION, COUNT),
        call(st.sampled_from(["LPad", "RPad"]), text, COUNT, TEXT_LEAF),
        call(st.just("Replace"), text, TEXT_LEAF, TEXT_LEAF),
        call(st.just("Concat"), st.one_of(text, number), st.one_of(text, number)),
    )
    numbers = st.one_of(
        call(st.just("Length"), text),
        call(st.just("StrIndex"), text, TEXT_LEAF),
        call(st.just("Abs"), number),
        st.tuples(st.just("op"), st.sampled_from("+-*/%"), number, number),
    )
    return texts, numbers


def _levels(depth: int) -> tuple[Any, Any]:
    text, number = TEXT_LEAF, INT_LEAF
    for _ in range(depth):
        deeper_text, deeper_number = _typed(text, number)
        text, number = st.one_of(text, deeper_text), st.one_of(number, deeper_number)
    return text, number


TEXT_EXPRESSIONS, NUMBER_EXPRESSIONS = _levels(3)
EXPRESSIONS = st.one_of(TEXT_EXPRESSIONS, NUMBER_EXPRESSIONS, WILD)


# Whole-number arithmetic only: what MySQL computes differently unless told (``/`` of whole
# numbers is a decimal there, rounded on assignment), held to the same reference everywhere.
ARITHMETIC = st.recursive(
    INT_LEAF,
    lambda children: (
        st.tuples(st.just("op"), st.sampled_from("+-*/%"), children, children)
        | st.tuples(st.just("call"), st.just("Abs"), st.tuples(children).map(list))
    ),
    max_leaves=5,
)


@EXAMPLES
@given(tree=EXPRESSIONS, target=st.sampled_from(["name", "views"]))
def test_set_expr_gives_the_reference_result_or_is_refused(tree: Any, target: str) -> None:
    check_set_expr(tree, target)


@EXAMPLES
@given(tree=ARITHMETIC)
def test_arithmetic_gives_the_reference_result_on_every_backend(tree: Any) -> None:
    check_set_expr(tree, "views")


def check_set_expr(tree: Any, target: str) -> None:
    """Run ``--set-expr target=<tree>``: the reference's result, or refused cleanly, or (for a
    value only the data shows to be wrong) the first such row named with nothing written.
    """
    before = reset_items()
    outcome = run("backfill_update", "testapp.SparseItem", "--set-expr", f"{target}={render(tree)}")
    if outcome.returncode == 2:
        assert_refused_cleanly(outcome, before, snapshot(SparseItem))
        return
    values = SparseItem.objects.order_by("id").values("id", "name", "views")
    rows: list[dict[str, Any]] = [dict(row) for row in values]
    originals = [
        dict(zip(("id", "name", "views"), r[:3], strict=True)) for r in before.popitem()[1]
    ]
    expected = []
    failing = None
    for row in originals:
        try:
            value = evaluate(tree, row)
        except Refused as exc:
            message = f"accepted {render(tree)!r}, which the reference refuses: {exc}"
            raise AssertionError(message) from None
        except ZeroDivisionError:
            value = ZeroDivisionError
        fits = (
            isinstance(value, str) and len(value) <= 50 and text_problem(value) is None
            if target == "name"
            else isinstance(value, int)
            and not isinstance(value, bool)
            and -(2**31) <= value < 2**31
        )
        if not fits and failing is None:
            failing = row["id"]
        expected.append(value)
    if failing is not None:
        assert outcome.returncode == 1, (outcome, expected)
        assert f"pk={failing}" in outcome.error
        assert [r[target] for r in rows] == [r[target] for r in originals]
        assert Run.objects.get().status == "failed"
        return
    assert outcome.returncode == 0, (outcome, expected)
    assert [r[target] for r in rows] == expected
    assert_no_run_running()


# -- --filter, --name -------------------------------------------------------------------------

LOOKUPS = st.sampled_from(
    ["author", "author__iexact", "author__contains", "author__startswith", "author__in",
     "author__regex", "author__isnull", "id__gt", "id__lte", "id__in", "id__range",
     "title__lt", "nope", "author__nope", "id__contains"]
)  # fmt: skip
REGEX = st.text(st.sampled_from("ab.*+?^$()[]|\\"), max_size=6)


@EXAMPLES
@given(lookup=LOOKUPS, value=st.one_of(ANY_TEXT, REGEX, st.integers().map(str)))
def test_filters_select_what_the_orm_selects_or_are_refused(lookup: str, value: str) -> None:
    before = reset_posts()
    outcome = run(
        "backfill_update", "blog.BlogPost", "--set", "title=done", "--filter", f"{lookup}={value}"
    )
    if outcome.returncode == 2:
        assert_refused_cleanly(outcome, before, snapshot(BlogPost))
        return
    assert outcome.returncode == 0, outcome
    changed = set(BlogPost.objects.filter(title="done").values_list("author", flat=True))
    # The reference: Django's own lookup on the same rows, as they were.
    BlogPost.objects.update(title="t")
    converted: Any = value
    if lookup.endswith(("__in", "__range")):
        converted = [item.strip() for item in value.split(",")]
    if lookup.endswith("__isnull"):
        converted = value.strip().lower() in ("true", "yes", "on", "1", "t", "y")
    expected = set(BlogPost.objects.filter(**{lookup: converted}).values_list("author", flat=True))
    assert changed == expected
    assert_no_run_running()


@EXAMPLES
@given(name=st.one_of(ANY_TEXT, st.text(min_size=190, max_size=230)))
def test_names_are_kept_exactly_or_refused(name: str) -> None:
    before = reset_posts()
    outcome = run("backfill_update", "blog.BlogPost", "--set", "author=x", "--name", name)
    if outcome.returncode == 2:
        assert_refused_cleanly(outcome, before, snapshot(BlogPost))
        return
    assert outcome.returncode == 0, outcome
    assert list(Run.objects.values_list("name", "status")) == [(name, "completed")]


# -- what a transform returns ---------------------------------------------------------------

OUTPUTS = st.one_of(
    ANY_TEXT,
    st.text(min_size=55, max_size=70),
    st.integers(),
    st.floats(),
    st.none(),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
)


@EXAMPLES
@given(value=OUTPUTS, command=st.sampled_from(["backfill_cursor", "backfill_iterate"]))
def test_transform_output_is_stored_as_returned_or_fails_naming_the_row(
    value: Any, command: str
) -> None:
    before = reset_posts()
    transforms.GENERATED = value
    path = (
        "tests.transforms.generated_row"
        if command == "backfill_cursor"
        else ("tests.transforms.generated_instance")
    )
    outcome = run(command, "blog.BlogPost", "--transform", path)
    assert outcome.returncode in (0, 1), outcome
    if outcome.returncode == 1:
        assert "pk=" in outcome.error and "\n" not in outcome.error.strip()
        assert snapshot(BlogPost) == before
        assert Run.objects.get().status == "failed"
        return
    assert isinstance(value, str) and len(value) <= 60 and text_problem(value) is None
    assert set(BlogPost.objects.values_list("author", flat=True)) == {value}
    assert_no_run_running()


def test_the_backend_under_test_is_named() -> None:
    # The properties above run once per database of `make test`.
    assert connection.vendor in ("postgresql", "sqlite", "mysql")
    pytest.importorskip("hypothesis")
