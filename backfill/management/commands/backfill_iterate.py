from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.db import models

import backfill
from backfill import schema
from backfill.management.base import BackfillCommand
from backfill.result import Result


class Command(BackfillCommand):
    help = (
        "Load model instances chunk by chunk, apply --set or --transform, and write the "
        "changed rows in one bulk statement per chunk."
    )
    strategy = "iterate"

    def add_strategy_arguments(self, parser: ArgumentParser) -> None:
        self.add_value_arguments(parser, "instance")
        parser.add_argument(
            "--transform",
            metavar="PATH|NAME",
            help="pkg.module.func (receives the instance) or a registered name.",
        )
        parser.add_argument("--only", metavar="F,...", help="Load only these fields.")
        parser.add_argument("--defer", metavar="F,...", help="Load all fields but these.")
        parser.add_argument(
            "--save",
            action="store_true",
            help="Write with save(update_fields=...) per object so signals fire.",
        )

    def run_backfill(
        self, model: type[models.Model], queryset: Any, options: dict[str, Any], **common: Any
    ) -> Result:
        if options["only"] is not None:
            queryset = queryset.only(*schema.field_list(model, options["only"], purpose="--only"))
        if options["defer"] is not None:
            queryset = queryset.defer(
                *schema.field_list(model, options["defer"], purpose="--defer")
            )
        values = self.set_values(model, options)
        if values:
            return backfill.iterate(queryset, set=values, save=options["save"], **common)
        return backfill.iterate(
            queryset, transform=options["transform"], save=options["save"], **common
        )
