"""Pacing: fixed sleep, the rows/second cap and chunk size adapting to a target chunk time.

Time is injected everywhere: a FakeClock stands in for both the clock and sleep, and a
transform advances it per row to give the work a known, fixed cost. Nothing here sleeps.
"""

from __future__ import annotations

import itertools
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F

import backfill
from backfill import events
from backfill.conf import Options
from backfill.pacing import Pacer
from backfill.runner import Runner
from backfill.strategies import UpdateStrategy
from tests.run_support import FakeClock, Recorder, make_counters
from tests.testapp.models import Counter

# -- the Pacer alone ------------------------------------------------------------------------------


def test_fixed_size_stays_fixed_without_a_target() -> None:
    pacer = Pacer(batch_size=500, clock=FakeClock())
    for seconds in (0.01, 5.0, 0.2):
        pacer.record(500, seconds)
        assert pacer.size == 500
    assert pacer.delay() == 0.0


def test_target_chunk_time_converges_on_rate_times_target() -> None:
    pacer = Pacer(batch_size=100, target_chunk_time=0.1, min_size=10, max_size=100_000)
    sizes = []
    for _ in range(7):
        rows = pacer.size
        pacer.record(rows, rows / 10_000)  # a steady 10,000 rows/s
        sizes.append(pacer.size)
    # Growth is capped at 2x per chunk, then the size holds at 10,000 rows/s * 0.1 s.
    assert sizes == [200, 400, 800, 1000, 1000, 1000, 1000]


def test_target_chunk_time_follows_a_slowdown_through_the_weighted_average() -> None:
    pacer = Pacer(batch_size=1000, target_chunk_time=0.1, min_size=10)
    pacer.record(1000, 0.1)  # 10,000 rows/s: 1000 is right
    assert pacer.size == 1000
    sizes = []
    for _ in range(12):
        rows = pacer.size
        pacer.record(rows, rows / 2_000)  # the table got five times slower
        sizes.append(pacer.size)
    # One slow chunk does not collapse the size; the average follows, and settles at 200.
    assert sizes[0] == 760  # 0.3 * 2,000 + 0.7 * 10,000 rows/s, times 0.1 s
    assert all(a > b for a, b in itertools.pairwise(sizes[:8]))
    assert 200 <= sizes[-1] <= 220


def test_target_chunk_time_respects_min_and_max() -> None:
    fast = Pacer(batch_size=1000, target_chunk_time=1.0, min_size=100, max_size=1500)
    fast.record(1000, 0.001)  # 1,000,000 rows/s wants 1,000,000 rows, capped twice
    assert fast.size == 1500
    slow = Pacer(batch_size=1000, target_chunk_time=0.1, min_size=100, max_size=1500)
    slow.record(1000, 100.0)  # 10 rows/s wants 1 row
    assert slow.size == 100
    assert Pacer(batch_size=50, target_chunk_time=1.0, min_size=100).size == 100


def test_shrink_halves_and_a_fixed_size_grows_back_to_the_batch_size() -> None:
    pacer = Pacer(batch_size=2000)
    assert pacer.shrink() == 1000
    assert pacer.shrink() == 500
    sizes = []
    for _ in range(3):
        pacer.record(pacer.size, 0.1)
        sizes.append(pacer.size)
    assert sizes == [1000, 2000, 2000]
    tiny = Pacer(batch_size=1)
    assert tiny.shrink() == 1


def test_sleep_is_the_delay_between_chunks() -> None:
    pacer = Pacer(batch_size=100, sleep=0.25, clock=FakeClock())
    pacer.start()
    pacer.record(100, 0.01)
    assert pacer.delay() == 0.25


def test_max_rate_spaces_chunks_and_caps_their_size() -> None:
    clock = FakeClock()
    pacer = Pacer(batch_size=5000, max_rate=1000, clock=clock)
    assert pacer.size == 1000  # never more than one second's budget in one chunk
    pacer.start()
    clock.advance(0.2)
    pacer.record(1000, 0.2)
    assert pacer.delay() == pytest.approx(0.8)
    clock.sleep(pacer.delay())
    clock.advance(0.3)
    pacer.record(1000, 0.3)
    assert pacer.delay() == pytest.approx(0.7)


def test_max_rate_saves_no_credit_while_the_run_waits() -> None:
    clock = FakeClock()
    pacer = Pacer(batch_size=100, max_rate=100, clock=clock)
    pacer.start()
    clock.advance(0.1)
    pacer.record(100, 0.1)
    clock.sleep(pacer.delay())
    clock.advance(60)  # paused for a lagging replica
    clock.advance(0.1)
    pacer.record(100, 0.1)
    # Averaged since the start the run would be far under the cap and could burst; it must
    # still wait a whole second's budget after this chunk.
    assert pacer.delay() == pytest.approx(0.9)


def test_max_rate_and_sleep_take_the_longer_wait() -> None:
    clock = FakeClock()
    pacer = Pacer(batch_size=100, max_rate=1000, sleep=0.5, clock=clock)
    pacer.start()
    clock.advance(0.01)
    pacer.record(100, 0.01)
    assert pacer.delay() == 0.5  # the cap alone would wait 0.09 s


# -- pacing a real run ----------------------------------------------------------------------------


def per_row_cost(clock: FakeClock, seconds: float) -> Any:
    """An iterate transform whose work costs ``seconds`` of the fake clock per row."""

    def transform(obj: Counter) -> None:
        clock.advance(seconds)
        obj.hits += 1

    return transform


@pytest.mark.django_db(transaction=True)
def test_chunk_size_converges_toward_rate_times_target_on_a_real_run() -> None:
    make_counters(5000)
    clock = FakeClock()
    recorder = Recorder()

    result = backfill.iterate(
        Counter.objects.all(),
        transform=per_row_cost(clock, 2**-13),  # 8,192 rows/s, exact in binary
        batch_size=128,
        target_chunk_time=0.125,  # so the right size is 1,024 rows
        reporter=recorder,
        clock=clock,
    )

    done = recorder.of(events.ChunkDone)
    assert [e.rows_scanned for e in done] == [128, 256, 512, 1024, 1024, 1024, 1024, 8]
    assert [e.batch_size for e in done][:4] == [256, 512, 1024, 1024]
    assert result.rows_changed == 5000
    assert set(Counter.objects.values_list("hits", flat=True)) == {1}
    assert clock.slept == []


@pytest.mark.django_db(transaction=True)
def test_max_rate_holds_rows_per_second_within_ten_percent_of_the_cap() -> None:
    make_counters(2000)
    clock = FakeClock()
    recorder = Recorder()

    result = backfill.iterate(
        Counter.objects.all(),
        transform=per_row_cost(clock, 0.0001),  # unthrottled this would run 10,000 rows/s
        batch_size=2000,
        max_rate=100,
        reporter=recorder,
        clock=clock,
    )

    assert result.rows_scanned == 2000
    rate = result.rows_scanned / result.elapsed
    # 20 chunks of one second's budget; no pointless wait after the last one.
    assert abs(rate - 100) / 100 <= 0.10, rate
    assert {e.rows_scanned for e in recorder.of(events.ChunkDone)} == {100}
    # Each chunk's 0.01 s of work is followed by the rest of its second.
    assert clock.slept == pytest.approx([0.99] * 19)


@pytest.mark.django_db(transaction=True)
def test_sleep_pauses_between_chunks_but_not_after_the_last() -> None:
    make_counters(40)
    clock = FakeClock()
    strategy = UpdateStrategy(Counter.objects.all(), {"hits": F("hits") + 1})

    result = Runner(
        strategy, Options(batch_size=10, sleep=0.25), clock=clock, sleep=clock.sleep
    ).run()

    assert result.chunks == 4
    assert clock.slept == [0.25, 0.25, 0.25]
    assert set(Counter.objects.values_list("hits", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_the_sleep_setting_is_the_default_pause(settings: Any) -> None:
    settings.BACKFILL = {"SLEEP": 0.5}
    make_counters(30)
    clock = FakeClock()

    backfill.update(Counter.objects.all(), set={"hits": 2}, batch_size=10, clock=clock)

    assert clock.slept == [0.5, 0.5]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-rate", "0", "--max-rate must be positive, got 0.0."),
        ("--target-chunk-time", "-1", "--target-chunk-time must be positive, got -1.0."),
        ("--sleep", "-0.5", "--sleep must be 0 or more, got -0.5."),
        ("--lock-timeout", "0", "--lock-timeout must be positive, got 0.0."),
        ("--statement-timeout", "-2", "--statement-timeout must be positive, got -2.0."),
        ("--max-replica-lag", "0", "--max-replica-lag must be positive, got 0.0."),
    ],
)
def test_pacing_and_safety_options_reject_bad_values(option: str, value: str, message: str) -> None:
    make_counters(3)
    with pytest.raises(CommandError) as excinfo:
        call_command(
            "backfill_update",
            "testapp.Counter",
            "--set",
            "hits=1",
            option,
            value,
            stdout=StringIO(),
            stderr=StringIO(),
        )
    assert excinfo.value.returncode == 2
    assert str(excinfo.value).startswith(message)
    assert set(Counter.objects.values_list("hits", flat=True)) == {0}
