"""Transforms that apps register in their ``backfills.py`` modules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RegisteredTransform:
    model_label: str
    name: str
    func: Callable[..., Any]
    rows: bool

    @property
    def kind(self) -> str:
        return "row" if self.rows else "instance"

    @property
    def path(self) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}"


_registry: dict[str, dict[str, RegisteredTransform]] = {}


def _label_of(model: Any) -> str:
    if isinstance(model, str):
        return model.lower()
    return str(model._meta.label_lower)


def register(model: Any, *, rows: bool = False, name: str | None = None) -> Callable[[F], F]:
    """Register a transform for ``model`` ("app_label.Model" or the class).

    ``rows=False`` registers an instance transform (``backfill_iterate``: it receives a model
    instance and mutates it); ``rows=True`` a row transform (``backfill_cursor``: it receives a
    dict and returns a dict of changes). The name defaults to the function's name.
    Raises ``ValueError`` when the model already has a transform of that name.
    """

    def decorator(func: F) -> F:
        label = _label_of(model)
        transform_name = name or func.__name__
        existing = _registry.setdefault(label, {}).get(transform_name)
        if (
            existing is not None
            and existing.func is not func
            and existing.path != (f"{func.__module__}.{func.__qualname__}")
        ):
            raise ValueError(
                f"A backfill transform named {transform_name!r} is already registered for "
                f"{label} ({existing.path}). Pass name=... to register this one under another name."
            )
        _registry[label][transform_name] = RegisteredTransform(label, transform_name, func, rows)
        return func

    return decorator


def registered(model: Any, *, rows: bool | None = None) -> list[RegisteredTransform]:
    """The transforms registered for ``model``, of one kind when ``rows`` is given."""
    found = _registry.get(_label_of(model), {}).values()
    return sorted((t for t in found if rows is None or t.rows == rows), key=lambda t: t.name)


def unregister(model: Any, name: str) -> None:
    """Remove a registered transform (tests use this to keep the registry clean)."""
    _registry.get(_label_of(model), {}).pop(name, None)
