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
        "Stream raw rows (dicts, no model instances) through a server-side cursor, apply --set "
        "or --transform, and write the changed rows in one bulk statement per chunk."
    )
    strategy = "cursor"

    def add_strategy_arguments(self, parser: ArgumentParser) -> None:
        self.add_value_arguments(parser, "row")
        parser.add_argument(
            "--transform",
            metavar="PATH|NAME",
            help="pkg.module.func (receives a dict, returns a dict of changes) "
            "or a registered row transform's name.",
        )
        parser.add_argument(
            "--only", metavar="F,...", help="Columns to read into each row dict (default: all)."
        )

    def run_backfill(
        self, model: type[models.Model], queryset: Any, options: dict[str, Any], **common: Any
    ) -> Result:
        fields = (
            schema.field_list(model, options["only"], purpose="--only")
            if options["only"] is not None
            else None
        )
        values = self.set_values(model, options)
        if values:
            return backfill.cursor(queryset, fields=fields, set=values, **common)
        return backfill.cursor(queryset, fields=fields, transform=options["transform"], **common)
