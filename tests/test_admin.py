"""The runs in the Django admin: who sees what, pause and cancel, and a real run paused there."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from backfill.models import Chunk, Run, Worker
from tests.conftest import RunManage, SpawnManage
from tests.run_support import wait_for
from tests.testapp.models import Counter

CHANGELIST = "/admin/backfill/run/"


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def controller() -> Client:
    return client_for(staff("ops", "view_run", "control_run"))


@pytest.fixture
def viewer() -> Client:
    return client_for(staff("watcher", "view_run"))


def make_run(name: str, status: str = Run.Status.RUNNING, *, live: bool = True, **kw: Any) -> Run:
    run = Run.objects.create(
        name=name,
        strategy="update",
        model_label="blog.BlogPost",
        spec={"set": {"author": "anon"}},
        status=status,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        **kw,
    )
    if status == Run.Status.RUNNING:
        beat = timezone.now() - timedelta(seconds=1 if live else 3600)
        Worker.objects.create(run=run, host="app-1", pid=100 + run.pk, heartbeat_at=beat)
    return run


def pause_url(run: Run) -> str:
    return reverse("admin:backfill_run_pause", args=[run.pk])


def cancel_url(run: Run) -> str:
    return reverse("admin:backfill_run_cancel", args=[run.pk])


def fresh(run: Run) -> Run:
    return Run.objects.get(pk=run.pk)


# -- seeing runs ------------------------------------------------------------------------------


def test_the_example_sites_admin_serves_the_runs() -> None:
    assert reverse("admin:backfill_run_changelist") == CHANGELIST
    assert reverse("admin:backfill_run_pause", args=[7]) == "/admin/backfill/run/7/pause/"


@pytest.mark.django_db
def test_the_list_shows_status_progress_rows_rate_and_heartbeat(controller: Client) -> None:
    make_run("half way", estimated_rows=4000, rows_scanned=2000, rows_changed=1500, work_seconds=4)
    make_run("nobody home", live=False)

    page = controller.get(CHANGELIST).content.decode()

    assert '<td class="field-model_column">blog.BlogPost</td>' in page
    assert '<progress value="500" max="1000"' in page
    assert "50.0%" in page
    assert "2,000" in page and "1,500" in page
    assert "500 rows/s" in page
    assert "0 s ago" in page or "1 s ago" in page
    assert ">abandoned<" in page
    assert "Pause selected runs" in page and "Cancel selected runs" in page
    assert f'formaction="{pause_url(Run.objects.get(name="half way"))}"' in page


@pytest.mark.django_db
def test_without_the_permission_there_are_no_buttons_and_no_actions(viewer: Client) -> None:
    run = make_run("half way")

    response = viewer.get(CHANGELIST)
    page = response.content.decode()

    assert response.status_code == 200
    assert "half way" in page
    assert "formaction" not in page
    assert "Pause selected runs" not in page
    assert 'name="action"' not in page
    detail = viewer.get(reverse("admin:backfill_run_change", args=[run.pk])).content.decode()
    assert "formaction" not in detail
    assert "python manage.py backfill_update blog.BlogPost --set author=anon" in detail


@pytest.mark.django_db
def test_control_alone_is_enough_to_see_the_runs() -> None:
    make_run("half way")
    client = client_for(staff("oncall", "control_run"))

    page = client.get(CHANGELIST).content.decode()

    assert "half way" in page and "formaction" in page


@pytest.mark.django_db
def test_staff_without_backfill_permissions_cannot_see_runs() -> None:
    make_run("half way")
    client = client_for(staff("intern"))

    assert client.get(CHANGELIST).status_code == 403


@pytest.mark.django_db
def test_the_list_costs_the_same_queries_for_3_or_12_runs(controller: Client) -> None:
    for i in range(3):
        make_run(f"run {i}")
    with CaptureQueriesContext(connection) as few:
        assert controller.get(CHANGELIST).status_code == 200
    for i in range(3, 12):
        make_run(f"run {i}", live=i % 2 == 0)
    with CaptureQueriesContext(connection) as many:
        assert controller.get(CHANGELIST).status_code == 200
    assert len(few) == len(many)


@pytest.mark.django_db
def test_a_runs_page_is_read_only_with_workers_chunks_and_resume(controller: Client) -> None:
    run = make_run("parallel one", parallel=True, frontier="600", chunks_done=1)
    Chunk.objects.create(run=run, lo="200", hi="400")
    Chunk.objects.create(run=run, lo="400", hi="600")
    url = reverse("admin:backfill_run_change", args=[run.pk])

    page = controller.get(url).content.decode()

    assert "1 done, 2 pending" in page
    assert "app-1" in page  # the worker inline
    assert '<div class="readonly">200</div>' in page  # checkpoint: the lowest pending chunk
    assert "--workers &lt;N&gt;" in page
    assert 'name="_save"' not in page
    assert controller.post(url, {"name": "renamed"}).status_code == 403
    assert fresh(run).name == "parallel one"


@pytest.mark.django_db
def test_runs_cannot_be_added_or_deleted_by_hand() -> None:
    run = make_run("half way")
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", password="pw"))

    assert admin.get(reverse("admin:backfill_run_add")).status_code == 403
    assert admin.post(reverse("admin:backfill_run_delete", args=[run.pk])).status_code == 403
    assert Run.objects.filter(pk=run.pk).exists()


# -- pause and cancel ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_pause_asks_the_running_process_and_names_who_asked(controller: Client) -> None:
    run = make_run("half way")

    response = controller.post(pause_url(run), HTTP_REFERER="http://testserver" + CHANGELIST)

    assert response.status_code == 302
    assert response["Location"] == "http://testserver" + CHANGELIST
    run = fresh(run)
    assert (run.requested, run.requested_by, run.status) == ("pause", "ops", "running")
    page = controller.get(CHANGELIST).content.decode()
    assert "Pause requested for 1 run(s)" in page
    assert ">running (pause requested)<" in page
    assert f'formaction="{pause_url(run)}"' not in page
    assert f'formaction="{cancel_url(run)}"' in page


@pytest.mark.django_db
def test_without_the_permission_pause_and_cancel_are_refused_with_403(viewer: Client) -> None:
    run = make_run("half way")

    assert viewer.post(pause_url(run)).status_code == 403
    assert viewer.post(cancel_url(run)).status_code == 403
    assert fresh(run).requested == ""


@pytest.mark.django_db
def test_pause_and_cancel_only_take_post(controller: Client) -> None:
    run = make_run("half way")

    assert controller.get(pause_url(run)).status_code == 405
    assert controller.get(cancel_url(run)).status_code == 405
    assert fresh(run).requested == ""


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_log_in() -> None:
    run = make_run("half way")

    response = Client().post(pause_url(run))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert fresh(run).requested == ""


@pytest.mark.django_db
def test_pausing_a_run_that_is_not_running_changes_nothing(controller: Client) -> None:
    run = make_run("done", Run.Status.COMPLETED)

    response = controller.post(pause_url(run), follow=True)

    assert fresh(run).requested == ""
    assert "1 selected run(s) not running or already asked; left as is." in (
        response.content.decode()
    )


@pytest.mark.django_db
def test_cancel_asks_a_working_process_and_cancels_idle_runs_at_once(controller: Client) -> None:
    working = make_run("working")
    paused = make_run("paused", Run.Status.PAUSED)
    abandoned = make_run("abandoned", live=False)
    completed = make_run("completed", Run.Status.COMPLETED)

    for run in (working, paused, abandoned, completed):
        controller.post(cancel_url(run))

    assert (fresh(working).status, fresh(working).requested) == ("running", "cancel")
    assert (fresh(paused).status, fresh(paused).requested_by) == ("cancelled", "ops")
    assert fresh(abandoned).status == "cancelled"
    assert (fresh(completed).status, fresh(completed).requested) == ("completed", "")


@pytest.mark.django_db
def test_the_admin_actions_pause_and_cancel_the_selected_runs(controller: Client) -> None:
    one, two = make_run("one"), make_run("two")
    paused = make_run("paused", Run.Status.PAUSED)

    response = controller.post(
        CHANGELIST,
        {"action": "pause_runs", "_selected_action": [one.pk, two.pk, paused.pk]},
        follow=True,
    )

    assert [fresh(r).requested for r in (one, two, paused)] == ["pause", "pause", ""]
    page = response.content.decode()
    assert "Pause requested for 2 run(s)" in page
    assert "1 selected run(s) not running or already asked" in page
    controller.post(CHANGELIST, {"action": "cancel_runs", "_selected_action": [paused.pk]})
    assert fresh(paused).status == "cancelled"


@pytest.mark.django_db
def test_without_the_permission_the_actions_do_nothing(viewer: Client) -> None:
    run = make_run("one")

    viewer.post(CHANGELIST, {"action": "pause_runs", "_selected_action": [run.pk]})

    assert fresh(run).requested == ""


# -- a real run, paused from the admin ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_run_paused_in_the_admin_exits_3_and_resumes_to_completion(
    spawn_manage: SpawnManage, run_manage: RunManage
) -> None:
    Counter.objects.bulk_create(Counter(name=f"c{i}") for i in range(100))
    command = [
        "backfill_update",
        "testapp.Counter",
        "--set=name=done",
        "--batch-size=2",
        "--name=slow counters",
        "--progress=none",
    ]
    # Logged in before the run starts: on SQLite a write racing the run's chunk can meet
    # "database is locked" (a read transaction cannot take the write lock another holds).
    controller = client_for(staff("ops", "view_run", "control_run"))
    process = spawn_manage(*command, "--sleep=0.2")
    wait_for(
        lambda: Run.objects.filter(name="slow counters", chunks_done__gte=2).exists(),
        "the run's second chunk",
        timeout=60.0,
    )

    response = controller.post(pause_url(Run.objects.get(name="slow counters")))

    assert response.status_code == 302
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, (stdout, stderr)
    assert "Paused by ops. Re-run the same command to resume run 'slow counters'." in stderr
    run = Run.objects.get(name="slow counters")
    assert (run.status, run.requested, run.requested_by) == ("paused", "pause", "ops")
    assert 4 <= run.rows_scanned < 100
    paused_chunks = run.chunks_done
    assert Counter.objects.filter(name="done").count() == run.rows_scanned
    assert not Worker.objects.filter(run=run).exists()

    resumed = run_manage(*command)

    assert resumed.returncode == 0, resumed.stderr
    run = Run.objects.get(name="slow counters")
    assert (run.status, run.requested, run.rows_scanned) == ("completed", "", 100)
    assert run.chunks_done > paused_chunks
    assert Counter.objects.filter(name="done").count() == 100
