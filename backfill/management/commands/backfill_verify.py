from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from backfill import recipes, verify
from backfill.database import check_alias
from backfill.deferred import find_recipe
from backfill.exceptions import BackfillError, BadInput
from backfill.filters import parse_filters
from backfill.management.command import (
    EdgeCommand,
    add_database_argument,
    add_json_argument,
)


class Command(EdgeCommand):
    help = (
        "Count the rows of a deferred run that still need its change, chunk by chunk over the "
        "primary key. Exit 0 when none, 1 otherwise."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", metavar="NAME", help="The run to verify.")
        parser.add_argument(
            "--needs",
            action="append",
            default=[],
            metavar="LOOKUP=V",
            help="Rows matching this lookup still need the change (repeatable; default: the "
            "run's own needs=, or for set= runs the rows whose value differs).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=verify.BATCH_SIZE,
            metavar="N",
            help=f"Keys per counted range (default {verify.BATCH_SIZE:,}).",
        )
        add_database_argument(parser)
        add_json_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        name, using = options["name"], options["database"]
        try:
            check_alias(using)
            needs = None
            if options["needs"]:
                _run, recipe = find_recipe(name, using)
                needs = parse_filters(recipes.model_of(recipe), options["needs"], using=using)
            if options["batch_size"] <= 0:
                raise BadInput(
                    f"--batch-size must be positive, got {options['batch_size']}. "
                    "Pass e.g. --batch-size 10000."
                )
            found = verify.verify(name, using=using, needs=needs, batch_size=options["batch_size"])
        except BackfillError as exc:
            if options["json"]:
                self.write_json(
                    {
                        **self.error_object(exc.exit_code, str(exc)),
                        "name": name,
                        "ok": False,
                        "error": str(exc),
                    }
                )
            raise CommandError(str(exc), returncode=exc.exit_code) from exc
        if options["json"]:
            code = 0 if found.ok else 1
            self.write_json(
                {
                    "status": "completed" if found.ok else "failed",
                    "exit_code": code,
                    "message": f"{found.remaining} row(s) left to backfill",
                    **found.as_dict(),
                }
            )
        elif int(options["verbosity"]) > 0:
            where = f"{found.model} ({found.condition}), {found.ranges:,} ranges"
            if found.ok:
                self.stdout.write(
                    self.style.SUCCESS(f"Run {name!r}: no row left to backfill in {where}.")
                )
            else:
                shown = ", ".join(repr(pk) for pk in found.pks)
                more = ", …" if found.remaining > len(found.pks) else ""
                self.stdout.write(
                    f"Run {name!r}: {found.remaining:,} rows still need the change in {where}; "
                    f"pks {shown}{more}"
                )
        if not found.ok:
            raise CommandError(
                f"{found.remaining:,} rows of run {name!r} still need the change.", returncode=1
            )
