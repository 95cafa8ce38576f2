"""``--set-expr`` parsing: a tiny allow-listed subset of Django expressions, read with ``ast``.

Nothing is evaluated: the parser walks the syntax tree and builds Django expression objects for
the names on the allow-list only. Field references are checked against the model.
"""

from __future__ import annotations

import ast
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import FieldError
from django.db import DEFAULT_DB_ALIAS, models
from django.db.models import F, Value, functions
from django.db.models.expressions import Combinable, CombinedExpression
from django.db.models.functions import Cast
from django.db.models.sql import UpdateQuery

from backfill import schema
from backfill.columns import text_problem
from backfill.exceptions import BadInput, one_line

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "Abs": functions.Abs,
    "Coalesce": functions.Coalesce,
    "Concat": functions.Concat,
    "Greatest": functions.Greatest,
    "Least": functions.Least,
    "Left": functions.Left,
    "Length": functions.Length,
    "Lower": functions.Lower,
    "LPad": functions.LPad,
    "LTrim": functions.LTrim,
    "MD5": functions.MD5,
    "NullIf": functions.NullIf,
    "Replace": functions.Replace,
    "Reverse": functions.Reverse,
    "Right": functions.Right,
    "Round": functions.Round,
    "RPad": functions.RPad,
    "RTrim": functions.RTrim,
    "StrIndex": functions.StrIndex,
    "Substr": functions.Substr,
    "Trim": functions.Trim,
    "Upper": functions.Upper,
}

OPERATORS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Mod: "%",
}

ALLOWED = ", ".join(["F", "Value", *sorted(FUNCTIONS)]) + " and + - * / %"

# Limits, checked before anything runs (documented in docs/commands.md).
MAX_LENGTH = 10_000  # characters of one expression
MAX_DEPTH = 32  # nested calls and operators
MAX_NODES = 200  # calls, operators, fields and literals in one expression
MAX_ARGUMENTS = 32  # arguments of one call (Concat, Coalesce, Greatest…)
MAX_TEXT = 10_000  # characters of one text literal
MAX_COUNT = 1_000_000  # a length or position argument (Left, Substr, LPad…)
INT_RANGE = (-(2**63), 2**63 - 1)

# What a function takes, by position: "text", "number", "int", "count" (an integer literal
# 0..MAX_COUNT), "position" (an integer literal 1..MAX_COUNT), "any"; then what it gives
# ("same" = the first argument's kind). Arities not listed here are refused.
TEXT_IN_TEXT_OUT = {"Lower", "Upper", "Trim", "LTrim", "RTrim", "Reverse", "MD5"}
SIGNATURES: dict[str, tuple[list[tuple[str, ...]], str]] = {
    **{name: ([("text",)], "text") for name in TEXT_IN_TEXT_OUT},
    "Length": ([("text",)], "int"),
    "Left": ([("text", "count")], "text"),
    "Right": ([("text", "count")], "text"),
    "Substr": ([("text", "position"), ("text", "position", "count")], "text"),
    "LPad": ([("text", "count"), ("text", "count", "text")], "text"),
    "RPad": ([("text", "count"), ("text", "count", "text")], "text"),
    "Replace": ([("text", "text"), ("text", "text", "text")], "text"),
    "StrIndex": ([("text", "text")], "int"),
    "Abs": ([("number",)], "same"),
    "Round": ([("exact",), ("exact", "places")], "same"),
    "NullIf": ([("any", "any")], "same"),
}
NUMBER_KINDS = {"int", "float", "decimal"}


@dataclass(frozen=True)
class Node:
    """A built piece of an expression: the Django expression (or a literal), the kind of value
    it gives (int, float, decimal, text, bool, null or other) and whether it may be NULL.
    """

    value: Any
    kind: str
    nullable: bool
    literal: bool = False

    def expression(self) -> Any:
        return self.value if hasattr(self.value, "resolve_expression") else Value(self.value)


def field_kind(field: models.Field[Any, Any]) -> str:
    if isinstance(field, models.ForeignKey):
        field = field.target_field
    family = _family(field)
    if family == "number":
        if isinstance(field, models.FloatField):
            return "float"
        return "decimal" if isinstance(field, models.DecimalField) else "int"
    return "text" if family == "text" else "bool" if family == "boolean" else "other"


def literal_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "text"}.get(type(value), "other")


class Division(CombinedExpression):
    """``a / b`` and ``a % b`` that fail on a zero divisor on every backend: PostgreSQL raises
    by itself, SQLite would give NULL, so there the operation goes through a function that
    raises (registered by ``register_sqlite_functions``); MySQL raises in strict mode.
    """

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        lhs, lhs_params = compiler.compile(self.lhs)
        rhs, rhs_params = compiler.compile(self.rhs)
        function = "backfill_divide" if self.connector == "/" else "backfill_modulo"
        return f"{function}({lhs}, {rhs})", (*lhs_params, *rhs_params)

    def as_mysql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        """MySQL's ``/`` of two whole numbers gives a decimal (``-7 / 2`` is ``-3.5000``, which
        the assignment rounds to ``-4``): ``DIV`` truncates toward zero, as PostgreSQL's ``/``
        does. ``MOD`` takes the sign of the dividend, as PostgreSQL's ``%``. A zero divisor
        fails the statement under the chunk's ``sql_mode`` (``backfill.mysql``).
        """
        lhs, lhs_params = compiler.compile(self.lhs)
        rhs, rhs_params = compiler.compile(self.rhs)
        params = (*lhs_params, *rhs_params)
        if self.connector != "/":
            return f"MOD({lhs}, {rhs})", params
        whole = all(
            isinstance(getattr(side, "output_field", None), models.IntegerField)
            for side in (self.lhs, self.rhs)
        )
        return f"({lhs} {'DIV' if whole else '/'} {rhs})", params


class _Builder:
    def __init__(self, model: type[models.Model], raw: str) -> None:
        self.model = model
        self.raw = raw
        self.nodes = 0

    def fail(self, what: str) -> BadInput:
        return BadInput(
            f"--set-expr {self.raw!r}: {what} is not allowed. Allowed: {ALLOWED}; "
            'literals; field references as F("name"), e.g. Lower(F("title")).'
        )

    def refuse(self, why: str) -> BadInput:
        return BadInput(f"--set-expr {self.raw!r}: {why}")

    def build(self, node: ast.AST, depth: int = 1) -> Node:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise self.refuse(
                f"the expression is too large (at most {MAX_DEPTH} levels of nesting and "
                f"{MAX_NODES} calls, operators, fields and literals). Split the change into "
                "several backfills, or use backfill_cursor with a transform."
            )
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = self.build(node.operand, depth + 1)
            if operand.kind not in NUMBER_KINDS:
                raise self.refuse(f"negating {operand.kind} is not allowed: negate numbers only.")
            if operand.literal:
                return self.constant(-operand.value)
            return Node(operand.value * -1, operand.kind, operand.nullable)
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return self.arithmetic(node, depth)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.call(node, depth)
        raise self.fail(f"{ast.unparse(node)!r}")

    def constant(self, value: Any) -> Node:
        if isinstance(value, bool) or value is None:
            return Node(value, literal_kind(value), value is None, literal=True)
        if isinstance(value, int):
            if not INT_RANGE[0] <= value <= INT_RANGE[1]:
                raise self.refuse(
                    f"the number {value} is outside the 64-bit range every backend computes in."
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise self.refuse(f"the number {value!r} is not finite.")
        elif isinstance(value, str):
            if len(value) > MAX_TEXT:
                raise self.refuse(f"a text literal is longer than {MAX_TEXT:,} characters.")
            problem = text_problem(value)
            if problem:
                raise self.refuse(f"a text literal {problem}.")
        else:
            raise self.fail(f"the literal {value!r}")
        return Node(value, literal_kind(value), False, literal=True)

    def arithmetic(self, node: ast.BinOp, depth: int) -> Node:
        symbol = OPERATORS[type(node.op)]
        left, right = self.build(node.left, depth + 1), self.build(node.right, depth + 1)
        if left.literal and right.literal:
            raise self.fail("arithmetic on two literals")
        if left.kind not in NUMBER_KINDS or right.kind not in NUMBER_KINDS:
            raise self.refuse(
                f"Cannot infer type of {symbol!r} between {left.kind} and {right.kind}: "
                "arithmetic takes numbers. Use Concat(...) to join text."
            )
        if symbol in "/%" and right.literal and right.value == 0:
            raise self.refuse(f"{symbol} by zero.")
        if symbol == "%" and (left.kind != "int" or right.kind != "int"):
            raise self.refuse("% takes whole numbers only (PostgreSQL has no float modulo).")
        kinds = {left.kind, right.kind}
        kind = "float" if "float" in kinds else "decimal" if "decimal" in kinds else "int"
        lhs, rhs = self.operand(left), self.operand(right)
        # Django spells modulo "%%" (Combinable.MOD): the SQL goes through %-formatting, and
        # the type of the result is looked up under that name.
        connector = Combinable.MOD if symbol == "%" else symbol
        value = (
            Division(lhs, connector, rhs)
            if symbol in "/%"
            else CombinedExpression(lhs, connector, rhs)
        )
        return Node(value, kind, left.nullable or right.nullable)

    @staticmethod
    def operand(node: Node) -> Any:
        """A whole-number column in arithmetic is computed in 64 bits on every backend (as
        SQLite does), not in its column's 32 bits, which overflow on PostgreSQL only.
        """
        if node.kind == "int" and not node.literal:
            return Cast(node.expression(), models.BigIntegerField())
        return node.expression()

    def field_ref(self, name: str) -> Node:
        try:
            field = schema.column_field(self.model, name, purpose="--set-expr")
        except BadInput as exc:
            raise BadInput(
                f"--set-expr {self.raw!r}: {exc} Text arguments of functions name fields, as in "
                f'Django; wrap text in Value(), e.g. Concat(F("author"), Value("!")).'
            ) from None
        return Node(F(field.name), field_kind(field), field.null)

    def call(self, node: ast.Call, depth: int) -> Node:
        assert isinstance(node.func, ast.Name)
        name = node.func.id
        if node.keywords:
            raise self.fail(f"keyword arguments in {name}(...)")
        if len(node.args) > MAX_ARGUMENTS:
            raise self.refuse(
                f"{name}(...) has {len(node.args)} arguments; at most {MAX_ARGUMENTS} are "
                "allowed. Nest calls or split the backfill."
            )
        args = [self.build(arg, depth + 1) for arg in node.args]
        if name == "F":
            if len(args) != 1 or args[0].kind != "text" or not args[0].literal:
                raise self.fail("F() without exactly one field name string")
            return self.field_ref(args[0].value)
        if name == "Value":
            if len(args) != 1 or not args[0].literal:
                raise self.fail("Value() without exactly one literal")
            return Node(Value(args[0].value), args[0].kind, args[0].nullable)
        if name not in FUNCTIONS:
            raise self.fail(f"the function {name!r}")
        # Text arguments to functions are field names in Django (Lower("title")); we keep that.
        args = [self.field_ref(a.value) if a.literal and a.kind == "text" else a for a in args]
        kind = self.check_arguments(name, args)
        extra: dict[str, Any] = {}
        if name == "Concat":
            # Concat casts every part to text, but Django cannot infer that from mixed parts
            # (text and a number) without being told.
            extra["output_field"] = models.TextField()
        nullable = (
            all(a.nullable for a in args)
            if name == "Coalesce"
            else name in ("NullIf",) or any(a.nullable for a in args)
        )
        if name == "Concat":
            nullable = False  # NULL parts count as empty text on every backend
        try:
            value = FUNCTIONS[name](*(a.value for a in args), **extra)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"--set-expr {self.raw!r}: {name}(...): {exc}.") from None
        return Node(value, kind, nullable)

    def check_arguments(self, name: str, args: list[Node]) -> str:
        """Refuse arguments whose result would differ between backends; the result's kind."""
        kinds = [a.kind for a in args]
        if name == "Concat":
            if len(args) < 2 or any(k not in ("text", "int", "null") for k in kinds):
                raise self.refuse(
                    "Concat(...) takes two or more text or whole-number parts: other types "
                    "(floats, booleans, dates) are written as text differently by each backend."
                )
            return "text"
        if name in ("Coalesce", "Greatest", "Least"):
            given = {k for k in kinds if k != "null"}
            if len(args) < 2 or len(given) > 1:
                raise self.refuse(f"{name}(...) takes two or more arguments of one type.")
            if name != "Coalesce":
                if given - NUMBER_KINDS:
                    raise self.refuse(
                        f"{name}(...) takes numbers only: backends order text differently."
                    )
                if any(a.nullable for a in args):
                    raise self.refuse(
                        f"{name}(...) of a nullable argument differs between backends (NULL is "
                        "ignored by PostgreSQL, the result on SQLite): wrap it in "
                        "Coalesce(F(...), 0)."
                    )
            return given.pop() if given else "null"
        shapes, gives = SIGNATURES[name]
        shape = next((s for s in shapes if len(s) == len(args)), None)
        if shape is None:
            counts = " or ".join(str(len(s)) for s in shapes)
            raise self.refuse(f"{name}(...) takes {counts} arguments, got {len(args)}.")
        for position, (want, arg) in enumerate(zip(shape, args, strict=True), start=1):
            self.check_argument(name, position, want, arg)
        return args[0].kind if gives == "same" else gives

    def check_argument(self, name: str, position: int, want: str, arg: Node) -> None:
        where = f"argument {position} of {name}(...)"
        if want in ("count", "position", "places"):
            low = {"count": 0, "position": 1, "places": 0}[want]
            high = 30 if want == "places" else MAX_COUNT
            if not (arg.literal and arg.kind == "int" and low <= arg.value <= high):
                raise self.refuse(
                    f"{where} must be a whole number from {low} to {high:,} written as a "
                    "literal: backends treat negative or computed lengths differently."
                )
            return
        ok = {
            "text": arg.kind in ("text", "null"),
            "number": arg.kind in NUMBER_KINDS | {"null"},
            "exact": arg.kind in ("int", "decimal", "null"),
            "any": True,
        }[want]
        if not ok:
            wanted = {
                "text": "text",
                "number": "a number",
                "exact": "a whole or decimal number (floats round differently by backend)",
            }[want]
            raise self.refuse(f"{where} must be {wanted}, got {arg.kind}.")


def parse_expression(model: type[models.Model], text: str, *, raw: str | None = None) -> Any:
    """Parse one expression such as ``Concat(F("author"), Value("!"))`` for ``model``."""
    return _parse(model, text, raw if raw is not None else text).expression()


def _parse(model: type[models.Model], text: str, raw: str) -> Node:
    if len(text) > MAX_LENGTH:
        raise BadInput(
            f"--set-expr {raw[:40]!r}…: the expression is too large ({len(text):,} "
            f"characters; at most {MAX_LENGTH:,})."
        )
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise BadInput(
            f"--set-expr {raw!r}: not a valid expression ({exc.msg}). "
            'Write it like Lower("title") or F("views") + 1.'
        ) from None
    except (RecursionError, MemoryError):
        raise BadInput(
            f"--set-expr {raw[:40]!r}…: the expression is too large (nested too deeply; at "
            f"most {MAX_DEPTH} levels)."
        ) from None
    try:
        return _Builder(model, raw).build(tree.body)
    except RecursionError:
        raise BadInput(
            f"--set-expr {raw[:40]!r}…: the expression is too large (nested too deeply; at "
            f"most {MAX_DEPTH} levels)."
        ) from None


# SQLite reports any error of a Python function as "user-defined function raised exception";
# the last one raised in this thread is kept to say what it was.
_raised = threading.local()


def describe_error(exc: BaseException) -> str:
    """A database error's text, with what an expression function of ours raised on SQLite."""
    text = one_line(exc)
    cause = getattr(_raised, "error", None)
    if "user-defined function raised exception" in text and cause:
        return f"{text} ({cause})"
    return text


def _zero_division() -> ZeroDivisionError:
    _raised.error = "division by zero"
    return ZeroDivisionError("division by zero")


def _divide(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if b == 0:
        raise _zero_division()
    if isinstance(a, int) and isinstance(b, int):
        # Whole-number division truncates toward zero, as PostgreSQL's does.
        quotient = abs(a) // abs(b)
        return quotient if (a >= 0) == (b >= 0) else -quotient
    return a / b


def _modulo(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if b == 0:
        raise _zero_division()
    return a - b * _divide(a, b)


def _simple_case(text: Any, upper: bool) -> Any:
    """Per-character case mapping, as PostgreSQL's UTF-8 locales do (``ß`` stays ``ß``)."""
    if text is None:
        return None
    out = []
    for char in str(text):
        mapped = char.upper() if upper else char.lower()
        out.append(mapped if len(mapped) == 1 else (char if upper else mapped[0]))
    return "".join(out)


def register_sqlite_functions(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: SQLite functions that make expressions give
    PostgreSQL's results (division by zero fails; Lower/Upper fold non-ASCII letters).
    """
    if connection.vendor != "sqlite":
        return
    raw = connection.connection
    raw.create_function("backfill_divide", 2, _divide, deterministic=True)
    raw.create_function("backfill_modulo", 2, _modulo, deterministic=True)
    raw.create_function("backfill_lower", 1, lambda t: _simple_case(t, False), deterministic=True)
    raw.create_function("backfill_upper", 1, lambda t: _simple_case(t, True), deterministic=True)


class Lower(functions.Lower):
    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, function="backfill_lower", **extra)


class Upper(functions.Upper):
    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, function="backfill_upper", **extra)


FUNCTIONS["Lower"] = Lower
FUNCTIONS["Upper"] = Upper


# Kinds of column an expression may be assigned to; an unlisted field type is not checked.
FAMILIES: dict[str, set[str]] = {
    "text": {
        "CharField",
        "TextField",
        "SlugField",
        "EmailField",
        "URLField",
        "FilePathField",
        "FileField",
        "ImageField",
        "GenericIPAddressField",
        "IPAddressField",
    },
    "number": {
        "IntegerField",
        "BigIntegerField",
        "SmallIntegerField",
        "PositiveIntegerField",
        "PositiveBigIntegerField",
        "PositiveSmallIntegerField",
        "AutoField",
        "BigAutoField",
        "SmallAutoField",
        "FloatField",
        "DecimalField",
    },
    "boolean": {"BooleanField", "NullBooleanField"},
    "date or time stamp": {"DateField", "DateTimeField"},
    "time": {"TimeField"},
    "duration": {"DurationField"},
    "uuid": {"UUIDField"},
    "json": {"JSONField"},
    "binary": {"BinaryField"},
}


def _family(field: Any) -> str | None:
    if isinstance(field, models.ForeignKey):
        field = field.target_field
    kind = field.get_internal_type()
    return next((name for name, kinds in FAMILIES.items() if kind in kinds), None)


def _check_type(
    model: type[models.Model], field: models.Field[Any, Any], value: Any, *, raw: str, using: str
) -> Any:
    """``value`` checked now against ``field``, so a type error is bad input, not a failed chunk.

    SQLite would store the wrong type without complaint; PostgreSQL would fail the first chunk.
    """
    from backfill.values import clean_value

    if isinstance(value, Value):
        # A bare literal is a --set: converted and validated by the field.
        return clean_value(field, value.value, option="--set-expr", raw=raw)
    query = model._base_manager.using(using).all().query.chain(UpdateQuery)
    try:
        resolved = value.resolve_expression(query, allow_joins=False, for_save=True)
        output = resolved.output_field
    except FieldError as exc:
        raise BadInput(
            f"--set-expr {raw!r}: {str(exc).strip()} Combine values of one type, or use "
            'Concat(...) to join text, e.g. Concat(F("author"), Value("!")).'
        ) from None
    want, got = _family(field), _family(output)
    if want and got and want != got:
        raise BadInput(
            f"--set-expr {raw!r}: the expression gives {got} ({type(output).__name__}) but "
            f"{model._meta.label}.{field.name} holds {want} ({type(field).__name__}). "
            "Give an expression of the field's type."
        )
    return value


def parse_set_expr(
    model: type[models.Model], items: list[str], *, using: str = DEFAULT_DB_ALIAS
) -> dict[str, Any]:
    """``['title=Lower("title")']`` to ``{"title": Lower(F("title"))}``.

    Raises BadInput for anything outside the allow-list, unknown fields, or an expression whose
    type does not fit the field.
    """
    from backfill.values import split_assignment

    result: dict[str, Any] = {}
    for raw in items:
        name, text = split_assignment(raw, option="--set-expr")
        field = schema.writable_field(model, name, purpose="--set-expr")
        node = _parse(model, text, raw)
        want = field_kind(field)
        if want in ("int", "decimal") and node.kind in ("float", "decimal") and node.kind != want:
            raise BadInput(
                f"--set-expr {raw!r}: the expression gives a {node.kind} number but "
                f"{model._meta.label}.{field.name} holds {'whole' if want == 'int' else 'decimal'}"
                " numbers, and backends round or keep the fraction differently. Give an "
                'expression of whole numbers (e.g. F("views") * 3 / 2).'
            )
        result[field.name] = _check_type(model, field, node.expression(), raw=raw, using=using)
    return result
