"""How ``--workers N`` works one run with N processes.

The parent process starts (or resumes) the run, then forks N workers. Each worker is an
ordinary ``Runner`` in parallel mode with its own database connection: it claims pending
chunks with ``SELECT … FOR UPDATE SKIP LOCKED`` and plans new ones in short transactions, so
workers never share a chunk, and the same command started on another host joins the run the
same way. The parent forwards SIGINT/SIGTERM to the workers, reports progress from the run row
about once a second, and turns the workers' exit codes into one outcome.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from django.db import DatabaseError, connections

from backfill import events
from backfill.conf import Options
from backfill.exceptions import BackfillError, ChunkFailed, RunBusy
from backfill.ledger import Ledger
from backfill.models import Run, Worker
from backfill.result import Result
from backfill.runner import HEARTBEAT_EVERY, Runner
from backfill.signals import StopFlag
from backfill.strategies import Strategy

logger = logging.getLogger("backfill")

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
POLL_EVERY = 1.0
# Events a worker passes up to the parent's reporter; the others the parent reports itself.
FORWARDED_EVENTS = (events.Retrying, events.Waiting)


def run_parallel(
    strategy: Strategy,
    options: Options,
    reporter: events.Reporter = events.ignore,
    *,
    stop: StopFlag | None = None,
) -> Result:
    """Work one run with ``options.workers`` processes (PostgreSQL).

    Returns the Result when the run completed (or another host's workers are finishing it).
    Raises BadInput before anything is written, Interrupted when stopped early (signal,
    --max-runtime, pause, cancel), ChunkFailed when a chunk kept failing or a worker died,
    RunBusy when a single-process run holds it.
    """
    return ParallelRunner(strategy, options, reporter=reporter, stop=stop, parallel=True).run()


class ParentWatch(StopFlag):
    """A worker's stop flag that also trips when its parent is gone (killed with -9)."""

    def __init__(self, parent_pid: int) -> None:
        super().__init__()
        self.parent_pid = parent_pid

    def __bool__(self) -> bool:
        if self.reason is None and os.getppid() != self.parent_pid:
            self.set(f"the exit of parent process {self.parent_pid}")
        return self.reason is not None


@dataclass(frozen=True)
class Outcome:
    """What a worker process sent back before exiting."""

    code: int
    message: str
    stop_reason: str | None = None
    result: Result | None = None


@dataclass
class Child:
    process: BaseProcess
    pipe: Connection
    outcome: Outcome | None = None
    open: bool = True

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def describe_exit(self) -> str:
        code = self.process.exitcode
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"


class _Forward:
    """A worker's reporter: passes retry and wait notices up the pipe to the parent."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, FORWARDED_EVENTS):
            with suppress(OSError):
                self.pipe.send(event)


def _work_in_child(strategy: Strategy, options: Options, pipe: Connection, parent_pid: int) -> None:
    # In its own process group a terminal's Ctrl-C reaches only the parent, which forwards it
    # once: a worker that also got it directly would see two and abort its chunk.
    os.setpgid(0, 0)
    stop = ParentWatch(parent_pid)

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set(signal.Signals(signum).name)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handle)
    # The parent blocked these around the fork so none is lost before the handler exists.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    outcome: Outcome
    try:
        result = Runner(strategy, options, reporter=_Forward(pipe), stop=stop, parallel=True).run()
        outcome = Outcome(0, result.message, result=result)
    except BackfillError as exc:
        outcome = Outcome(exc.exit_code, str(exc), stop.reason, getattr(exc, "result", None))
    except KeyboardInterrupt:
        outcome = Outcome(
            3, "Aborted by a second SIGINT; the chunk in flight was rolled back.", "SIGINT"
        )
    except Exception as exc:
        logger.exception("Worker %d failed", os.getpid())
        outcome = Outcome(1, f"{type(exc).__name__}: {exc}")
    finally:
        connections.close_all()
    with suppress(OSError):
        pipe.send(outcome)
    pipe.close()
    sys.exit(outcome.code)


class _Forwarder:
    """Passes every SIGINT/SIGTERM the parent gets to its workers, as it came."""

    def __init__(self, children: list[Child], stop: StopFlag) -> None:
        self.children = children
        self.stop = stop
        self.sent = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set(signal.Signals(signum).name)
        self.send(signum)

    def send(self, signum: int) -> None:
        self.sent = True
        for child in self.children:
            if child.process.exitcode is None:
                with suppress(ProcessLookupError):
                    os.kill(child.pid, signum)

    @contextmanager
    def installed(self) -> Iterator[_Forwarder]:
        previous = {sig: signal.signal(sig, self.handle) for sig in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class ParallelRunner(Runner):
    """The parent of ``--workers N``: starts the run like a Runner, then lets workers do it."""

    def _work(self, ledger: Ledger, run: Run, resumed: bool) -> Result:
        started = self.clock()
        base = (run.rows_scanned, run.rows_changed, run.chunks_done)
        self._announce(ledger, run, resumed)
        self.report(events.Notice(f"Starting {self.options.workers} worker processes."))
        children: list[Child] = []
        if not self.stop:
            with _Forwarder(children, self.stop).installed() as forwarder:
                self._spawn(children)
                self._watch(forwarder, ledger, run, base)
        for child in children:
            child.process.join()
            if child.process.exitcode is not None and child.process.exitcode < 0:
                # Its row would keep a fresh heartbeat for a while; the process is gone now.
                self._quietly(
                    Worker.objects.using(self.using)
                    .filter(run=run, host=ledger.host, pid=child.pid)
                    .delete
                )
        return self._outcome(children, ledger, run, base, self.clock() - started)

    def _spawn(self, children: list[Child]) -> None:
        context = multiprocessing.get_context("fork")
        options = replace(self.options, restart=False, name=self.name)
        # A forked child must not share the parent's sockets: each opens its own connection.
        connections.close_all()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for number in range(1, self.options.workers + 1):
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(
                    target=_work_in_child,
                    args=(self.strategy, options, writer, os.getpid()),
                    name=f"backfill worker {number}",
                )
                process.start()
                writer.close()
                children.append(Child(process, reader))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _watch(
        self, forwarder: _Forwarder, ledger: Ledger, run: Run, base: tuple[int, int, int]
    ) -> None:
        """Until every worker exits: relay their notices, report progress, keep the lease."""
        children = forwarder.children
        seen = base
        last_poll = last_beat = self.clock()
        while any(child.open for child in children):
            if self.stop and not forwarder.sent:
                # Stopped from code (a StopFlag), or by a signal that came before the handler.
                forwarder.send(signal.SIGTERM)
            by_pipe = {child.pipe: child for child in children if child.open}
            for pipe in wait(list(by_pipe), timeout=POLL_EVERY / 4):
                self._receive(by_pipe[pipe])  # type: ignore[index]
            now = self.clock()
            if now - last_poll >= POLL_EVERY:
                last_poll = now
                seen = self._progress(run, seen)
            if now - last_beat >= HEARTBEAT_EVERY:
                last_beat = now
                self._quietly(ledger.heartbeat, run)
        self._progress(run, seen)

    def _receive(self, child: Child) -> None:
        try:
            message = child.pipe.recv()
        except Exception:
            # The worker is gone (EOF), or was killed halfway through a send (a torn message).
            child.open = False
            child.pipe.close()
            return
        if isinstance(message, Outcome):
            child.outcome = message
        elif isinstance(message, FORWARDED_EVENTS):
            self.report(message)

    def _progress(self, run: Run, seen: tuple[int, int, int]) -> tuple[int, int, int]:
        """A ChunkDone for whatever the workers committed since the last look."""
        try:
            row = (
                Run.objects.using(self.using)
                .filter(pk=run.pk)
                .values_list("rows_scanned", "rows_changed", "chunks_done", "frontier")
                .first()
            )
        except DatabaseError:
            if not self.connection.is_usable():
                self.connection.close()
            return seen
        if row is None or row[2] == seen[2]:
            return seen
        scanned, changed, chunks, frontier = row
        assert self.options.batch_size is not None
        self.report(
            events.ChunkDone(
                None,
                frontier,
                scanned - seen[0],
                changed - seen[1],
                POLL_EVERY,
                self.options.batch_size,
                scanned,
                changed,
                chunks,
            )
        )
        return scanned, changed, chunks

    def _outcome(
        self,
        children: list[Child],
        ledger: Ledger,
        run: Run,
        base: tuple[int, int, int],
        elapsed: float,
    ) -> Result:
        """One result for the command from N workers' exits, worst first."""
        fresh = ledger.refresh(run)
        scanned = fresh.rows_scanned - base[0]
        changed = fresh.rows_changed - base[1]
        chunks = fresh.chunks_done - base[2]
        resume = f"Re-run the same command to resume run {self.name!r}."
        died = [c for c in children if c.outcome is None]
        if fresh.status == Run.Status.COMPLETED:
            message = f"Completed run {self.name!r} with {len(children)} workers."
            if died:
                message += " " + " ".join(
                    f"Worker pid {c.pid} {c.describe_exit()}; the others finished its chunks."
                    for c in died
                )
            result = self._result(
                ledger, run, "completed", scanned, changed, chunks, elapsed, message
            )
            self.report(events.Finished(result))
            return result
        failed = [c for c in children if c.outcome is not None and c.outcome.code == 1]
        if failed or (died and not self.stop):
            if failed:
                assert failed[0].outcome is not None
                message = failed[0].outcome.message
            else:
                message = (
                    f"Worker pid {died[0].pid} {died[0].describe_exit()}; its chunk in flight "
                    f"was rolled back and everything committed is checkpointed. {resume}"
                )
                self._settle(ledger, run, Run.Status.FAILED, message)
            logger.error(message)
            result = self._result(ledger, run, "failed", scanned, changed, chunks, elapsed, message)
            self.report(events.Finished(result))
            raise ChunkFailed(message, result=result)
        busy = [c for c in children if c.outcome is not None and c.outcome.code == 4]
        if busy:
            assert busy[0].outcome is not None
            raise RunBusy(busy[0].outcome.message)
        stopped = [c for c in children if c.outcome is not None and c.outcome.code == 3]
        if stopped or self.stop or not children:
            status = fresh.status
            if status not in (Run.Status.PAUSED, Run.Status.CANCELLED):
                status = Run.Status.STOPPED
            reasons = [c.outcome.stop_reason for c in stopped if c.outcome is not None]
            why = self.stop.reason or next((r for r in reasons if r), None)
            if why is None and self.options.max_runtime is not None:
                why = f"--max-runtime {self.options.max_runtime:g}s"
            return self._interrupt(
                ledger, run, status, why or "a worker", scanned, changed, chunks, elapsed
            )
        message = f"No chunks left for these workers; other workers of {self.name!r} are finishing."
        result = self._result(ledger, run, "completed", scanned, changed, chunks, elapsed, message)
        self.report(events.Finished(result))
        return result
