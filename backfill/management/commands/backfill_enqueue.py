from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from backfill import engines
from backfill.edge import reporter_for
from backfill.exceptions import BadInput
from backfill.management.command import (
    EdgeCommand,
    add_database_argument,
    add_progress_argument,
)


class Command(EdgeCommand):
    help = (
        "Hand a run started with --engine to its engine again: resume it from its checkpoint "
        "and enqueue its joiners (a stalled run whose tasks were lost, a paused run)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "name", metavar="NAME", nargs="?", help="The run, as backfill_runs lists it."
        )
        parser.add_argument(
            "--stalled",
            action="store_true",
            help="Instead of NAME: every stalled run (its joiners all vanished); the periodic "
            "check to schedule.",
        )
        add_database_argument(parser)
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Follow the run until it ends; exit as a local run would.",
        )
        add_progress_argument(
            parser, "With --wait: auto is a bar on a terminal, log lines otherwise."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["stalled"] == (options["name"] is not None):
            raise BadInput(
                "Pass the NAME of one run, or --stalled for every stalled run (not both)."
            )
        if options["stalled"]:
            if options["wait"]:
                raise BadInput("--wait follows one run: pass its NAME instead of --stalled.")
            revived = engines.revive_stalled(
                using=options["database"],
                on_result=lambda result: self.stdout.write(result.message),
            )
            if not revived:
                self.stdout.write(f"No stalled runs in database {options['database']!r}.")
            return
        stream: Any = self.stderr._out
        result = engines.revive(
            options["name"],
            using=options["database"],
            wait=options["wait"],
            reporter=reporter_for(stream, options["progress"], int(options["verbosity"])),
            stop=getattr(self, "stop", None),
        )
        self.stdout.write(result.message)
