#!/usr/bin/env python3
"""The benchmark: change ``author`` on every BlogPost row, each way, and compare with one UPDATE.

    make bench                                         # 1,000,000 rows
    make bench BENCH_ARGS="--rows 4000000 --check"     # the article's dataset, targets enforced
    .venv/bin/python scripts/bench.py --rows 200000 --only backfill_update,backfill_cursor

PostgreSQL only. The server comes from DATABASE_URL when it is a PostgreSQL URL, else
postgres://postgres@127.0.0.1:5432; the database is always a dedicated one (``--db-name``,
default ``backfill_bench``), created and migrated if missing, because every strategy starts by
emptying ``blog_blogpost`` and the backfill ledger there.

The N rows are seeded once (``manage.py seed_blogposts``) and kept in ``bench_seed``. Before
each strategy ``blog_blogpost`` is refilled from it, ``VACUUM ANALYZE``d and checkpointed, so
every strategy starts from the same compact heap with the same values. Each strategy then runs
in its own process (``manage.py backfill_*`` or ``scripts/bench.py worker NAME``), so the peak
RSS that ``wait4`` reports for it is its own. Afterwards the script checks that every row in the
strategy's scope holds the strategy's value and stops with exit 1 when one does not.

The article's per-row ``save()`` loops and ``bulk_update`` only run on the first ``--sample``
(``--bulk-update-rows``) rows; their full-table time is extrapolated from the measured rate and
marked ``~``. ``for b in qs`` still loads the whole table (``--load-cap`` limits that), so its
peak RSS is the one the article shows.

Output: a Markdown table on stdout, ``bench-results/bench-<rows>.json`` and ``.png``, and a
PASS/FAIL line per target (``--check`` exits 1 on a FAIL).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "manage.py"
SCRIPT = Path(__file__).resolve()
POSTGRES_SCHEMES = frozenset({"postgres", "postgresql", "pgsql"})
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_DB = "backfill_bench"
TABLE = "blog_blogpost"
SEED_TABLE = "bench_seed"
LEDGER_TABLES = ("backfill_chunk", "backfill_worker", "backfill_run")
# The libraries a team would use instead each read and write 5,000-row batches in key order.
LIBRARY_BATCH = 5000
BULK_UPDATE_BATCH = LIBRARY_BATCH
MB = 1024 * 1024
TIMES = "\N{MULTIPLICATION SIGN}"

# Targets of issue 18: time as a multiple of the fastest one UPDATE of the same run, memory in MB.
TIME_TARGETS = {"backfill_update": 1.05, "backfill_cursor": 1.5, "backfill_iterate": 2.0}
# Two worker processes: past the one statement.
PARALLEL_TIME_TARGETS = {"backfill_update_w2": 0.65, "backfill_cursor_w2": 1.0}
PARALLEL_KEYS = ("backfill_update_w2", "backfill_iterate_w2", "backfill_cursor_w2")
ITERATE_VS_ITERATOR_SAVE = 40.0
RSS_LIMIT_MB = 120.0
RSS_SCALING = 0.15
BACKFILL_KEYS = (
    "backfill_update",
    "backfill_update_vacuum",
    "backfill_iterate",
    "backfill_iterate_save",
    "backfill_cursor",
    *PARALLEL_KEYS,
)
LIBRARY_KEYS = ("bulk_update", "pgbulk_update", "fast_update")


class BenchFailed(Exception):
    """A strategy failed or left rows without its value: the numbers would be meaningless."""


# -- what runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    key: str
    label: str
    # "all": every row; "sample": the first --sample rows; "bulk": the first --bulk-update-rows;
    # "library": the first --library-rows.
    scope: str
    # Arguments after `python`: a manage.py command, or this script's worker mode.
    args: Callable[[Config, str, int], list[str]]
    backfill: bool = False
    code: str = ""  # what a worker runs, for the output and docs/benchmark.md


def _backfill(command: str, *extra: str) -> Callable[[Config, str, int], list[str]]:
    def args(config: Config, value: str, hi: int) -> list[str]:
        line = [str(MANAGE.relative_to(ROOT)), command, "blog.BlogPost"]
        line += ["--set", f"author={value}"]
        if command != "backfill_update":
            line += ["--only", "author"]
        line += [*config.chunk_flags, "--progress", "none", "--json"]
        return line + [part.replace("{hi}", str(hi)) for part in extra]

    return args


def _worker(name: str) -> Callable[[Config, str, int], list[str]]:
    def args(config: Config, value: str, hi: int) -> list[str]:
        line = [str(SCRIPT.relative_to(ROOT)), "worker", name, "--value", value]
        if name != "update":
            line += ["--hi", str(hi)]
        if name == "save_loop" and config.load_cap:
            line += ["--load-cap", str(config.load_cap)]
        return line

    return args


STRATEGIES = [
    Strategy(
        "update",
        "one UPDATE",
        "all",
        _worker("update"),
        code='BlogPost.objects.update(author="...")',
    ),
    # The floor of two processes on this machine: the server's own scaling, no backfill at all.
    Strategy(
        "update_halves",
        "two UPDATEs at once, one per half",
        "all",
        _worker("update_halves"),
        code='BlogPost.objects.filter(pk__gt=lo, pk__lte=hi).update(author="...") for each '
        "half of the keys, on two connections at once, each autocommitted",
    ),
    Strategy(
        "save_loop",
        "for b in qs: b.save()",
        "sample",
        _worker("save_loop"),
        code="for b in BlogPost.objects.all(): b.author = ...; b.save()",
    ),
    Strategy(
        "iterator_save",
        "qs.iterator() + save()",
        "sample",
        _worker("iterator_save"),
        code="for b in qs.iterator(): b.author = ...; b.save()",
    ),
    Strategy(
        "defer_iterator_save",
        'defer("title").iterator() + save()',
        "sample",
        _worker("defer_iterator_save"),
        code='for b in qs.defer("title").iterator(): b.author = ...; b.save()',
    ),
    Strategy(
        "bulk_update",
        f"bulk_update, {BULK_UPDATE_BATCH:,} per call",
        "bulk",
        _worker("bulk_update"),
        code=f'BlogPost.objects.bulk_update(batch, ["author"]) per {BULK_UPDATE_BATCH:,} '
        'objects of qs.order_by("pk").iterator()',
    ),
    Strategy(
        "pgbulk_update",
        f"django-pgbulk update, {LIBRARY_BATCH:,} per call",
        "library",
        _worker("pgbulk_update"),
        code=f'pgbulk.update(BlogPost, batch, ["author"]) per {LIBRARY_BATCH:,} '
        'objects of qs.order_by("pk").iterator()',
    ),
    Strategy(
        "fast_update",
        f"django-fast-update fast_update, {LIBRARY_BATCH:,} per call",
        "library",
        _worker("fast_update"),
        code=f'fast_update(BlogPost.objects.all(), batch, ["author"]) per {LIBRARY_BATCH:,} '
        'objects of qs.order_by("pk").iterator()',
    ),
    Strategy("backfill_update", "backfill_update", "all", _backfill("backfill_update"), True),
    Strategy(
        "backfill_update_vacuum",
        "backfill_update --vacuum-every 0.1",
        "all",
        _backfill("backfill_update", "--vacuum-every", "0.1"),
        True,
    ),
    Strategy(
        "backfill_update_w2",
        "backfill_update --workers 2",
        "all",
        _backfill("backfill_update", "--workers", "2"),
        True,
    ),
    Strategy("backfill_iterate", "backfill_iterate", "all", _backfill("backfill_iterate"), True),
    Strategy(
        "backfill_iterate_save",
        "backfill_iterate --save",
        "sample",
        _backfill("backfill_iterate", "--save", "--filter", "id__lte={hi}"),
        True,
    ),
    Strategy("backfill_cursor", "backfill_cursor", "all", _backfill("backfill_cursor"), True),
    # Two processes: Python of one chunk overlaps the database work of another, on 2 cores.
    Strategy(
        "backfill_iterate_w2",
        "backfill_iterate --workers 2",
        "all",
        _backfill("backfill_iterate", "--workers", "2"),
        True,
    ),
    Strategy(
        "backfill_cursor_w2",
        "backfill_cursor --workers 2",
        "all",
        _backfill("backfill_cursor", "--workers", "2"),
        True,
    ),
]
BY_KEY = {s.key: s for s in STRATEGIES}


# -- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    rows: int
    sample: int
    bulk_update_rows: int
    library_rows: int
    batch_size: int | None
    target_chunk_time: float
    load_cap: int | None
    server_url: str
    db_name: str
    out: Path
    keys: tuple[str, ...]
    reseed: bool
    repeat: int
    check: bool
    chart: bool
    sizes: tuple[int, ...] = ()
    reuse: bool = False

    @property
    def chunk_flags(self) -> list[str]:
        """How the backfill commands size chunks: fixed, or adapting (the default)."""
        if self.batch_size:
            return ["--batch-size", str(self.batch_size)]
        return ["--target-chunk-time", f"{self.target_chunk_time:g}"]

    @property
    def chunking(self) -> str:
        return " ".join(self.chunk_flags)

    @property
    def url(self) -> str:
        parts = urlsplit(self.server_url)
        return parts._replace(path="/" + quote(self.db_name, safe="")).geturl()

    @property
    def shown_url(self) -> str:
        """The bench database's URL without its password, for output."""
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        user = f"{unquote(parts.username)}@" if parts.username else ""
        return f"postgres://{user}{host}{port}/{self.db_name}"


def _server_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if urlsplit(url).scheme in POSTGRES_SCHEMES:
        return url
    return DEFAULT_SERVER


def parse_args(argv: Sequence[str]) -> Config:
    parser = argparse.ArgumentParser(
        description="Benchmark the backfill strategies against one UPDATE on PostgreSQL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="BlogPost rows to seed.")
    parser.add_argument(
        "--sample", type=int, default=20_000, help="Rows the per-row save() loops write."
    )
    parser.add_argument(
        "--bulk-update-rows",
        type=int,
        default=200_000,
        help="Rows the bulk_update loop writes (capped at --rows).",
    )
    parser.add_argument(
        "--library-rows",
        type=int,
        default=1_000_000,
        help="Rows the django-pgbulk and django-fast-update loops write (capped at --rows).",
    )
    parser.add_argument(
        "--sizes",
        help="Scaling mode: comma-separated table sizes (e.g. 1000000,4000000,16000000); each "
        "is seeded and benchmarked in turn, then rows/s and peak RSS per size are charted.",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="Scaling mode: read a size's bench-<rows>.json from --out instead of running it.",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="Fixed --batch-size for the backfill commands (default: adaptive chunks).",
    )
    parser.add_argument(
        "--target-chunk-time",
        type=float,
        default=0.5,
        help="--target-chunk-time of the backfill commands when no --batch-size is given.",
    )
    parser.add_argument(
        "--load-cap",
        type=int,
        help="Rows `for b in qs` loads to measure its memory (default: the whole table).",
    )
    parser.add_argument(
        "--db-name", default=DEFAULT_DB, help="Dedicated database on the server (created)."
    )
    parser.add_argument(
        "--only",
        help=f"Comma-separated strategies to run (the UPDATE always runs): {', '.join(BY_KEY)}.",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results", help="Output folder.")
    parser.add_argument("--reseed", action="store_true", help="Seed again even if bench_seed fits.")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="Run each strategy this many times and keep the fastest (a busy machine is noisy).",
    )
    parser.add_argument("--check", action="store_true", help="Exit 1 when a target fails.")
    parser.add_argument("--no-chart", action="store_true", help="Skip the PNG (no matplotlib).")
    args = parser.parse_args(argv)
    for name in (
        "rows",
        "sample",
        "bulk_update_rows",
        "library_rows",
        "batch_size",
        "target_chunk_time",
        "repeat",
    ):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    keys = list(BY_KEY)
    if args.only:
        wanted = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = [k for k in wanted if k not in BY_KEY]
        if unknown:
            parser.error(f"unknown strategies {unknown}; choose from {', '.join(BY_KEY)}")
        keys = ["update", *(k for k in BY_KEY if k in wanted and k != "update")]
    sizes: tuple[int, ...] = ()
    if args.sizes:
        try:
            sizes = tuple(sorted({int(part.replace("_", "")) for part in args.sizes.split(",")}))
        except ValueError:
            parser.error(f"--sizes must be comma-separated row counts, got {args.sizes!r}")
        if not sizes or min(sizes) <= 0:
            parser.error(f"--sizes must be positive row counts, got {args.sizes!r}")
    return Config(
        rows=args.rows,
        sample=min(args.sample, args.rows),
        bulk_update_rows=min(args.bulk_update_rows, args.rows),
        library_rows=min(args.library_rows, args.rows),
        batch_size=args.batch_size,
        target_chunk_time=args.target_chunk_time,
        load_cap=args.load_cap,
        server_url=_server_url(),
        db_name=args.db_name,
        out=args.out,
        keys=tuple(keys),
        reseed=args.reseed,
        repeat=args.repeat,
        check=args.check,
        chart=not args.no_chart,
        sizes=sizes,
        reuse=args.reuse,
    )


# -- the database ---------------------------------------------------------------------------


def connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def ensure_database(config: Config) -> None:
    from psycopg import sql

    with connect(config.server_url) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [config.db_name]
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config.db_name)))
            print(f"Created database {config.db_name!r}.")


def manage_env(config: Config) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_site.settings",
        "DATABASE_URL": config.url,
        "DEBUG": "False",
        "PYTHONUNBUFFERED": "1",
    }


def manage(config: Config, *args: str) -> None:
    done = subprocess.run([sys.executable, str(MANAGE), *args], env=manage_env(config), cwd=ROOT)
    if done.returncode:
        raise BenchFailed(f"manage.py {shlex.join(args)} exited {done.returncode}.")


def columns(conn: Any, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        [table],
    ).fetchall()
    return [name for (name,) in rows]


def migrate(config: Config) -> None:
    """Bring the bench database to the current migrations, on an empty table.

    Emptied first so a data migration of the example site (0003 fills author_slug) has nothing
    to do; bench_seed keeps the rows.
    """
    with connect(config.url) as conn:
        if conn.execute("SELECT to_regclass(%s)", [TABLE]).fetchone()[0]:
            conn.execute("TRUNCATE " + ", ".join([TABLE, *_ledger_tables(conn)]))
    manage(config, "migrate", "--noinput", "--verbosity", "0")


def seed(config: Config, conn: Any) -> None:
    """Fill bench_seed with --rows rows once; later runs of the same size reuse it."""
    if not config.reseed and columns(conn, SEED_TABLE) == columns(conn, TABLE):
        (count,) = conn.execute(f"SELECT count(*) FROM {SEED_TABLE}").fetchone()
        if count == config.rows:
            print(f"Reusing {SEED_TABLE} ({count:,} rows).")
            return
    print(f"Seeding {config.rows:,} rows with manage.py seed_blogposts …", flush=True)
    manage(config, "seed_blogposts", "--rows", str(config.rows), "--truncate", "--verbosity", "0")
    conn.execute(f"DROP TABLE IF EXISTS {SEED_TABLE}")
    conn.execute(f"CREATE TABLE {SEED_TABLE} AS SELECT * FROM {TABLE} ORDER BY id")
    # key_at() finds the end of a sample by position: an index keeps that from sorting N rows.
    conn.execute(f"ALTER TABLE {SEED_TABLE} ADD PRIMARY KEY (id)")


def _ledger_tables(conn: Any) -> list[str]:
    return [t for t in LEDGER_TABLES if conn.execute("SELECT to_regclass(%s)", [t]).fetchone()[0]]


def prepare(conn: Any) -> None:
    """The same compact, vacuumed, analysed heap with the seed's values, and an empty ledger."""
    names = ", ".join(columns(conn, SEED_TABLE))
    conn.execute("TRUNCATE " + ", ".join([TABLE, *_ledger_tables(conn)]))
    conn.execute(f"INSERT INTO {TABLE} ({names}) SELECT {names} FROM {SEED_TABLE} ORDER BY id")
    # VACUUM sets hint bits and the visibility map, which the first reader would otherwise pay.
    conn.execute(f"VACUUM ANALYZE {TABLE}")
    conn.execute("CHECKPOINT")


def key_at(conn: Any, position: int) -> int:
    """The id of the position-th row (1-based) in id order: the end of a sampled scope."""
    row = conn.execute(
        f"SELECT id FROM {SEED_TABLE} ORDER BY id OFFSET %s LIMIT 1", [position - 1]
    ).fetchone()
    if row is None:
        (last,) = conn.execute(f"SELECT max(id) FROM {SEED_TABLE}").fetchone()
        return int(last)
    return int(row[0])


def heap_bytes(conn: Any) -> int:
    (size,) = conn.execute("SELECT pg_relation_size(%s)", [TABLE]).fetchone()
    return int(size)


def server_version(conn: Any) -> str:
    (version,) = conn.execute("SHOW server_version").fetchone()
    return str(version).split()[0]


# -- one measurement ------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    key: str
    label: str
    command: str
    scope_rows: int  # rows the strategy wrote (and that were verified)
    work_seconds: float  # the strategy's own timer: the loop or the backfill run
    wall_seconds: float  # the whole process: interpreter, Django start-up, the work
    cpu_seconds: float  # CPU time of that process (user + system); the server's is not in it
    rows_per_s: float
    full_seconds: float  # time for the whole table: measured, or extrapolated when sampled
    extrapolated: bool
    ratio: float  # full_seconds / the one UPDATE's work_seconds
    peak_rss_mb: float  # the largest peak of any one process of the command
    tree_rss_mb: float  # the command's processes together, at their largest moment
    processes: int
    heap_before: int
    heap_after: int
    chunks: int | None = None  # chunks a backfill command ran
    loaded_rows: int | None = None  # rows `for b in qs` held in memory
    load_seconds: float | None = None

    @property
    def heap_growth(self) -> float:
        return (self.heap_after - self.heap_before) / self.heap_before if self.heap_before else 0.0


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    limit: str
    status: str  # PASS, MISS, SKIP, or INFO (a reference, not a target)


@dataclass
class Report:
    rows: int
    chunking: str
    sample: int
    bulk_update_rows: int
    library_rows: int
    repeat: int
    database: str
    server_version: str
    started_at: str
    machine: dict[str, Any]
    results: list[Measurement] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for row, result in zip(data["results"], self.results, strict=True):
            row["heap_growth"] = round(result.heap_growth, 4)
        return data


@dataclass(frozen=True)
class Process:
    code: int
    wall: float
    cpu: float
    rss_mb: float  # the largest peak RSS of any one process of the command
    tree_rss_mb: float  # the largest sum of RSS over the command's processes at one moment
    processes: int  # the command's process and every descendant seen
    out: str
    err: str


def _descendants(root: int) -> list[int]:
    """``root``'s descendants (worker processes, a fork server), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # The command name may hold spaces: the fields after its closing ")".
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of ``pid`` in kB, (0, 0) once it is gone."""
    peak = current = 0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    current = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return peak, current


def run_process(argv: list[str], env: dict[str, str], poll: float = 0.05) -> Process:
    """Run argv; return its exit code, wall and CPU seconds, peak RSS, stdout and stderr.

    Every process's peak is its ``VmHWM`` (kept by the kernel), read from /proc while the
    command runs: the command's own and, with ``--workers``, those of the fork server's
    children, with the sum of ``VmRSS`` over all of them at each poll. ``ru_maxrss`` from
    ``os.wait4`` is only the fallback for a command that ended before the first poll: Linux
    carries the parent's high-water mark into a child it spawns (the address space the child
    starts in is the parent's until ``exec``), so once this script holds more memory than a
    command (matplotlib, after the first chart) ``ru_maxrss`` reports the script's size.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=err)
        peaks: dict[int, int] = {}
        tree_kb = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            total = 0
            for each in [proc.pid, *_descendants(proc.pid)]:
                peak, current = _memory_kb(each)
                if peak:
                    peaks[each] = max(peaks.get(each, 0), peak)
                total += current
            tree_kb = max(tree_kb, total)
            time.sleep(poll)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        largest_kb = max(peaks.values()) if peaks else usage.ru_maxrss
        out.seek(0)
        err.seek(0)
        return Process(
            proc.returncode,
            wall,
            usage.ru_utime + usage.ru_stime,
            largest_kb / 1024,
            max(tree_kb, largest_kb) / 1024,
            len(peaks | {proc.pid: 0}),
            out.read(),
            err.read(),
        )


def _all_processes(proc: Process) -> str:
    if proc.processes <= 1:
        return ""
    return f" (all {proc.processes} processes {proc.tree_rss_mb:.0f} MB)"


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise ValueError("no JSON line")


def measure(
    config: Config, conn: Any, strategy: Strategy, hi: dict[str, int], floor: float | None
) -> Measurement:
    value = f"bench-{strategy.key}"
    scope_hi = hi[strategy.scope]
    args = strategy.args(config, value, scope_hi)
    shown = "python " + shlex.join(args)
    print(f"\n## {strategy.label}\n$ {shown}", flush=True)
    prepare(conn)
    before = heap_bytes(conn)
    proc = run_process([sys.executable, *args], manage_env(config))
    code, wall, rss, out, err = proc.code, proc.wall, proc.rss_mb, proc.out, proc.err
    if code != 0:
        raise BenchFailed(
            f"{strategy.label}: exit {code}.\n$ {shown}\nstdout:\n{out[-2000:]}\n"
            f"stderr:\n{err[-2000:]}"
        )
    try:
        data = _last_json(out)
    except ValueError:
        raise BenchFailed(f"{strategy.label}: no JSON summary on stdout:\n{out[-2000:]}") from None
    after = heap_bytes(conn)
    (scope_rows,) = conn.execute(
        f"SELECT count(*) FROM {TABLE} WHERE id <= %s", [scope_hi]
    ).fetchone()
    (wrong,) = conn.execute(
        f"SELECT count(*) FROM {TABLE} WHERE id <= %s AND author IS DISTINCT FROM %s",
        [scope_hi, value],
    ).fetchone()
    if wrong:
        raise BenchFailed(
            f"{strategy.label}: {wrong:,} of {scope_rows:,} rows with id <= {scope_hi} do not "
            f"have author = {value!r} after the run.\n$ {shown}"
        )
    if strategy.backfill:
        if data.get("status") != "completed" or data.get("rows_changed") != scope_rows:
            raise BenchFailed(f"{strategy.label}: unexpected summary {data}")
        work = float(data["elapsed"])
    else:
        work = float(data["work_seconds"])
    rate = scope_rows / work if work > 0 else 0.0
    extrapolated = scope_rows < config.rows
    load = data.get("load_seconds")
    full = config.rows / rate if extrapolated and rate else work
    if load is not None:
        full += float(load)
    ratio = full / floor if floor else 1.0
    result = Measurement(
        key=strategy.key,
        label=strategy.label,
        command=shown,
        scope_rows=int(scope_rows),
        work_seconds=round(work, 3),
        wall_seconds=round(wall, 3),
        cpu_seconds=round(proc.cpu, 3),
        rows_per_s=round(rate, 1),
        full_seconds=round(full, 3),
        extrapolated=extrapolated,
        ratio=round(ratio, 3),
        peak_rss_mb=round(rss, 1),
        tree_rss_mb=round(proc.tree_rss_mb, 1),
        processes=proc.processes,
        heap_before=before,
        heap_after=after,
        chunks=data.get("chunks") if strategy.backfill else None,
        loaded_rows=data.get("loaded_rows"),
        load_seconds=None if load is None else round(float(load), 3),
    )
    print(
        f"{scope_rows:,} rows in {work:.2f} s ({rate:,.0f} rows/s, process {wall:.2f} s, "
        f"its CPU {proc.cpu:.2f} s"
        f"{f', {result.chunks:,} chunks' if result.chunks else ''}), "
        f"{'~' if extrapolated else ''}{ratio:.2f}x UPDATE, peak RSS {rss:.0f} MB"
        f"{_all_processes(proc)}, "
        f"heap {before / MB:.0f} -> {after / MB:.0f} MB ({result.heap_growth:+.0%})",
        flush=True,
    )
    return result


# -- targets, table, chart ------------------------------------------------------------------


def evaluate(report: Report, out: Path) -> list[Target]:
    got = {r.key: r for r in report.results}
    targets: list[Target] = []
    where = f"on {report.rows:,} rows"
    for key, limit in {**TIME_TARGETS, **PARALLEL_TIME_TARGETS}.items():
        result = got.get(key)
        if result is None:
            targets.append(Target(f"{key} time {where}", "not run", f"<= {limit:.2f}x", "SKIP"))
            continue
        ok = result.ratio <= limit
        targets.append(
            Target(
                f"{key} time {where}",
                f"{result.ratio:.2f}x UPDATE",
                f"<= {limit:.2f}x",
                "PASS" if ok else "MISS",
            )
        )
    halves = got.get("update_halves")
    if halves is not None:
        # Not a target: the server's own floor for the two-process targets above.
        targets.append(
            Target(
                f"two plain UPDATEs at once, one per half, {where} (the floor for two processes)",
                f"{halves.ratio:.2f}x UPDATE",
                "",
                "INFO",
            )
        )
    iterate, loop = got.get("backfill_iterate"), got.get("iterator_save")
    if iterate and loop and loop.rows_per_s:
        times = iterate.rows_per_s / loop.rows_per_s
        targets.append(
            Target(
                "backfill_iterate rate vs qs.iterator() + save()",
                f"{times:.1f}x",
                f">= {ITERATE_VS_ITERATOR_SAVE:.0f}x",
                "PASS" if times >= ITERATE_VS_ITERATOR_SAVE else "MISS",
            )
        )
    else:
        targets.append(
            Target(
                "backfill_iterate rate vs qs.iterator() + save()",
                "not run",
                f">= {ITERATE_VS_ITERATOR_SAVE:.0f}x",
                "SKIP",
            )
        )
    for result in report.results:
        if result.key in BACKFILL_KEYS or result.key in LIBRARY_KEYS:
            ok = result.peak_rss_mb <= RSS_LIMIT_MB
            targets.append(
                Target(
                    f"{result.key} peak RSS {where}",
                    f"{result.peak_rss_mb:.0f} MB",
                    f"<= {RSS_LIMIT_MB:.0f} MB",
                    "PASS" if ok else "MISS",
                )
            )
    targets.extend(_rss_scaling(report, out))
    return targets


def _rss_scaling(report: Report, out: Path) -> list[Target]:
    """Peak RSS within 15% between the 1M and the 4M run, from the other run's JSON."""
    other_rows = {1_000_000: 4_000_000, 4_000_000: 1_000_000}.get(report.rows)
    name = "peak RSS flat between 1M and 4M rows"
    if other_rows is None:
        return [Target(name, f"needs a 1M or 4M run, this is {report.rows:,}", "", "SKIP")]
    path = out / f"bench-{other_rows}.json"
    if not path.exists():
        return [Target(name, f"no {path.name} yet", f"within {RSS_SCALING:.0%}", "SKIP")]
    other = {r["key"]: r for r in json.loads(path.read_text())["results"]}
    targets = []
    for result in report.results:
        if result.key not in BACKFILL_KEYS or result.key not in other:
            continue
        small, large = sorted([result.peak_rss_mb, float(other[result.key]["peak_rss_mb"])])
        change = (large - small) / small if small else 0.0
        targets.append(
            Target(
                f"{result.key} peak RSS 1M vs 4M",
                f"{change:+.1%}",
                f"within {RSS_SCALING:.0%}",
                "PASS" if change <= RSS_SCALING else "MISS",
            )
        )
    return targets


def markdown(report: Report) -> str:
    lines = [
        f"Change `author` on {report.rows:,} BlogPost rows; PostgreSQL {report.server_version}, "
        f"backfill commands with `{report.chunking}`; `~` = extrapolated from a sample"
        + (f"; best of {report.repeat} runs." if report.repeat > 1 else "."),
        "",
        f"| strategy | rows timed | time (s) | rows/s | {TIMES} UPDATE | peak RSS (MB) "
        "| all processes (MB) | heap after (MB) | heap growth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.results:
        tilde = "~" if r.extrapolated else ""
        sampled = r.extrapolated
        label = r.label.replace("|", "\\|")
        lines.append(
            f"| {label} | {r.scope_rows:,} | {r.work_seconds:.1f} "
            f"| {r.rows_per_s:,.0f} | {tilde}{_ratio(r.ratio)} | {r.peak_rss_mb:.0f} "
            f"| {_tree_rss(r)} "
            f"| {'—' if sampled else f'{r.heap_after / MB:.0f}'} "
            f"| {'—' if sampled else f'{r.heap_growth:+.0%}'} |"
        )
    heap = report.results[0].heap_before / MB if report.results else 0
    lines += ["", f"Heap before each strategy: {heap:.0f} MB."]
    return "\n".join(lines)


def _tree_rss(result: Measurement) -> str:
    # With --workers: the parent, the fork server and each worker, summed at their largest.
    if result.processes <= 1:
        return "—"
    return f"{result.tree_rss_mb:.0f} ({result.processes} processes)"


def _ratio(ratio: float) -> str:
    return f"{ratio:.2f}{TIMES}" if ratio < 10 else f"{ratio:,.0f}{TIMES}"


def _seconds(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def chart(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = list(reversed(report.results))
    labels = [r.label for r in results]
    colors = [
        "#2b7bba" if r.key in BACKFILL_KEYS else "#e08a2b" if r.key in LIBRARY_KEYS else "#9a9a9a"
        for r in results
    ]
    colors = [("#444444" if r.key == "update" else c) for r, c in zip(results, colors, strict=True)]
    hatches = ["//" if r.extrapolated else "" for r in results]
    fig, axes = plt.subplots(
        1, 3, figsize=(15, 0.5 * len(results) + 2), sharey=True, width_ratios=[1.4, 1, 1]
    )
    positions = list(range(len(results)))

    ax = axes[0]
    bars = ax.barh(positions, [r.ratio for r in results], color=colors, hatch=hatches)
    ax.set_xscale("log")
    ax.set_xlabel(f"time for the whole table, {TIMES} one UPDATE (log)")
    ax.axvline(1.0, color="#444444", linewidth=0.8)
    for bar, r in zip(bars, results, strict=True):
        text = f"{'~' if r.extrapolated else ''}{_ratio(r.ratio)}  {_seconds(r.full_seconds)}"
        ax.text(
            bar.get_width() * 1.08,
            bar.get_y() + bar.get_height() / 2,
            text,
            va="center",
            fontsize=8,
        )
    ax.set_xlim(right=max(r.ratio for r in results) * 8)
    ax.set_yticks(positions, labels)

    ax = axes[1]
    bars = ax.barh(positions, [r.peak_rss_mb for r in results], color=colors)
    ax.axvline(RSS_LIMIT_MB, color="#c0392b", linestyle="--", linewidth=0.8)
    ax.set_xlabel(f"peak RSS of the process, MB (target ≤ {RSS_LIMIT_MB:.0f} for backfill)")
    for bar, r in zip(bars, results, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {r.peak_rss_mb:.0f}",
            va="center",
            fontsize=8,
        )
    ax.set_xlim(right=max(r.peak_rss_mb for r in results) * 1.2)

    ax = axes[2]
    growth = [0.0 if r.extrapolated else 100 * r.heap_growth for r in results]
    bars = ax.barh(positions, growth, color=colors)
    ax.set_xlabel("heap growth after a full-table change, %")
    for bar, r in zip(bars, results, strict=True):
        text = " sample only" if r.extrapolated else f" {100 * r.heap_growth:+.0f}%"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8)
    ax.set_xlim(right=max([*growth, 10.0]) * 1.35)

    fig.suptitle(
        f"Change author on {report.rows:,} BlogPost rows — PostgreSQL {report.server_version}, "
        f"{report.machine['cpus']} CPUs, backfill {report.chunking}"
        "\nblue: backfill commands, orange: bulk libraries, grey: Django loops "
        "(hatched: extrapolated from a sample)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the main flow --------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["worker"]:
        return worker(argv[1:])
    import psycopg

    config = parse_args(argv)
    print(f"Benchmark database: {config.shown_url}")
    sizes = config.sizes or (config.rows,)
    reports: list[Report] = []
    missed = 0
    for rows in sizes:
        sized = replace(
            config,
            rows=rows,
            sample=min(config.sample, rows),
            bulk_update_rows=min(config.bulk_update_rows, rows),
            library_rows=min(config.library_rows, rows),
        )
        if config.sizes:
            print(f"\n# {rows:,} rows")
        saved = config.out / f"bench-{rows}.json"
        if config.reuse and saved.exists():
            print(f"Reusing {_shown_path(saved)} (--reuse).")
            reports.append(load_report(saved))
            continue
        try:
            report = run_size(sized)
        except BenchFailed as exc:
            print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
            return 1
        except psycopg.OperationalError as exc:
            # psycopg's message names host, port and database, never the password.
            print(f"\nBENCHMARK FAILED: cannot use {config.shown_url}: {exc}", file=sys.stderr)
            return 1
        missed += show(sized, report)
        reports.append(report)
    if config.sizes:
        show_scaling(config, reports)
    if config.check and missed:
        print(f"{missed} target(s) missed.", file=sys.stderr)
        return 1
    return 0


def load_report(path: Path) -> Report:
    """A Report as ``show`` wrote it to JSON."""
    data = json.loads(path.read_text())
    results = []
    for row in data.pop("results"):
        row.pop("heap_growth", None)  # derived, not a field
        row.setdefault("tree_rss_mb", row["peak_rss_mb"])
        row.setdefault("processes", 1)
        results.append(Measurement(**row))
    targets = [Target(**t) for t in data.pop("targets")]
    data.setdefault("library_rows", data["bulk_update_rows"])
    return Report(**data, results=results, targets=targets)


def run_size(config: Config) -> Report:
    """Seed ``config.rows`` rows (or reuse the seed) and measure every chosen strategy."""
    ensure_database(config)
    migrate(config)
    with connect(config.url) as conn:
        seed(config, conn)
        hi = {
            "all": key_at(conn, config.rows),
            "sample": key_at(conn, config.sample),
            "bulk": key_at(conn, config.bulk_update_rows),
            "library": key_at(conn, config.library_rows),
        }
        report = Report(
            rows=config.rows,
            chunking=config.chunking,
            sample=config.sample,
            bulk_update_rows=config.bulk_update_rows,
            library_rows=config.library_rows,
            repeat=config.repeat,
            database=config.shown_url,
            server_version=server_version(conn),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            machine=machine(),
        )
        floor: float | None = None
        for key in config.keys:
            tries = [measure(config, conn, BY_KEY[key], hi, floor) for _ in range(config.repeat)]
            result = min(tries, key=lambda m: m.work_seconds)
            if len(tries) > 1:
                # The fastest run's time, and the largest peak RSS of any run.
                result = replace(
                    result,
                    peak_rss_mb=max(m.peak_rss_mb for m in tries),
                    tree_rss_mb=max(m.tree_rss_mb for m in tries),
                )
            if key == "update":
                floor = result.work_seconds
            report.results.append(result)
        # Leave the table as seeded, for whoever looks at it next.
        prepare(conn)
    report.machine["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report.targets = evaluate(report, config.out)
    return report


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPUs, memory, load, Python."""
    memory = ""
    try:
        with open("/proc/meminfo") as meminfo:
            kb = int(meminfo.readline().split()[1])
        memory = f"{kb / MB:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                "",
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory": memory,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def show(config: Config, report: Report) -> int:
    """Print one size's commands, table and targets, write its JSON and PNG; targets missed."""
    print("\n## Commands\n")
    for r in report.results:
        code = BY_KEY[r.key].code
        print(f"- {r.label}: `{r.command}`" + (f" runs `{code}`" if code else ""))
    print("\n## Results\n")
    print(markdown(report))
    print("\n## Targets\n")
    for t in report.targets:
        print(f"{t.status}  {t.name}: {t.measured}" + (f" (target {t.limit})" if t.limit else ""))

    config.out.mkdir(parents=True, exist_ok=True)
    json_path = config.out / f"bench-{config.rows}.json"
    json_path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    print(f"\nWrote {_shown_path(json_path)}")
    if config.chart:
        png = config.out / f"bench-{config.rows}.png"
        chart(report, png)
        print(f"Wrote {_shown_path(png)}")
    return sum(t.status == "MISS" for t in report.targets)


def _shown_path(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def scaling_markdown(reports: Sequence[Report]) -> str:
    """rows/s and peak RSS of each strategy at each size, one row per strategy."""
    sizes = [r.rows for r in reports]
    head = " | ".join(
        f"{_size(n)} rows/s | {_size(n)} {TIMES} UPDATE | {_size(n)} RSS" for n in sizes
    )
    lines = [
        f"| strategy | {head} |",
        "|---|" + "---:|" * (3 * len(sizes)),
    ]
    keys = list(dict.fromkeys(m.key for r in reports for m in r.results))
    for key in keys:
        cells = []
        label = BY_KEY[key].label.replace("|", "\\|")
        for report in reports:
            found = [m for m in report.results if m.key == key]
            if not found:
                cells.append("— | — | —")
                continue
            m = found[0]
            tilde = "~" if m.extrapolated else ""
            cells.append(f"{m.rows_per_s:,.0f} | {tilde}{_ratio(m.ratio)} | {m.peak_rss_mb:.0f} MB")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _size(rows: int) -> str:
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    return f"{rows:,}"


def show_scaling(config: Config, reports: Sequence[Report]) -> None:
    print("\n# Scaling\n")
    print(scaling_markdown(reports))
    config.out.mkdir(parents=True, exist_ok=True)
    path = config.out / "bench-scaling.json"
    path.write_text(json.dumps([r.as_dict() for r in reports], indent=2) + "\n")
    print(f"\nWrote {_shown_path(path)}")
    if config.chart:
        png = config.out / "bench-scaling.png"
        scaling_chart(reports, png)
        print(f"Wrote {_shown_path(png)}")


def scaling_chart(reports: Sequence[Report], path: Path) -> None:
    """rows/s and peak RSS against the table's size, a line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, rss_ax) = plt.subplots(1, 2, figsize=(13, 5.5))
    keys = list(dict.fromkeys(m.key for r in reports for m in r.results))
    for key in keys:
        points = [(r.rows, m) for r in reports for m in r.results if m.key == key]
        sizes = [n for n, _ in points]
        style = "-" if key in BACKFILL_KEYS or key == "update" else "--"
        label = BY_KEY[key].label
        rate_ax.plot(sizes, [m.rows_per_s for _, m in points], style, marker="o", label=label)
        rss_ax.plot(sizes, [m.peak_rss_mb for _, m in points], style, marker="o", label=label)
    for ax in (rate_ax, rss_ax):
        ax.set_xscale("log")
        ax.set_xticks([r.rows for r in reports], [_size(r.rows) for r in reports])
        ax.minorticks_off()
        ax.set_xlabel("rows in the table")
        ax.grid(True, alpha=0.3)
    rate_ax.set_yscale("log")
    rate_ax.set_ylabel("rows/s (log; sampled loops: their measured rate)")
    rss_ax.set_ylabel("peak RSS of the largest process, MB")
    rss_ax.axhline(RSS_LIMIT_MB, color="#c0392b", linestyle=":", linewidth=0.8)
    rate_ax.legend(fontsize=7, loc="lower left")
    first = reports[0]
    fig.suptitle(
        f"How each way's cost grows with the table — PostgreSQL {first.server_version}, "
        f"{first.machine['cpus']} CPUs, backfill {first.chunking}"
        + (f", best of {first.repeat}" if first.repeat > 1 else ""),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- worker mode: the loops that are not manage.py commands ---------------------------------


def worker(argv: Sequence[str]) -> int:
    """``bench.py worker NAME --value V --hi ID``: one loop, then one JSON line on stdout."""
    parser = argparse.ArgumentParser(prog="bench.py worker")
    parser.add_argument("name", choices=sorted(WORKERS))
    parser.add_argument("--value", required=True)
    parser.add_argument("--hi", type=int, default=0, help="Last id the loop writes.")
    parser.add_argument("--load-cap", type=int, help="save_loop: rows loaded (default: all).")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_site.settings")
    import django

    django.setup()
    data = WORKERS[args.name](args.value, args.hi, args.load_cap)
    print(json.dumps(data))
    return 0


def _update(value: str, hi: int, load_cap: int | None) -> dict[str, Any]:
    from example_site.blog.models import BlogPost

    started = time.perf_counter()
    rows = BlogPost.objects.update(author=value)  # one statement, autocommitted
    return {"work_seconds": time.perf_counter() - started, "rows": rows}


def _update_halves(value: str, hi: int, load_cap: int | None) -> dict[str, Any]:
    """Two ``UPDATE``s at once, each over half of the keys on its own connection (a thread
    each; Django gives each thread its own): what two processes can get from the server."""
    import threading

    from django.db import connections

    from example_site.blog.models import BlogPost

    keys = BlogPost.objects.order_by("pk").values_list("pk", flat=True)
    middle = keys[BlogPost.objects.count() // 2]
    rows: list[int] = []

    def half(**bounds: int) -> None:
        try:
            rows.append(BlogPost.objects.filter(**bounds).update(author=value))
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=half, kwargs={"pk__lte": middle}),
        threading.Thread(target=half, kwargs={"pk__gt": middle}),
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"work_seconds": time.perf_counter() - started, "rows": sum(rows)}


def _save_loop(value: str, hi: int, load_cap: int | None) -> dict[str, Any]:
    """``for b in qs: b.save()``: the first iteration loads the whole queryset into memory."""
    from example_site.blog.models import BlogPost

    qs = BlogPost.objects.all()
    if load_cap:
        qs = qs.filter(pk__lte=load_cap)
    started = time.perf_counter()
    load: float | None = None
    saved = 0
    for post in qs:
        if load is None:
            # The first iteration fetched every row and built every instance.
            load = time.perf_counter() - started
            started = time.perf_counter()
        # A fresh heap returns rows in id order, so this saves the first --sample rows.
        if post.pk > hi:
            break
        post.author = value
        post.save()
        saved += 1
    return {
        "work_seconds": time.perf_counter() - started,
        "rows": saved,
        "load_seconds": load,
        "loaded_rows": len(qs._result_cache or []),
    }


def _iterator_save(
    value: str, hi: int, load_cap: int | None, defer: bool = False
) -> dict[str, Any]:
    from example_site.blog.models import BlogPost

    qs = BlogPost.objects.filter(pk__lte=hi)
    if defer:
        qs = qs.defer("title")
    started = time.perf_counter()
    saved = 0
    for post in qs.iterator():
        post.author = value
        post.save()  # with title deferred, Django saves only the loaded fields
        saved += 1
    return {"work_seconds": time.perf_counter() - started, "rows": saved}


def _batches(value: str, hi: int, write: Callable[[list[Any]], Any]) -> dict[str, Any]:
    """Read the rows up to ``hi`` in key order, LIBRARY_BATCH at a time (a server-side cursor),
    set ``author`` on each instance and hand every full batch to ``write`` (autocommitted)."""
    from example_site.blog.models import BlogPost

    started = time.perf_counter()
    batch: list[BlogPost] = []
    saved = 0
    qs = BlogPost.objects.filter(pk__lte=hi).order_by("pk")
    for post in qs.iterator(chunk_size=LIBRARY_BATCH):
        post.author = value
        batch.append(post)
        if len(batch) == LIBRARY_BATCH:
            write(batch)
            saved += len(batch)
            batch = []
    if batch:
        write(batch)
        saved += len(batch)
    return {"work_seconds": time.perf_counter() - started, "rows": saved}


def _bulk_update(value: str, hi: int, load_cap: int | None) -> dict[str, Any]:
    from example_site.blog.models import BlogPost

    return _batches(value, hi, lambda batch: BlogPost.objects.bulk_update(batch, ["author"]))


def _pgbulk_update(value: str, hi: int, load_cap: int | None) -> dict[str, Any]:
    import pgbulk

    from example_site.blog.models import BlogPost

    return _batches(value, hi, lambda batch: pgbulk.update(BlogPost, batch, ["author"]))


def _fast_update(value: str, hi: int, load_cap: int | None) -> dict[str, Any]:
    from fast_update.fast import fast_update

    from example_site.blog.models import BlogPost

    qs = BlogPost.objects.all()
    return _batches(value, hi, lambda batch: fast_update(qs, batch, ["author"], None))


WORKERS: dict[str, Callable[[str, int, int | None], dict[str, Any]]] = {
    "update": _update,
    "update_halves": _update_halves,
    "save_loop": _save_loop,
    "iterator_save": _iterator_save,
    "defer_iterator_save": lambda v, hi, cap: _iterator_save(v, hi, cap, defer=True),
    "bulk_update": _bulk_update,
    "pgbulk_update": _pgbulk_update,
    "fast_update": _fast_update,
}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
