from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.db import models

import backfill
from backfill import schema
from backfill.exceptions import BadInput
from backfill.management.base import BackfillCommand
from backfill.result import Result
from backfill.values import parse_set


class Command(BackfillCommand):
    help = (
        "Stream raw rows (dicts, no model instances) through a server-side cursor, apply --set "
        "or --transform, and write the changed rows in one bulk statement per chunk."
    )
    strategy = "cursor"

    def add_strategy_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="F=V",
            help="Set field F to V on every row.",
        )
        parser.add_argument(
            "--set-json",
            action="append",
            default=[],
            metavar="F=JSON",
            help="Set field F to a JSON value: null, numbers, lists, objects.",
        )
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
        if (options["set"] or options["set_json"]) and options["transform"]:
            raise BadInput("Pass either --set/--set-json or --transform, not both.")
        fields = (
            schema.field_list(model, options["only"], purpose="--only") if options["only"] else None
        )
        values = parse_set(model, options["set"], options["set_json"])
        if values:
            return backfill.cursor(queryset, fields=fields, set=values, **common)
        return backfill.cursor(queryset, fields=fields, transform=options["transform"], **common)
