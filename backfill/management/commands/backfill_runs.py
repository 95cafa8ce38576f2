from __future__ import annotations

import json
from argparse import ArgumentParser
from datetime import datetime
from typing import Any

from django.core.management.base import CommandError
from django.utils import timezone

from backfill import control, status
from backfill.exceptions import BackfillError, BadInput
from backfill.management.command import (
    EdgeCommand,
    add_database_argument,
    add_json_argument,
)
from backfill.status import RunStatus

COLUMNS = [
    "NAME",
    "MODEL",
    "STATUS",
    "PROGRESS",
    "SCANNED",
    "CHANGED",
    "RATE",
    "STARTED",
    "HEARTBEAT",
    "CHECKPOINT",
]
RIGHT_ALIGNED = {"PROGRESS", "SCANNED", "CHANGED", "RATE"}


def _time(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")


def _checkpoint(run: RunStatus) -> str:
    if run.state == "completed":
        return "done"
    return "start" if run.checkpoint is None else run.checkpoint


class Command(EdgeCommand):
    help = (
        "List backfill runs (status, progress, rows, rate, heartbeat, checkpoint), "
        "or show one run in detail with NAME; --pause or --cancel it."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", nargs="?", help="Show this run in detail.")
        add_json_argument(parser, "Print JSON: a list of runs, or one run's object with NAME.")
        add_database_argument(parser)
        control_group = parser.add_mutually_exclusive_group()
        control_group.add_argument(
            "--pause",
            action="store_true",
            help="Ask the processes working run NAME to pause after their current chunk.",
        )
        control_group.add_argument(
            "--cancel",
            action="store_true",
            help="Cancel run NAME: its processes stop after their chunk; it will not resume.",
        )
        parser.add_argument(
            "--by", default="", help="Who asks, shown with the request (--pause, --cancel)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        try:
            if options["pause"] or options["cancel"]:
                self.request(options)
                return
            if options["name"] is not None:
                run = status.get_run(options["name"], using)
                if options["json"]:
                    self.stdout.write(json.dumps(run.as_dict()))
                else:
                    self.render_run(run)
                return
            runs = status.list_runs(using)
        except BackfillError as exc:
            raise CommandError(str(exc), returncode=exc.exit_code) from exc
        if options["json"]:
            self.stdout.write(json.dumps([run.as_dict() for run in runs]))
        elif not runs:
            self.stdout.write(f"No backfill runs in database {using!r}.")
        else:
            self.render_table(runs)

    def request(self, options: dict[str, Any]) -> None:
        """--pause / --cancel: ask through the run-control API, say what it did."""
        name, using = options["name"], options["database"]
        what = "pause" if options["pause"] else "cancel"
        if name is None:
            raise BadInput(f"--{what} needs the NAME of a run: backfill_runs NAME --{what}.")
        apply = control.pause if options["pause"] else control.cancel
        done = apply(name, options["by"], using=using)
        run = status.get_run(name, using)
        if not done:
            self.stdout.write(f"Run {name!r} is {run.state}: nothing to {what}.")
        elif run.state == "cancelled":
            self.stdout.write(f"Run {name!r} cancelled.")
        else:
            self.stdout.write(
                f"{what.capitalize()} requested for run {name!r}: its processes stop after "
                "their current chunk."
            )

    def render_table(self, runs: list[RunStatus]) -> None:
        rows = [
            [
                run.name,
                run.model,
                run.state,
                status.percent(run.progress),
                f"{run.rows_scanned:,}",
                f"{run.rows_changed:,}",
                status.rate(run.rate),
                _time(run.started_at),
                status.ago(run.heartbeat_age),
                _checkpoint(run),
            ]
            for run in runs
        ]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]

        def line(cells: list[str]) -> str:
            return "  ".join(
                cell.rjust(width) if column in RIGHT_ALIGNED else cell.ljust(width)
                for column, cell, width in zip(COLUMNS, cells, widths, strict=True)
            ).rstrip()

        self.stdout.write(line(COLUMNS))
        for row in rows:
            self.stdout.write(line(row))

    def render_run(self, run: RunStatus) -> None:
        state = run.state
        if run.requested:
            by = f" by {run.requested_by}" if run.requested_by else ""
            state += f" ({run.requested} requested{by})"
        estimate = f"~{run.estimated_rows:,}" if run.estimated_rows is not None else "unknown"
        fields = [
            ("model", run.model),
            ("strategy", run.strategy),
            ("engine", run.engine),
            ("spec", json.dumps(run.spec, sort_keys=True)),
            ("status", state),
            (
                "progress",
                f"{status.percent(run.progress)} ({run.rows_scanned:,} of {estimate} rows)",
            ),
            ("rows scanned", f"{run.rows_scanned:,}"),
            ("rows changed", f"{run.rows_changed:,}"),
            ("chunks", f"{run.chunks_done:,} done, {run.chunks_pending:,} pending"),
            ("rate", f"{status.rate(run.rate)} over {run.work_seconds:,.2f} s of work"),
            ("batch size", f"{run.batch_size:,}"),
            ("checkpoint", _checkpoint(run)),
            ("created", _time(run.created_at)),
            ("started", _time(run.started_at)),
            ("heartbeat", f"{_time(run.heartbeat_at)} ({status.ago(run.heartbeat_age)})"),
            ("finished", _time(run.finished_at)),
        ]
        out = self.stdout.write
        out(f"Run {run.name!r} on database {run.database!r}")
        for label, value in fields:
            out(f"  {label:<14} {value}")
        live = run.live_workers
        out(f"  {'workers':<14} {len(live)} live" + (":" if run.workers else ""))
        for worker in run.workers:
            note = "" if worker.live else "  (no heartbeat within the lease: presumed dead)"
            out(
                f"    {worker.host} pid {worker.pid}, started {_time(worker.started_at)}, "
                f"heartbeat {status.ago(worker.heartbeat_age)}{note}"
            )
        out(f"  {'hosts':<14} {', '.join(run.hosts) or '-'}")
        out(f"  {'last error':<14} {run.last_error or '-'}")
        if run.state == status.ABANDONED:
            out(
                self.style.WARNING(
                    "  No live worker: the process that ran it died. Re-run it to resume."
                )
            )
        if run.state == status.STALLED:
            out(
                self.style.WARNING(
                    f"  No live joiner: the {run.engine} tasks were lost or their workers died. "
                    "Hand it over again to resume (backfill_enqueue --stalled revives every "
                    "stalled run)."
                )
            )
        if run.resume_command and run.state not in ("running", status.QUEUED):
            verb = "restart" if run.state == "cancelled" else "resume"
            out(f"  {verb:<14} {run.resume_command}")
            if run.engine == "none":  # a run handed to an engine keeps its filters
                out(f"  {'':<14} (add the original --filter/--exclude options, if any)")
