from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from backfill import engines
from backfill.edge import reporter_for
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
        parser.add_argument("name", metavar="NAME", help="The run, as backfill_runs lists it.")
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
        stream: Any = self.stderr._out
        result = engines.revive(
            options["name"],
            using=options["database"],
            wait=options["wait"],
            reporter=reporter_for(stream, options["progress"], int(options["verbosity"])),
            stop=getattr(self, "stop", None),
        )
        self.stdout.write(result.message)
