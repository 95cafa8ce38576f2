"""How ``--workers N`` works one run with N processes.

The parent process starts (or resumes) the run, then starts N workers (``backfill.processes``
says how: from a fork server by default). Each worker is an ordinary ``Runner`` in parallel
mode with its own database connection: it claims pending chunks with ``SELECT … FOR UPDATE
SKIP LOCKED`` and plans new ones in short transactions, so workers never share a chunk, and
the same command started on another host joins the run the same way. The parent forwards
SIGINT/SIGTERM to the workers, reports progress from the run row about once a second, and
turns the workers' exit codes into one outcome.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import NoReturn

from django.db import DatabaseError, connections

from backfill import events, processes
from backfill.conf import Options
from backfill.context import StartedRun
from backfill.exceptions import BackfillError, ChunkFailed, Interrupted, RunBusy
from backfill.gates import HEARTBEAT_EVERY
from backfill.models import Run
from backfill.result import Result, Tally
from backfill.retry import reset_if_broken
from backfill.runner import Runner
from backfill.stopping import StopFlag
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
    method = processes.start_method()
    if method != "fork":
        processes.hand_over(strategy, options, method)  # fails here, before the run exists
    return Runner(
        strategy, options, reporter=reporter, stop=stop, parallel=True, work=WorkerPool.work
    ).run()


class ParentWatch(StopFlag):
    """A worker's stop flag that also trips when its parent is gone (killed with -9): when
    the process that started it (the parent, or the fork server that exits with it) is.
    """

    def __init__(self, parent_pid: int, watched_pid: int | None = None) -> None:
        super().__init__()
        self.parent_pid = parent_pid
        self.watched_pid = parent_pid if watched_pid is None else watched_pid

    def __bool__(self) -> bool:
        if self.reason is None and os.getppid() != self.watched_pid:
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


def _work_in_child(
    strategy: Strategy, options: Options, pipe: Connection, parent_pid: int, watched_pid: int
) -> None:
    # In its own process group a terminal's Ctrl-C reaches only the parent, which forwards it
    # once: a worker that also got it directly would see two and abort its chunk.
    os.setpgid(0, 0)
    stop = ParentWatch(parent_pid, watched_pid)

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set(signal.Signals(signum).name)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handle)
    # Blocked since the process started, so none is lost before the handler exists.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    outcome: Outcome
    try:
        result = Runner(strategy, options, reporter=_Forward(pipe), stop=stop, parallel=True).run()
        outcome = Outcome(0, result.message, result=result)
    except BackfillError as exc:
        outcome = Outcome(exc.exit_code, str(exc), stop.reason, getattr(exc, "result", None))
    except KeyboardInterrupt:
        outcome = Outcome(
            Interrupted.exit_code,
            "Aborted by a second SIGINT; the chunk in flight was rolled back.",
            "SIGINT",
        )
    except Exception as exc:
        logger.exception("Worker %d failed", os.getpid())
        outcome = Outcome(ChunkFailed.exit_code, f"{type(exc).__name__}: {exc}")
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


class WorkerPool:
    """The parent of ``--workers N``: works a started run by letting N workers do it.

    It relays the workers' notices, reports progress from the run's totals about once a
    second, keeps the run's lease while they work, and turns their exits into one outcome.
    """

    def __init__(self, started: StartedRun) -> None:
        self.s = started
        run = started.run
        self.base = Tally(run.rows_scanned, run.rows_changed, run.chunks_done)
        self.seen = self.base
        self.children: list[Child] = []

    @classmethod
    def work(cls, started: StartedRun) -> Result:
        return cls(started)()

    def __call__(self) -> Result:
        s = self.s
        began = s.clock()
        s.announce()
        method = processes.start_method()
        s.report(events.Notice(f"Starting {s.options.workers} worker processes ({method})."))
        if not s.stop:
            with _Forwarder(self.children, s.stop).installed() as forwarder:
                self._spawn()
                self._watch(forwarder)
        for child in self.children:
            child.process.join()
            if child.process.exitcode is not None and child.process.exitcode < 0:
                # Its row would keep a fresh heartbeat for a while; the process is gone now.
                s.retried.quietly(s.ledger.forget_worker, s.run, child.pid)
        return self._outcome(s.clock() - began)

    def _spawn(self) -> None:
        s = self.s
        method = processes.start_method()
        context = processes.context(method)
        options = replace(s.options, restart=False, name=s.identity.name)
        work = (
            (s.strategy, options)
            if method == "fork"
            else processes.hand_over(s.strategy, options, method)
        )
        # A forked child must not share the parent's sockets: each opens its own connection.
        connections.close_all()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for number in range(1, s.options.workers + 1):
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(  # type: ignore[attr-defined]
                    target=processes.start_worker,
                    args=(work, writer, os.getpid()),
                    name=f"backfill worker {number}",
                )
                process.start()
                writer.close()
                self.children.append(Child(process, reader))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _watch(self, forwarder: _Forwarder) -> None:
        """Until every worker exits: relay their notices, report progress, keep the lease."""
        s = self.s
        children = forwarder.children
        last_poll = last_beat = s.clock()
        while any(child.open for child in children):
            if s.stop and not forwarder.sent:
                # Stopped from code (a StopFlag), or by a signal that came before the handler.
                forwarder.send(signal.SIGTERM)
            by_pipe = {child.pipe: child for child in children if child.open}
            for pipe in wait(list(by_pipe), timeout=POLL_EVERY / 4):
                self._receive(by_pipe[pipe])  # type: ignore[index]
            now = s.clock()
            if now - last_poll >= POLL_EVERY:
                last_poll = now
                self._progress()
            if now - last_beat >= HEARTBEAT_EVERY:
                last_beat = now
                s.retried.quietly(s.ledger.heartbeat, s.run)
        self._progress()

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
            self.s.report(message)

    def _progress(self) -> None:
        """Report whatever the workers committed since the last look."""
        s = self.s
        try:
            totals = s.ledger.totals(s.run)
        except DatabaseError:
            reset_if_broken(s.connection)
            return
        if totals is None or totals.done.chunks == self.seen.chunks:
            return
        done, seen = totals.done, self.seen
        assert s.options.batch_size is not None
        s.report(
            events.ChunkDone.summary_of(
                frontier=totals.frontier,
                since=(done.scanned - seen.scanned, done.changed - seen.changed),
                chunks=done.chunks - seen.chunks,
                seconds=POLL_EVERY,
                batch_size=s.options.batch_size,
                totals=(done.scanned, done.changed, done.chunks),
            )
        )
        self.seen = done

    def _with(self, code: int) -> list[Child]:
        """The workers that exited with ``code`` (an exception's exit code)."""
        return [c for c in self.children if c.outcome is not None and c.outcome.code == code]

    def _outcome(self, elapsed: float) -> Result:
        """One result for the command from N workers' exits, worst first."""
        s = self.s
        name = s.identity.name
        fresh = s.ledger.refresh(s.run)
        done = Tally(
            fresh.rows_scanned - self.base.scanned,
            fresh.rows_changed - self.base.changed,
            fresh.chunks_done - self.base.chunks,
        )
        died = [c for c in self.children if c.outcome is None]
        if fresh.status == Run.Status.COMPLETED:
            message = f"Completed run {name!r} with {len(self.children)} workers."
            if died:
                message += " " + " ".join(
                    f"Worker pid {c.pid} {c.describe_exit()}; the others finished its chunks."
                    for c in died
                )
            return s.endings.finished("completed", done, elapsed, message)
        failed = self._with(ChunkFailed.exit_code)
        if failed or (died and not s.stop):
            self._fail(failed, died, done, elapsed)
        busy = self._with(RunBusy.exit_code)
        if busy:
            assert busy[0].outcome is not None
            raise RunBusy(busy[0].outcome.message)
        stopped = self._with(Interrupted.exit_code)
        if stopped or s.stop or not self.children:
            status = fresh.status
            if status not in (Run.Status.PAUSED, Run.Status.CANCELLED):
                status = Run.Status.STOPPED
            reasons = [c.outcome.stop_reason for c in stopped if c.outcome is not None]
            why = s.stop.reason or next((r for r in reasons if r), None)
            if why is None and s.options.max_runtime is not None:
                why = f"--max-runtime {s.options.max_runtime:g}s"
            s.endings.interrupt(status, why or "a worker", done, elapsed)
        message = f"No chunks left for these workers; other workers of {name!r} are finishing."
        return s.endings.finished("completed", done, elapsed, message)

    def _fail(
        self, failed: list[Child], died: list[Child], done: Tally, elapsed: float
    ) -> NoReturn:
        """A worker failed (it recorded why on the run) or died (recorded here): raise."""
        if failed:
            assert failed[0].outcome is not None
            message = failed[0].outcome.message
        else:
            message = (
                f"Worker pid {died[0].pid} {died[0].describe_exit()}; its chunk in flight "
                "was rolled back and everything committed is checkpointed. Re-run the same "
                f"command to resume run {self.s.identity.name!r}."
            )
        started = self.s.clock() - elapsed
        result = self.s.endings.fail(message, done, started, settle=not failed)
        raise ChunkFailed(message, result=result)
