"""The runs in the Django admin: progress and status for staff, pause and cancel for some.

Runs are written by the engine only, so the admin neither adds nor edits nor deletes them.
Staff with ``backfill.control_run`` get Pause and Cancel buttons (on each row of the list and
on a run's page) and the same two admin actions. Pause and cancel only ask: they set
``Run.requested`` and the process working the run stops after its current chunk (exit 3). A run
that no process works (paused, stopped, failed, or abandoned by a dead process) is cancelled at
once, so a cron job re-running it does not resume it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString

from backfill import control, history, status
from backfill.models import Run, RunWait, Worker

T = TypeVar("T")
# The admin's classes are generic to the type checker only: Django does not subscript them at
# run time (django-stubs-ext's monkeypatch would, but a project need not install it).
if TYPE_CHECKING:
    RunAdminBase = admin.ModelAdmin[Run]
    WorkerInlineBase = admin.TabularInline[Worker, Run]
else:
    RunAdminBase = admin.ModelAdmin
    WorkerInlineBase = admin.TabularInline
CONTROL_PERMISSION = "backfill.control_run"


def _username(request: HttpRequest) -> str:
    return str(request.user.get_username())[:150]


def control_buttons(run: Run) -> SafeString | str:
    """The Pause and Cancel buttons a run offers now."""
    # Buttons, not links: they submit the page's own form (and its CSRF token) to the
    # pause or cancel view through ``formaction``, so a list row needs no nested form.
    buttons = []
    if run.status == Run.Status.RUNNING and not run.requested:
        buttons.append(("pause", "Pause", ""))
    if run.status not in (Run.Status.COMPLETED, Run.Status.CANCELLED) and (
        run.requested != Run.Request.CANCEL
    ):
        question = f"Cancel run {run.name!r}? It will not resume without --restart."
        buttons.append(("cancel", "Cancel", f"return confirm({json.dumps(question)})"))
    if not buttons:
        return "-"
    return format_html_join(
        " ",
        '<button type="submit" class="button" name="_{}" formaction="{}" '
        'formmethod="post" onclick="{}">{}</button>',
        (
            (
                what,
                reverse(f"admin:backfill_run_{what}", args=[run.pk]),
                confirm,
                label,
            )
            for what, label, confirm in buttons
        ),
    )


class WorkerInline(WorkerInlineBase):
    model = Worker
    extra = 0
    can_delete = False
    fields = ["host", "pid", "started_at", "heartbeat_at", "heartbeat"]
    readonly_fields = ["host", "pid", "started_at", "heartbeat_at", "heartbeat"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Whoever may see a run may see who works it; no separate permission on workers.
        user = request.user
        return bool(user.has_perm("backfill.view_run") or user.has_perm(CONTROL_PERMISSION))

    @admin.display(description="heartbeat")
    def heartbeat(self, worker: Worker) -> str:
        age = (timezone.now() - worker.heartbeat_at).total_seconds()
        dead = "" if age <= control.lease() else " (presumed dead)"
        return status.ago(age) + dead


# The run page: its sections and fields, in order.
RUN_SECTIONS: tuple[tuple[str | None, tuple[str, ...]], ...] = (
    (
        None,
        (
            "name",
            "model_label",
            "strategy",
            "engine",
            "spec_json",
            "state",
            "request",
            "controls",
        ),
    ),
    (
        "Progress",
        (
            "progress_bar",
            "eta",
            "rate_chart",
            "waiting_now",
            "workers_now",
            "estimate",
            "scanned",
            "changed",
            "chunks",
            "rate",
            "batch_size",
            "parallel",
            "checkpoint",
        ),
    ),
    ("Times", ("created_at", "started_at", "heartbeat", "finished_at")),
    ("Outcome", ("last_error", "resume")),
)


@admin.register(Run)
class RunAdmin(RunAdminBase):
    list_display = [
        "name",
        "model_column",
        "state",
        "progress_bar",
        "scanned",
        "changed",
        "rate",
        "heartbeat",
        "engine",
        "hosts",
        "controls",
    ]
    list_filter = ["status", "strategy", "model_label"]
    search_fields = ["name", "model_label"]
    actions = ["pause_runs", "cancel_runs"]
    inlines = [WorkerInline]
    fieldsets = [(title, {"fields": fields}) for title, fields in RUN_SECTIONS]
    # Everything shown is read-only: the fieldsets' own fields, not a second copy of them.
    readonly_fields = [name for _, fields in RUN_SECTIONS for name in fields]

    # -- permissions: read-only for everyone, control for the permission's holders ---------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or self.has_control_permission(request)

    def has_control_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm(CONTROL_PERMISSION))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        return status.annotated(super().get_queryset(request))

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if self.has_control_permission(request):
            return fieldsets
        return [
            (title, {**options, "fields": [f for f in options["fields"] if f != "controls"]})
            for title, options in fieldsets
        ]

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = list(super().get_list_display(request))
        if not self.has_control_permission(request):
            shown.remove("controls")
        return shown

    # -- columns and fields ----------------------------------------------------------------

    def _status(self, run: Run) -> status.RunStatus:
        # One RunStatus per row and request: several columns read it.
        return _once(run, "_backfill_status", status.describe)

    @admin.display(description="status", ordering="status")
    def state(self, run: Run) -> str:
        shown = self._status(run).state
        if run.requested and run.status == Run.Status.RUNNING:
            # Asked but not yet acted on: the process finishes its chunk first.
            shown += f" ({run.requested} requested)"
        return shown

    @admin.display(description="model", ordering="model_label")
    def model_column(self, run: Run) -> str:
        return run.model_label

    @admin.display(description="requested")
    def request(self, run: Run) -> str:
        if not run.requested:
            return "-"
        return f"{run.requested} by {run.requested_by}" if run.requested_by else run.requested

    @admin.display(description="progress")
    def progress_bar(self, run: Run) -> SafeString:
        share = run.progress
        if share is None:
            return format_html('<span title="{}">?</span>', "no row estimate")
        return format_html(
            '<span style="white-space:nowrap"><progress value="{}" max="1000" '
            'style="width:5em">{}</progress> {}</span>',
            round(share * 1000),
            status.percent(share),
            status.percent(share),
        )

    @admin.display(description="rows scanned", ordering="rows_scanned")
    def scanned(self, run: Run) -> str:
        return f"{run.rows_scanned:,}"

    @admin.display(description="rows changed", ordering="rows_changed")
    def changed(self, run: Run) -> str:
        return f"{run.rows_changed:,}"

    @admin.display(description="estimated rows")
    def estimate(self, run: Run) -> str:
        return "unknown" if run.estimated_rows is None else f"~{run.estimated_rows:,}"

    @admin.display(description="rate")
    def rate(self, run: Run) -> str:
        return status.rate(run.rate)

    @admin.display(description="heartbeat", ordering="heartbeat_at")
    def heartbeat(self, run: Run) -> str:
        return status.ago(self._status(run).heartbeat_age)

    @admin.display(description="chunks")
    def chunks(self, run: Run) -> str:
        info = self._status(run)
        return f"{info.chunks_done:,} done, {info.chunks_pending:,} pending"

    @admin.display(description="checkpoint")
    def checkpoint(self, run: Run) -> str:
        info = self._status(run)
        if info.state == Run.Status.COMPLETED:
            return "done"
        return "start of the table" if info.checkpoint is None else info.checkpoint

    @admin.display(description="spec")
    def spec_json(self, run: Run) -> str:
        return json.dumps(run.spec, sort_keys=True)

    @admin.display(description="ETA")
    def eta(self, run: Run) -> str:
        pace = self._pace(run)
        if pace.eta_seconds is None or pace.recent_rate is None:
            return "-"
        return (
            f"{duration(pace.eta_seconds)} at {status.rate(pace.recent_rate)} "
            f"(the last {history.RECENT_CHUNKS} chunks' pace)"
        )

    @admin.display(description="rate over time")
    def rate_chart(self, run: Run) -> SafeString | str:
        return rate_chart(self._pace(run).samples)

    @admin.display(description="waiting")
    def waiting_now(self, run: Run) -> str:
        if run.status != Run.Status.RUNNING:
            return "-"
        wait = RunWait.objects.using(run._state.db).filter(name=run.name).first()
        if wait is None:
            return "-"
        return f"{wait.reason} (since {status.ago((timezone.now() - wait.since).total_seconds())})"

    @admin.display(description="workers")
    def workers_now(self, run: Run) -> str:
        live = self._status(run).live_workers
        if not live:
            return "none working"
        return f"{len(live)} working: " + ", ".join(f"{w.host} (pid {w.pid})" for w in live)

    # -- where a run is worked: its task engine and the hosts of its live workers ----------

    @admin.display(description="engine")
    def engine(self, run: Run) -> str:
        return self._status(run).engine

    @admin.display(description="hosts")
    def hosts(self, run: Run) -> str:
        return ", ".join(self._status(run).hosts) or "-"

    def _pace(self, run: Run) -> history.Pace:
        return _once(run, "_backfill_pace", history.pace)

    @admin.display(description="command to resume")
    def resume(self, run: Run) -> SafeString | str:
        command = self._status(run).resume_command
        if command is None:
            return "-"
        return format_html("<code>{}</code>", command)

    @admin.display(description="control")
    def controls(self, run: Run) -> SafeString | str:
        return control_buttons(run)

    # -- pause and cancel: two actions, two POST-only views ---------------------------------

    @admin.action(
        description="Pause selected runs (after their current chunk)", permissions=["control"]
    )
    def pause_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        done = control.pause(queryset, _username(request))
        self._report(request, "Pause", done, queryset.count())

    @admin.action(description="Cancel selected runs", permissions=["control"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        done = control.cancel(queryset, _username(request))
        self._report(request, "Cancel", done, queryset.count())

    def _report(self, request: HttpRequest, what: str, done: int, selected: int) -> None:
        if done:
            self.message_user(
                request,
                f"{what} requested for {done} run(s); a working process stops after its "
                "current chunk (exit 3).",
                messages.SUCCESS,
            )
        if selected > done:
            state = "running" if what == "Pause" else "unfinished"
            self.message_user(
                request,
                f"{selected - done} selected run(s) not {state} or already asked; left as is.",
                messages.WARNING,
            )

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<path:object_id>/pause/",
                self.admin_site.admin_view(self._control_view(control.pause, "Pause")),
                name="backfill_run_pause",
            ),
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self._control_view(control.cancel, "Cancel")),
                name="backfill_run_cancel",
            ),
        ]
        return own + super().get_urls()

    def _control_view(
        self, apply: Callable[[QuerySet[Run], str], int], what: str
    ) -> Callable[..., HttpResponse]:
        def view(request: HttpRequest, object_id: str) -> HttpResponse:
            if request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            if not self.has_control_permission(request):
                raise PermissionDenied
            run = get_object_or_404(self.get_queryset(request), pk=object_id)
            done = apply(Run.objects.using(run._state.db).filter(pk=run.pk), _username(request))
            self._report(request, what, done, 1)
            # Back to the page the button was on (the list keeps its filters), else the run.
            back = request.headers.get("referer", "")
            if not url_has_allowed_host_and_scheme(
                back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
            ):
                back = reverse("admin:backfill_run_change", args=[run.pk])
            return HttpResponseRedirect(back)

        return view


def _once(run: Run, key: str, read: Callable[[Run, str], T]) -> T:
    """``read(run, its database)``, kept on the run for the rest of the request."""
    cached: T | None = getattr(run, key, None)
    if cached is None:
        cached = read(run, run._state.db or "default")
        setattr(run, key, cached)
    return cached


def duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"3 h 20 min"``, ``"2 d 4 h"``."""
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


CHART_WIDTH, CHART_HEIGHT = 360, 60


def rate_chart(samples: Sequence[history.Sample]) -> SafeString | str:
    """Rows per second over time as an inline SVG: no script, no library."""
    if len(samples) < 2:
        return "not enough chunks yet"
    top = max(sample.rate for sample in samples) or 1.0
    step = CHART_WIDTH / (len(samples) - 1)
    line = " ".join(
        f"{i * step:.1f},{CHART_HEIGHT - sample.rate / top * (CHART_HEIGHT - 2):.1f}"
        for i, sample in enumerate(samples)
    )
    area = f"0,{CHART_HEIGHT} {line} {CHART_WIDTH},{CHART_HEIGHT}"
    start = timezone.localtime(samples[0].at).strftime("%H:%M:%S")
    end = timezone.localtime(samples[-1].at).strftime("%H:%M:%S")
    peak = status.rate(top)
    return format_html(
        '<svg class="backfill-rate-chart" role="img" width="{}" height="{}" viewBox="0 -14 {} {}" '
        'xmlns="http://www.w3.org/2000/svg" style="font:10px sans-serif;overflow:visible">'
        "<title>Rows per second from {} to {}, peak {}</title>"
        '<polygon points="{}" fill="#79aec8" fill-opacity="0.35"/>'
        '<polyline points="{}" fill="none" stroke="#417690" stroke-width="1.5"/>'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#999"/>'
        '<text x="0" y="-4" fill="#666">{}</text>'
        '<text x="0" y="{}" fill="#666">{}</text>'
        '<text x="{}" y="{}" fill="#666" text-anchor="end">{}</text>'
        "</svg>",
        CHART_WIDTH,
        CHART_HEIGHT + 28,
        CHART_WIDTH,
        CHART_HEIGHT + 28,
        start,
        end,
        peak,
        area,
        line,
        CHART_HEIGHT,
        CHART_WIDTH,
        CHART_HEIGHT,
        f"peak {peak}",
        CHART_HEIGHT + 12,
        start,
        CHART_WIDTH,
        CHART_HEIGHT + 12,
        end,
    )
