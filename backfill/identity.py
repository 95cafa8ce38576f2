"""A run's identity: its name, and what it does (command, model, transform, filter).

Two calls with the same identity are the same run (the second resumes the first); a name
reused for a different backfill is refused by the ledger.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from backfill.strategies import Strategy
from backfill.validation import NAME_LENGTH


@dataclass(frozen=True)
class RunIdentity:
    name: str
    strategy: str
    model_label: str
    # What the run does, as stored on the run row: the transform or the values set, and the
    # filter. Resuming with another filter would skip or add rows, so it is compared too.
    spec: dict[str, Any]
    # The caller chose the name (an empty chosen name is refused, never replaced).
    named: bool


def identify(strategy: Strategy, name: str | None) -> RunIdentity:
    """The identity of ``strategy``'s run: named ``name``, or a name derived from what it does."""
    described = strategy.describe(None).spec
    where = strategy.queryset.query.where
    return RunIdentity(
        name=name if name is not None else default_name(strategy, described),
        strategy=strategy.kind,
        model_label=strategy.queryset.model._meta.label,
        spec={**described, "filter": str(where) if where else ""},
        named=name is not None,
    )


def default_name(strategy: Strategy, spec: dict[str, Any]) -> str:
    """A stable run name from the command, model, transform and filters."""
    where = str(strategy.queryset.query.where) if strategy.queryset.query.where else ""
    digest = hashlib.sha1(
        json.dumps([strategy.kind, spec, where], sort_keys=True, default=str).encode()
    ).hexdigest()[:8]
    what = spec.get("transform") or "set " + ",".join(spec.get("set", {}))
    head = f"{strategy.kind} {strategy.queryset.model._meta.label} {what}"
    # Cut the readable part, never the digest: it is what tells two long names apart.
    if len(head) > NAME_LENGTH - len(digest) - 1:
        head = head[: NAME_LENGTH - len(digest) - 2] + "…"
    return f"{head} {digest}"
