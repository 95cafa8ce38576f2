"""The edge: where a backfill meets a person or a program. It chooses how a run's events are
shown (a bar, log lines, JSON lines), words a finished call (its summary, a dry run's plan),
and turns any failure into one line and an exit code (0-4). The commands, ``backfill_runs``,
``backfill_pending`` and ``RunBackfill`` all render through it, so a run reads the same
wherever it is started.
"""

from __future__ import annotations

from typing import IO, Any

from django.db import DatabaseError, connections

from backfill import database, events
from backfill.columns import text_problem
from backfill.conf import get_setting
from backfill.exceptions import BackfillError, BadInput, TransformFailed, ValueRejected, one_line
from backfill.options import OptionInvalid
from backfill.progress import BarReporter, JsonReporter, LogReporter
from backfill.result import Result

STATUS_BY_CODE = {0: "completed", 1: "failed", 2: "bad input", 3: "stopped", 4: "busy"}
LEDGER_TABLES = ("backfill_run", "backfill_chunk", "backfill_worker")


def check_text_options(options: dict[str, Any]) -> None:
    """Every text option is valid Unicode without NUL: argv bytes that are not UTF-8 arrive
    as lone surrogates, which no database stores and no message prints.
    """
    for key, value in options.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str):
                problem = text_problem(item)
                if problem:
                    option = "the model" if key == "model" else "--" + key.replace("_", "-")
                    shown = item.encode("utf-8", "backslashreplace").decode("ascii", "replace")
                    raise BadInput(
                        f"{option} {shown!r} {problem}. Pass it as UTF-8 text without NUL bytes."
                    )


def database_failure(exc: DatabaseError, using: str) -> tuple[str, int]:
    """A database error that escaped the engine, worded for an operator, with its exit code."""
    text = one_line(exc)
    where = database.describe(using) if using in connections.settings else repr(using)
    if any(table in text for table in LEDGER_TABLES) and (
        "does not exist" in text or "no such table" in text or "doesn't exist" in text
    ):
        return (
            f"The backfill ledger tables are missing on database {where}: run "
            f"`python manage.py migrate backfill --database {using}` first ({text}).",
            BadInput.exit_code,
        )
    try:
        reachable = connections[using].is_usable() if using in connections.settings else False
    except Exception:
        reachable = False
    if not reachable:
        return (
            f"Cannot use database {where}: {text}. Check that the server is up and the "
            "DATABASES setting; nothing was changed by this call.",
            1,
        )
    return f"Database {where} failed: {type(exc).__name__}: {text}", 1


def failure(exc: BaseException, using: str, *, command: bool) -> tuple[int, str]:
    """Any exception as an exit code and one line. For a ``command``, options are worded as its
    flags (``--batch-size``) and a failed transform says to re-run the command; elsewhere (a
    migration) options are the API's keywords (``batch_size``)."""
    if isinstance(exc, OptionInvalid) and command:
        return exc.exit_code, exc.as_flags()
    if isinstance(exc, (TransformFailed, ValueRejected)) and command:
        return exc.exit_code, (
            f"{exc}. Its chunk was rolled back; earlier chunks are committed. Fix the "
            "transform and re-run the same command to resume."
        )
    if isinstance(exc, BackfillError):
        return exc.exit_code, str(exc)
    if isinstance(exc, DatabaseError):
        message, code = database_failure(exc, using)
        return code, message
    return 1, (
        f"{type(exc).__name__}: {one_line(exc)}. Nothing after the last committed chunk "
        "was kept; run with --traceback for details."
    )


def reporter_for(stream: IO[str], mode: str, verbosity: int = 1) -> events.Reporter:
    """The reporter for ``--progress MODE``: ``auto`` is a bar on a terminal, else log lines;
    ``json`` is JSON lines."""
    if verbosity == 0 or mode == "none":
        return events.ignore
    if mode == "json":
        return JsonReporter(stream)
    if mode == "auto":
        mode = "bar" if getattr(stream, "isatty", lambda: False)() else "log"
    if mode == "bar":
        return BarReporter(stream, verbosity)
    return LogReporter(stream, verbosity, interval=float(get_setting("LOG_INTERVAL")))


def summary_line(result: Result) -> str:
    return (
        f"scanned {result.rows_scanned:,} rows, changed {result.rows_changed:,}, "
        f"{result.chunks:,} chunks in {result.elapsed:.1f} s ({result.rate:,.0f} rows/s)"
    )


def run_total(result: Result) -> str | None:
    """The run's totals, when this call did only part of the run."""
    if result.total_chunks == result.chunks:
        return None
    return (
        f"run total: scanned {result.total_rows_scanned:,} rows, changed "
        f"{result.total_rows_changed:,}, {result.total_chunks:,} chunks"
    )


def plan_lines(result: Result) -> list[tuple[str, str]]:
    """A dry run's plan as lines, each with its style: "" or "warning"."""
    plan = result.plan
    assert plan is not None
    lines = [
        f"Dry run of {result.name!r} on database {result.database!r}; nothing is written.",
        f"  table            {plan.table}",
        f"  primary keys     {plan.first_key!r} .. {plan.last_key!r}",
        f"  estimated rows   {plan.estimated_rows:,}"
        if plan.estimated_rows is not None
        else "  estimated rows   unknown",
        f"  chunks           ~{plan.estimated_chunks:,} of {plan.batch_size:,} rows",
        "First chunk:",
        *(f"  {statement}" for statement in plan.statements),
    ]
    if plan.explain:
        lines.append("EXPLAIN of the first chunk's read:")
        lines.extend(f"  {line}" for line in plan.explain)
    styled = [(line, "") for line in lines]
    styled.extend((f"warning: {warning}", "warning") for warning in plan.warnings)
    if not plan.preview:
        styled.append(("Preview: no row of the first chunk would change.", ""))
    else:
        styled.append((f"Preview of the first chunk ({len(plan.preview)} changed rows shown):", ""))
        for row in plan.preview:
            changes = ", ".join(
                f"{name}: {row['before'].get(name)!r} -> {value!r}"
                for name, value in row["after"].items()
            )
            styled.append((f"  pk={row['pk']!r}  {changes}", ""))
    return styled
