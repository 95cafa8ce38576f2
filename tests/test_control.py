"""Run control (``backfill.control``): pause, cancel, resume and liveness, the one API behind
the admin's buttons, ``backfill_runs --pause/--cancel`` and these tests."""

from __future__ import annotations

import pytest

from backfill import control
from backfill.exceptions import BadInput
from backfill.models import Run
from tests.conftest import SpawnManage
from tests.run_support import (
    SLOW_RUN,
    SLOWLY,
    assert_ledger_matches_data,
    call,
    chunks_done_at_least,
    finish,
    hits,
    make_counters,
    the_run,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)

COMMAND = SLOW_RUN


def test_backfill_runs_pauses_a_working_process_then_cancels_the_idle_run(
    spawn_manage: SpawnManage,
) -> None:
    make_counters(600)
    process = spawn_manage(*COMMAND, env=SLOWLY)
    wait_for(chunks_done_at_least(1), "a chunk done")
    name = the_run().name
    assert control.is_worked(name)

    code, out, _ = call("backfill_runs", name, "--pause", "--by", "ops")
    assert (code, out.strip()) == (
        0,
        f"Pause requested for run {name!r}: its processes stop after their current chunk.",
    )
    code, _, err = finish(process)

    assert code == 3, err
    run = the_run()
    assert run.status == Run.Status.PAUSED
    assert f"CommandError: Paused by ops. Re-run the same command to resume run {name!r}." in (
        err.splitlines()
    )
    assert not control.is_worked(name)
    assert_ledger_matches_data(run)
    done = sum(hits().values())
    assert 0 < done < 600

    # Nobody works it now: a cancel takes effect at once, and it then will not resume.
    code, out, _ = call("backfill_runs", name, "--cancel", "--by", "ops")
    assert (code, out.strip()) == (0, f"Run {name!r} cancelled.")
    assert the_run().status == Run.Status.CANCELLED
    code, out, _ = call("backfill_runs", name, "--cancel")
    assert (code, out.strip()) == (0, f"Run {name!r} is cancelled: nothing to cancel.")
    with pytest.raises(BadInput, match="is cancelled: there is nothing to resume"):
        control.resume(name)
    assert sum(hits().values()) == done


def test_a_run_started_by_a_command_is_resumed_by_that_command() -> None:
    make_counters(10)
    Run.objects.create(name="by hand", strategy="iterate", model_label="testapp.Counter")
    control.pause("by hand")  # a run nobody works: nothing asked of it
    assert Run.objects.get(name="by hand").requested == Run.Request.PAUSE

    with pytest.raises(BadInput, match="resume it with the command that started it"):
        control.resume("by hand")


def test_control_needs_a_run_name_that_exists() -> None:
    Run.objects.create(name="nightly author fix", strategy="update", model_label="testapp.Counter")

    with pytest.raises(BadInput, match="nightly author fix"):
        control.pause("nightly author fx")
    code, out, message = call("backfill_runs", "--pause")
    assert (code, out) == (2, "")
    assert message == "--pause needs the NAME of a run: backfill_runs NAME --pause."
