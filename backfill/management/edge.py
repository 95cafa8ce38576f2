"""The edge every backfill command shares: errors become one line and an exit code.

Whatever happens below a command (bad input, a failed chunk, a refused connection, a missing
ledger table, a signal during start-up, a second Ctrl-C, an exception from application code)
ends in one of the documented exit codes 0-4 with one line on stderr, never a traceback unless
``--traceback`` asks for one. With ``--json`` stdout carries one object on every exit.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext, suppress
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from backfill import database
from backfill.columns import text_problem
from backfill.exceptions import BackfillError, BadInput, Interrupted, one_line
from backfill.options import OptionInvalid
from backfill.signals import COMMANDS, EARLY, StopFlag, stop_on_signals

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


class EdgeCommand(BaseCommand):
    """A command whose every exit is one line, a code from 0-4 and, with --json, one object."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        prog = f"{prog_name} {subcommand}"

        def error(message: str) -> NoReturn:
            line = f"{message}. Run '{prog} --help' for usage."
            if not parser.called_from_command_line:
                # call_command: a usage error is bad input (exit 2), as on a terminal.
                raise CommandError(f"Error: {line}", returncode=BadInput.exit_code)
            self.stderr.write(f"{prog}: error: {line}")
            if "--json" in sys.argv:
                self.stdout.write(json.dumps(self.error_object(BadInput.exit_code, line)))
            sys.exit(BadInput.exit_code)

        parser.error = error  # type: ignore[method-assign]
        return parser

    def error_object(self, code: int, message: str) -> dict[str, Any]:
        return {"status": STATUS_BY_CODE.get(code, "failed"), "exit_code": code, "message": message}

    def run_from_argv(self, argv: list[str]) -> None:
        # In the three backfill commands, from the first line of our code to the last,
        # SIGINT/SIGTERM set this flag (which the engine checks between chunks) instead of
        # killing the process mid-way; a second SIGINT raises KeyboardInterrupt once. The other
        # commands keep Python's Ctrl-C. Either way a KeyboardInterrupt ends in exit 3.
        runs_chunks = self.__module__.rpartition(".")[2] in COMMANDS
        self.stop = EARLY if runs_chunks else StopFlag()
        try:
            with stop_on_signals(self.stop) if runs_chunks else nullcontext():
                try:
                    super().run_from_argv(argv)
                except KeyboardInterrupt:
                    self.stderr.write(
                        "Interrupted: nothing after the last committed chunk was kept; "
                        "re-run the same command to resume."
                    )
                    sys.exit(Interrupted.exit_code)
        finally:
            with suppress(Exception):
                connections.close_all()

    def execute(self, *args: Any, **options: Any) -> Any:
        self._json_written = False
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            self._json_error(options, exc.returncode, str(exc))
            raise
        except KeyboardInterrupt:
            message = (
                "Interrupted by a second SIGINT: the chunk in flight was rolled back; re-run "
                "the same command to resume."
            )
            self._json_error(options, Interrupted.exit_code, message)
            raise CommandError(message, returncode=Interrupted.exit_code) from None
        except Exception as exc:
            if options.get("traceback"):
                raise
            code, message = self.translate(exc, options)
            self._json_error(options, code, message)
            raise CommandError(message, returncode=code) from exc

    def translate(self, exc: BaseException, options: dict[str, Any]) -> tuple[int, str]:
        """An exception no handler took, as an exit code and one line."""
        if isinstance(exc, OptionInvalid):
            return exc.exit_code, exc.as_flags()
        if isinstance(exc, BackfillError):
            return exc.exit_code, str(exc)
        if isinstance(exc, DatabaseError):
            message, code = database_failure(exc, options.get("database") or DEFAULT_DB_ALIAS)
            return code, message
        return 1, (
            f"{type(exc).__name__}: {one_line(exc)}. Nothing after the last committed chunk "
            "was kept; run with --traceback for details."
        )

    def _json_error(self, options: dict[str, Any], code: int, message: str) -> None:
        if options.get("json") and not self._json_written:
            self._json_written = True
            self.stdout.write(json.dumps(self.error_object(code, message), default=str))

    def write_json(self, data: dict[str, Any]) -> None:
        """The one JSON object of this call (success or stop); errors add none after it."""
        self._json_written = True
        self.stdout.write(json.dumps(data, default=str))
