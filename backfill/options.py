"""Every run option once: its keyword in the Python API, its command-line flag, its type, its
range and its help. argparse (the three commands), the API's keyword check, ``RunBackfill``
and the option checks all read this table, so an option cannot drift between them.

Checks speak the API's words (``batch_size must be positive``); a command translates a
refused option to its flag (``--batch-size must be positive``) at its edge.
"""

from __future__ import annotations

import difflib
import inspect
import math
from argparse import ArgumentParser, ArgumentTypeError
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from backfill.exceptions import BadInput

# PostgreSQL keeps timeouts in milliseconds in a 32-bit integer.
MAX_TIMEOUT = 2_147_483.0
MAX_SLEEP = 86_400.0
MAX_CHUNK_TIME = 3_600.0
MAX_BATCH_SIZE = 10_000_000
TEN_YEARS = 10 * 365 * 86_400.0


class OptionInvalid(BadInput):
    """A run option out of its range: said in the API's words, or in a command's flags."""

    def __init__(self, option: Option, problem: str) -> None:
        self.option = option
        self.problem = problem
        super().__init__(self.worded(option.name, f"{option.name}={option.example}"))

    def worded(self, name: str, example: str) -> str:
        text = f"{name} {self.problem}"
        return text.replace("{example}", example)

    def as_flags(self) -> str:
        """The message as a command says it: ``--batch-size … Pass e.g. --batch-size 2000.``"""
        return self.worded(self.option.flag, f"{self.option.flag} {self.option.example}")


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    # "int", "float", "str", "bool" (a switch) or "choice".
    kind: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    # What argparse fills in when the flag is absent (None: the setting decides).
    default: Any = None
    # Numbers: the range (low excluded unless low_ok), and an example for messages.
    low: float = 0.0
    high: float = math.inf
    low_ok: bool = False
    example: str = "1"
    # Refused by RunBackfill, with why (a migration cannot honour it).
    not_in_migrations: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def add_to(self, parser: ArgumentParser) -> None:
        if self.kind == "bool":
            parser.add_argument(self.flag, action="store_true", help=self.help)
            return
        kwargs: dict[str, Any] = {"help": self.help, "default": self.default}
        if self.metavar:
            kwargs["metavar"] = self.metavar
        if self.choices:
            kwargs["choices"] = list(self.choices)
        if self.kind in ("int", "float"):
            kwargs["type"] = self.parse_number
        parser.add_argument(self.flag, **kwargs)

    def parse_number(self, text: str) -> int | float:
        """A flag's text as the number it must be, or one line saying it is not one."""
        try:
            return int(text) if self.kind == "int" else float(text)
        except ValueError:
            what = "whole number" if self.kind == "int" else "number"
            raise ArgumentTypeError(
                f"{self.flag} {text!r} is not a {what} (e.g. {self.flag} {self.example})"
            ) from None

    def check(self, value: Any) -> None:
        """Raise OptionInvalid when ``value`` is not one this option can take."""
        if value is None:
            return
        if self.kind == "choice" and value not in self.choices:
            allowed = " or ".join(repr(c) for c in self.choices)
            raise OptionInvalid(self, f"must be {allowed}, got {value!r}.")
        if self.kind not in ("int", "float"):
            return
        whole = self.kind == "int"
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            what = "a whole number" if whole else "a number"
            raise OptionInvalid(self, f"must be {what}, got {value!r}. Pass e.g. {{example}}.")
        if not math.isfinite(value):
            raise OptionInvalid(
                self, f"must be a finite number, got {value!r}. Pass e.g. {{example}}."
            )
        if value < self.low or (value == self.low and not self.low_ok):
            if self.low_ok or self.low > 0:
                raise OptionInvalid(self, f"must be {self.low:g} or more, got {value!r}.")
            raise OptionInvalid(self, f"must be positive, got {value!r}. Pass e.g. {{example}}.")
        if value > self.high:
            raise OptionInvalid(
                self, f"must be at most {self.high:,.0f}, got {value!r}. Pass e.g. {{example}}."
            )


def _seconds(
    name: str, help: str, *, high: float, example: str = "5", metavar: str = "S", **more: Any
) -> Option:
    return Option(name, help, "float", metavar=metavar, high=high, example=example, **more)


# The options of a run, in the order --help shows them (after the strategy's own).
RUN_OPTIONS: tuple[Option, ...] = (
    Option(
        "batch_size",
        "Rows per chunk (the starting size when --target-chunk-time adapts it).",
        "int",
        metavar="N",
        high=MAX_BATCH_SIZE,
        example="2000",
    ),
    Option(
        "dry_run",
        "Print the plan and a preview of the first chunk; write nothing.",
        "bool",
        not_in_migrations="the migration would be recorded as applied with nothing written",
    ),
    Option("name", "The run's identity (default: derived from the command).", "str"),
    Option(
        "restart",
        "Ignore this run's checkpoint and start from the beginning.",
        "bool",
        not_in_migrations="every re-run of migrate would start over instead of resuming",
    ),
    _seconds(
        "max_runtime",
        "Stop cleanly (checkpointed, exit 3) after this long.",
        high=TEN_YEARS,
        example="3600",
        metavar="SECONDS",
    ),
    _seconds("sleep", "Pause after each chunk.", high=MAX_SLEEP, low_ok=True, example="0.5"),
    _seconds(
        "target_chunk_time",
        "Adapt the chunk size so each chunk takes about this long.",
        high=MAX_CHUNK_TIME,
        example="0.5",
    ),
    Option(
        "max_rate",
        "Never go faster than this many rows per second.",
        "float",
        metavar="ROWS_PER_S",
        high=1e12,
        example="5000",
    ),
    _seconds("lock_timeout", "PostgreSQL lock_timeout per chunk (SET LOCAL).", high=MAX_TIMEOUT),
    _seconds(
        "statement_timeout",
        "PostgreSQL statement_timeout per chunk (SET LOCAL).",
        high=MAX_TIMEOUT,
        example="60",
    ),
    _seconds(
        "max_replica_lag",
        "Pause while a replica lags more than this (PostgreSQL).",
        high=MAX_SLEEP,
        example="10",
    ),
    Option(
        "vacuum_every",
        "VACUUM the table after each such share of it (0.1 = 10%%).",
        "float",
        metavar="SHARE",
        high=1.0,
        example="0.1",
    ),
    Option(
        "count",
        "Total rows from the planner's estimate (default) or COUNT(*).",
        "choice",
        choices=("estimate", "exact"),
        default="estimate",
    ),
    Option(
        "workers",
        "N processes working this run in parallel (PostgreSQL).",
        "int",
        metavar="N",
        default=1,
        low=1,
        low_ok=True,
        high=1000,
        example="4",
        not_in_migrations="one migrate process works the run",
    ),
    # Not a flag: how often a chunk is retried (BACKFILL["RETRIES"] on the command line).
    Option("retries", "", "int", low=0, low_ok=True, high=1000, example="5"),
)
BY_NAME: dict[str, Option] = {option.name: option for option in RUN_OPTIONS}
FLAGS = tuple(option for option in RUN_OPTIONS if option.help)
# Options of a run worked by a task engine (see backfill.engines); checked there.
ENGINE_KEYWORDS = ("engine", "joiners", "budget", "queue", "wait", "filter")
# What an API call takes; ``join`` and ``extra`` are internal (an engine's joiner), not listed.
API_KEYWORDS = (*BY_NAME, *ENGINE_KEYWORDS)
INTERNAL_KEYWORDS = ("join", "extra")
MIGRATION_KEYWORDS = tuple(o.name for o in RUN_OPTIONS if not o.not_in_migrations)


class MigrationOptions(TypedDict, total=False):
    """The run options ``RunBackfill`` takes as keywords (see ``RUN_OPTIONS``)."""

    batch_size: int | None
    name: str | None
    max_runtime: float | None
    sleep: float | None
    target_chunk_time: float | None
    max_rate: float | None
    lock_timeout: float | None
    statement_timeout: float | None
    max_replica_lag: float | None
    vacuum_every: float | None
    count: str | None
    retries: int | None


class RunOptions(MigrationOptions, total=False):
    """The run options every API call takes as keywords (see ``RUN_OPTIONS``), and how a run
    is handed to a task engine (see ``backfill.engines``)."""

    dry_run: bool
    restart: bool
    workers: int
    engine: str | None
    joiners: int | None
    budget: float | None
    queue: str | None
    wait: bool
    filter: Any


def name_keywords(function: Callable[..., Any], keywords: Iterable[str]) -> None:
    """Give ``function`` (taking ``**options``) a signature that names ``keywords`` as
    keyword-only parameters defaulting to None. Django's migration writer writes back only
    the parameters an operation's ``__init__`` signature names (see RunBackfill)."""
    signature = inspect.signature(function)
    kept = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    named = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None) for k in keywords]
    function.__signature__ = signature.replace(parameters=[*kept, *named])  # type: ignore[attr-defined]


def add_arguments(parser: ArgumentParser) -> None:
    for option in FLAGS:
        option.add_to(parser)


def from_command(options: Mapping[str, Any]) -> dict[str, Any]:
    """The run options a command's parsed arguments give, as API keywords."""
    return {o.name: options[o.name] for o in FLAGS if o.name in options}


def check_keywords(function: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """A keyword the call does not take is a TypeError naming it and its nearest neighbours."""
    allowed = list(allowed)
    for keyword in given:
        if keyword in allowed or keyword in INTERNAL_KEYWORDS:
            continue
        near = difflib.get_close_matches(keyword, allowed, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
        raise TypeError(
            f"{function}() got an unexpected keyword argument {keyword!r}.{hint} "
            f"It takes: {', '.join(allowed)}."
        )


def run_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords of a call run here (not handed to an engine), as ``Options`` fields;
    an engine's keyword without ``engine=`` is bad input."""
    for keyword in ENGINE_KEYWORDS:
        if values.get(keyword) not in (None, False):
            raise BadInput(
                f"{keyword}= is about a run handed to a task engine: pass engine='celery' too, "
                "or leave it out."
            )
    return {k: v for k, v in values.items() if k not in ENGINE_KEYWORDS}
