"""``--set-expr`` parsing: a tiny allow-listed subset of Django expressions, read with ``ast``.

Nothing is evaluated: the parser walks the syntax tree and builds Django expression objects for
the names on the allow-list only. Field references are checked against the model.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from django.core.exceptions import FieldError
from django.db import DEFAULT_DB_ALIAS, models
from django.db.models import F, Value, functions
from django.db.models.sql import UpdateQuery

from backfill import schema
from backfill.exceptions import BadInput

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

OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Mod: lambda a, b: a % b,
}

ALLOWED = ", ".join(["F", "Value", *sorted(FUNCTIONS)]) + " and + - * / %"


class _Builder:
    def __init__(self, model: type[models.Model], raw: str) -> None:
        self.model = model
        self.raw = raw

    def fail(self, what: str) -> BadInput:
        return BadInput(
            f"--set-expr {self.raw!r}: {what} is not allowed. Allowed: {ALLOWED}; "
            'literals; field references as F("name"), e.g. Lower(F("title")).'
        )

    def build(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            if node.value is None or isinstance(node.value, (str, int, float, bool)):
                return node.value
            raise self.fail(f"the literal {node.value!r}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = self.build(node.operand)
            if isinstance(operand, (int, float)):
                return -operand
            if not hasattr(operand, "resolve_expression"):
                raise self.fail(f"negating {operand!r}")
            return operand * -1
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            left, right = self.build(node.left), self.build(node.right)
            if not any(hasattr(x, "resolve_expression") for x in (left, right)):
                raise self.fail("arithmetic on two literals")
            left = left if hasattr(left, "resolve_expression") else Value(left)
            return OPERATORS[type(node.op)](left, right)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.call(node)
        raise self.fail(f"{ast.unparse(node)!r}")

    def field_ref(self, name: str) -> F:
        try:
            return F(schema.column_field(self.model, name, purpose="--set-expr").name)
        except BadInput as exc:
            raise BadInput(
                f"--set-expr {self.raw!r}: {exc} Text arguments of functions name fields, as in "
                f'Django; wrap text in Value(), e.g. Concat(F("author"), Value("!")).'
            ) from None

    def call(self, node: ast.Call) -> Any:
        assert isinstance(node.func, ast.Name)
        name = node.func.id
        if node.keywords:
            raise self.fail(f"keyword arguments in {name}(...)")
        args = [self.build(arg) for arg in node.args]
        if name == "F":
            if len(args) != 1 or not isinstance(args[0], str):
                raise self.fail("F() without exactly one field name string")
            field = schema.column_field(self.model, args[0], purpose="--set-expr")
            return F(field.name)
        if name == "Value":
            if len(args) != 1 or hasattr(args[0], "resolve_expression"):
                raise self.fail("Value() without exactly one literal")
            return Value(args[0])
        if name not in FUNCTIONS:
            raise self.fail(f"the function {name!r}")
        # Text arguments to functions are field names in Django (Lower("title")); we keep that.
        resolved = [self.field_ref(a) if isinstance(a, str) else a for a in args]
        extra: dict[str, Any] = {}
        if name == "Concat":
            # Concat casts every part to text, but Django cannot infer that from mixed parts
            # (text and a number) without being told.
            extra["output_field"] = models.TextField()
        try:
            return FUNCTIONS[name](*resolved, **extra)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"--set-expr {self.raw!r}: {name}(...): {exc}.") from None


def parse_expression(model: type[models.Model], text: str, *, raw: str | None = None) -> Any:
    """Parse one expression such as ``Concat(F("author"), Value("!"))`` for ``model``."""
    raw = raw if raw is not None else text
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise BadInput(
            f"--set-expr {raw!r}: not a valid expression ({exc.msg}). "
            'Write it like Lower("title") or F("views") + 1.'
        ) from None
    value = _Builder(model, raw).build(tree.body)
    if not hasattr(value, "resolve_expression"):
        value = Value(value)
    return value


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
    model: type[models.Model], field: models.Field, value: Any, *, raw: str, using: str
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
        value = parse_expression(model, text, raw=raw)
        result[field.name] = _check_type(model, field, value, raw=raw, using=using)
    return result
