"""The base of every backfill command: errors become one line and an exit code (the words come
from ``backfill.edge``).

Whatever happens below a command (bad input, a failed chunk, a refused connection, a missing
ledger table, a signal during start-up, a second Ctrl-C, an exception from application code)
ends in one of the documented exit codes 0-4 with one line on stderr, never a traceback unless
``--traceback`` asks for one. With ``--json`` stdout carries one object on every exit.
"""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from contextlib import nullcontext, suppress
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from backfill import edge
from backfill.exceptions import BadInput, Interrupted
from backfill.stopping import COMMANDS, EARLY, StopFlag, stop_on_signals


def add_database_argument(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--database", default=DEFAULT_DB_ALIAS, help='Database alias (default "default").'
    )


def add_json_argument(
    parser: ArgumentParser, help: str = "Print the outcome as one JSON object on stdout."
) -> None:
    parser.add_argument("--json", action="store_true", help=help)


def add_progress_argument(
    parser: ArgumentParser,
    help: str = "auto: a bar on a terminal, log lines otherwise.",
    *,
    json_lines: bool = False,
) -> None:
    modes = ["auto", "bar", "log", "json", "none"] if json_lines else ["auto", "bar", "log", "none"]
    parser.add_argument("--progress", choices=modes, default="auto", help=help)


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
        return {
            "status": edge.STATUS_BY_CODE.get(code, "failed"),
            "exit_code": code,
            "message": message,
        }

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
        """An exception no handler took, as an exit code and one line (in flags)."""
        return edge.failure(exc, options.get("database") or DEFAULT_DB_ALIAS, command=True)

    def _json_error(self, options: dict[str, Any], code: int, message: str) -> None:
        if options.get("json") and not self._json_written:
            self._json_written = True
            self.stdout.write(json.dumps(self.error_object(code, message), default=str))

    def write_json(self, data: dict[str, Any]) -> None:
        """The one JSON object of this call (success or stop); errors add none after it."""
        self._json_written = True
        self.stdout.write(json.dumps(data, default=str))
