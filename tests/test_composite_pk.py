"""Models with a ``CompositePrimaryKey``: chunks, checkpoints and writes on the key tuple.

TenantItem's key is (tenant_id, id). Its ids repeat across tenants and tenant 1 holds larger
ids than tenant 2, so key order is not id order: (1, 24) comes before (2, 1). Every transform
adds 1 to ``hits``, so a row skipped or written twice shows in the data. With 7 keys per
chunk the first chunk ends inside tenant 1, at (1, 11), and the third spans tenants 1 and 2.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

import backfill
from backfill import events
from backfill.chunks import KeyPlanner, PlannedChunk
from backfill.exceptions import Interrupted
from backfill.models import Chunk, Run
from backfill.stopping import StopFlag
from tests.run_support import call
from tests.support import postgres_only
from tests.testapp.models import TenantItem

pytestmark = pytest.mark.django_db(transaction=True)

KEYS = [(1, i) for i in range(5, 25)] + [(2, i) for i in range(1, 21)] + [(3, 2), (3, 3), (3, 1000)]
ROW_TRANSFORM = "tests.transforms.count_row_hit_slowly"
INSTANCE_TRANSFORM = "tests.transforms.count_hit"

COMMANDS = {
    "update": ("backfill_update", "testapp.TenantItem", "--set-expr", 'hits=F("hits") + 1'),
    "iterate": ("backfill_iterate", "testapp.TenantItem", "--transform", INSTANCE_TRANSFORM),
    "cursor": (
        "backfill_cursor", "testapp.TenantItem", "--only", "hits", "--transform", ROW_TRANSFORM,
    ),
}  # fmt: skip


def add_hit(item: TenantItem) -> None:
    item.hits += 1


def add_row_hit(row: dict[str, Any]) -> dict[str, Any]:
    return {"hits": row["hits"] + 1}


API: dict[str, Callable[..., backfill.Result]] = {
    "update": lambda qs, **kw: backfill.update(qs, set={"hits": F("hits") + 1}, **kw),
    "iterate": lambda qs, **kw: backfill.iterate(qs, transform=add_hit, **kw),
    "cursor": lambda qs, **kw: backfill.cursor(qs, fields=["hits"], transform=add_row_hit, **kw),
}


def make_items(keys: list[tuple[int, int]] = KEYS) -> None:
    TenantItem.objects.bulk_create(TenantItem(tenant_id=t, id=i, name=f"n{t}-{i}") for t, i in keys)


def hits() -> dict[tuple[int, int], int]:
    return {(t, i): n for t, i, n in TenantItem.objects.values_list("tenant_id", "id", "hits")}


def assert_every_row_once() -> None:
    wrong = {key: n for key, n in hits().items() if n != 1}
    assert not wrong, f"rows not hit exactly once: {wrong}"


def chunk_bounds() -> list[tuple[str | None, str]]:
    return list(Chunk.objects.order_by("id").values_list("lo", "hi"))


def assert_chunks_tile(run: Run, end: tuple[int, int] = (3, 1000)) -> None:
    """The chunks cover (start, end] edge to edge, in key-tuple order."""
    bounds = sorted(
        (tuple(json.loads(hi)), None if lo is None else tuple(json.loads(lo)))
        for lo, hi in Chunk.objects.filter(run=run).values_list("lo", "hi")
    )
    previous = None
    for hi, lo in bounds:
        assert lo == previous, f"chunk ({lo}, {hi}] does not start at {previous}"
        previous = hi
    assert previous == end
    assert run.pk_end == json.dumps(list(end))


def stop_after(chunks: int, flag: StopFlag) -> events.Reporter:
    def report(event: events.Event) -> None:
        if isinstance(event, events.ChunkDone) and event.chunks >= chunks:
            flag.set("test")

    return report


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_each_command_chunks_on_the_key_tuple(command: tuple[str, ...]) -> None:
    make_items()

    code, out, err = call(*command, "--batch-size", "7", "--json")

    assert code == 0, (out, err)
    assert json.loads(out)["rows_changed"] == len(KEYS)
    assert_every_row_once()
    # Tuple order, a boundary inside tenant 1, a chunk spanning tenants 1 and 2.
    assert chunk_bounds()[:4] == [
        (None, "[1, 11]"),
        ("[1, 11]", "[1, 18]"),
        ("[1, 18]", "[2, 1]"),
        ("[2, 1]", "[2, 8]"),
    ]
    assert_chunks_tile(Run.objects.get())


@pytest.mark.parametrize("strategy", API.keys())
def test_api_runs_a_filtered_queryset(strategy: str) -> None:
    make_items()

    result = API[strategy](TenantItem.objects.exclude(tenant_id=2), batch_size=5)

    assert result.status == "completed"
    assert result.rows_changed == 23
    assert {key for key, n in hits().items() if n == 1} == {k for k in KEYS if k[0] != 2}
    assert {n for key, n in hits().items() if key[0] == 2} == {0}


@pytest.mark.parametrize("strategy", API.keys())
def test_a_stopped_run_resumes_after_its_tuple_checkpoint(strategy: str) -> None:
    make_items()
    flag = StopFlag()

    with pytest.raises(Interrupted) as stopped:
        API[strategy](
            TenantItem.objects.all(), batch_size=7, stop=flag, reporter=stop_after(2, flag)
        )

    assert stopped.value.result.checkpoint == (1, 18)
    run = Run.objects.get()
    assert (run.status, run.frontier) == (Run.Status.STOPPED, "[1, 18]")
    assert {key for key, n in hits().items() if n} == {k for k in KEYS if k <= (1, 18)}
    code, out, _ = call("backfill_runs", "--json")
    assert code == 0
    assert json.loads(out)[0]["checkpoint"] == "[1, 18]"
    assert "[1, 18]" in call("backfill_runs")[1]

    seen: list[events.Event] = []
    result = API[strategy](TenantItem.objects.all(), batch_size=7, reporter=seen.append)

    assert result.status == "completed"
    assert (result.rows_scanned, result.total_rows_scanned) == (len(KEYS) - 14, len(KEYS))
    started = next(e for e in seen if isinstance(e, events.Started))
    assert (started.resumed, started.checkpoint) == (True, (1, 18))
    assert_every_row_once()
    assert_chunks_tile(Run.objects.get())


def test_command_resumes_after_max_runtime() -> None:
    make_items()
    command = (*COMMANDS["cursor"], "--batch-size", "7")

    # 0.8 s after each chunk: --max-runtime 1 stops after the second (the first on a slow day).
    code, out, message = call(*command, "--sleep", "0.8", "--max-runtime", "1", "--json")

    assert code == 3, (out, message)
    run = Run.objects.get()
    assert run.frontier is not None
    checkpoint = tuple(json.loads(run.frontier))
    assert checkpoint in [(1, 11), (1, 18), (2, 1)]
    assert json.loads(out)["checkpoint"] == list(checkpoint)
    assert {key for key, n in hits().items() if n} == {k for k in KEYS if k <= checkpoint}

    code, out, message = call(*command)

    assert code == 0, (out, message)
    assert_every_row_once()
    assert_chunks_tile(Run.objects.get())


@postgres_only
@pytest.mark.parametrize("command", ["iterate", "cursor"])
def test_workers_share_a_run_on_the_key_tuple(command: str) -> None:
    keys = [(t, i) for t in range(1, 5) for i in range(300, 0, -2)]  # 600 keys
    make_items(keys)

    code, out, message = call(
        *COMMANDS[command], "--batch-size", "40", "--workers", "2", "--sleep", "0.01"
    )

    assert code == 0, (out, message)
    assert_every_row_once()
    run = Run.objects.get()
    assert run.parallel
    assert run.rows_changed == 600
    assert_chunks_tile(run, end=(4, 300))
    assert not Chunk.objects.filter(status=Chunk.Status.PENDING).exists()


def test_workers_on_sqlite_are_refused_for_composite_keys_too() -> None:
    if connection.vendor == "postgresql":
        pytest.skip("SQLite only: --workers needs PostgreSQL (SKIP LOCKED)")
    make_items()

    code, _out, message = call(*COMMANDS["iterate"], "--workers", "2")

    assert code == 2
    assert "needs PostgreSQL" in message
    assert set(hits().values()) == {0}


def test_dry_run_shows_tuple_keys_and_writes_nothing() -> None:
    make_items()

    code, out, _ = call(*COMMANDS["iterate"], "--batch-size", "7", "--dry-run")

    assert code == 0
    assert "primary keys     (1, 5) .. (3, 1000)" in out
    assert "pk=(1, 5)  hits: 0 -> 1" in out
    assert "pk=(1, 9)  hits: 0 -> 1" in out
    assert set(hits().values()) == {0}
    assert not Run.objects.exists()


def test_bulk_write_joins_on_every_key_column() -> None:
    make_items()

    with CaptureQueriesContext(connection) as queries:
        result = API["cursor"](TenantItem.objects.all(), batch_size=50)

    assert result.rows_changed == len(KEYS)
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(("UPDATE", "WITH"))]
    writes = [w for w in writes if "testapp_tenantitem" in w]
    assert len(writes) == 1
    table = '"testapp_tenantitem"'
    assert f'{table}."tenant_id" = v."_k0" AND {table}."id" = v."_k1"' in writes[0]
    assert f'AND ({table}."tenant_id", {table}."id") <= (' in writes[0]
    if connection.vendor == "postgresql":
        assert "unnest(" in writes[0]
    assert_every_row_once()


def test_planner_walks_keys_as_row_values() -> None:
    make_items()
    planner = KeyPlanner(TenantItem, connection)

    with CaptureQueriesContext(connection) as queries:
        chunk = planner.next_chunk((1, 18), (3, 1000), 10)

    assert chunk == PlannedChunk((1, 18), (2, 4), keys=10)
    assert '("tenant_id", "id") > (' in queries.captured_queries[0]["sql"]
    bounds = planner.key_range()
    assert bounds is not None
    assert (bounds.first, bounds.last) == ((1, 5), (3, 1000))
    assert planner.midpoint(chunk) == (1, 23)
    assert planner.to_text((2, 4)) == "[2, 4]"
    assert planner.from_text("[2, 4]") == (2, 4)


def test_key_columns_cannot_be_set() -> None:
    make_items()

    code, _out, message = call("backfill_update", "testapp.TenantItem", "--set", "tenant_id=9")

    assert code == 2
    assert message == (
        "--set 'tenant_id' is part of the composite primary key of testapp.TenantItem; chunks "
        "are keyed on it, so it cannot be changed by a backfill. Set another field."
    )
    assert not Run.objects.exists()
    assert set(TenantItem.objects.values_list("tenant_id", flat=True)) == {1, 2, 3}
