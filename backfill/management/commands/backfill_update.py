from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.db import models

import backfill
from backfill.exceptions import BadInput
from backfill.expressions import parse_set_expr
from backfill.management.base import BackfillCommand
from backfill.result import Result


class Command(BackfillCommand):
    help = "Set columns with SQL only: one UPDATE per primary-key chunk, skipping equal rows."
    strategy = "update"

    def add_strategy_arguments(self, parser: ArgumentParser) -> None:
        self.add_value_arguments(parser, "row")
        parser.add_argument(
            "--set-expr",
            action="append",
            default=[],
            metavar="F=EXPR",
            help='Set field F to an expression, e.g. Lower("title") or F("views") + 1.',
        )

    def run_backfill(
        self, model: type[models.Model], queryset: Any, options: dict[str, Any], **common: Any
    ) -> Result:
        values = self.set_values(model, options)
        values.update(parse_set_expr(model, options["set_expr"], using=options["database"]))
        if not values:
            raise BadInput(
                "backfill_update needs at least one --set, --set-json or --set-expr, "
                'e.g. --set author="Me, myself, and I".'
            )
        return backfill.update(queryset, set=values, **common)
