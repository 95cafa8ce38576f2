#!/usr/bin/env python3
"""Where a backfill command's time goes per row: one run under cProfile, split by stage.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bf_profile \\
        .venv/bin/python scripts/profile_commands.py --rows 1000000

Seeds ``--rows`` BlogPost rows in DATABASE_URL's database (``seed_blogposts --truncate``: it
replaces whatever ``blog_blogpost`` held), then runs ``backfill_update``, ``backfill_cursor`` and
``backfill_iterate`` (``--set author=… --only author``, the benchmark's change) once each, in
this process under cProfile, refilling the table before each. The stages are disjoint sums over
the profile (cumulative time of the function that owns the stage, less the stages nested in
it); ``other`` is the rest (planning, the ledger's checkpoint, the runner). A Markdown table
per command on stdout, and the top functions by own time; ``--out DIR`` keeps the ``.prof``
files for ``python -m pstats`` or snakeviz.

cProfile slows Python code roughly twofold and database waits not at all, so the Python stages
weigh more here than in the benchmark: read it as where the time goes, not as the time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("backfill_update", "backfill_cursor", "backfill_iterate")

# (file suffix, function name) of the function whose cumulative time a stage starts from.
Key = tuple[str, str]
READ: list[Key] = [
    ("backfill/reading.py", "_take_rows"),
    ("backfill/reading.py", "_send"),
    ("backfill/reading.py", "__init__"),
]
BUILD: Key = ("backfill/strategies.py", "_build")
TRANSFORM: list[Key] = [
    ("backfill/transforms.py", "_set_fields"),
    ("backfill/transforms.py", "_set_row"),
]
SCAN: Key = ("backfill/strategies.py", "_scan")
CHECK: Key = ("backfill/columns.py", "check_changes")
ENCODE: Key = ("backfill/bulk.py", "_array")
# A batch's write: building and sending it, and later waiting for its result.
WRITE_BULK: list[Key] = [
    ("backfill/chunk_writes.py", "_write"),
    ("backfill/reading.py", "_take_write"),
]
WRITE_UPDATE: Key = ("backfill/strategies.py", "process")
COMMIT: Key = ("django/db/transaction.py", "__exit__")


def cumulative(stats: pstats.Stats, *wanted: Key) -> float:
    """Cumulative seconds of the functions named (each counted once, recursion aside)."""
    total = 0.0
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in table.items():
        if any(filename.endswith(suffix) and name == fn for suffix, fn in wanted):
            total += ct
    return total


def stages(stats: pstats.Stats, command: str, elapsed: float) -> dict[str, float]:
    read = cumulative(stats, *READ)
    transform = cumulative(stats, *TRANSFORM)
    build = max(0.0, cumulative(stats, BUILD) - read) if command == "backfill_iterate" else 0.0
    scan = cumulative(stats, SCAN)
    check = cumulative(stats, CHECK)
    encode = cumulative(stats, ENCODE)
    if command == "backfill_update":
        write = cumulative(stats, WRITE_UPDATE)
    else:
        write = max(0.0, cumulative(stats, *WRITE_BULK) - check - encode)
    # On PostgreSQL each batch is checked, encoded and written inside the scan.
    nested = read + build + transform + (check + encode + write if scan else 0.0)
    compare = max(0.0, scan - nested) if scan else 0.0
    commit = cumulative(stats, COMMIT)
    found = {
        "read (FETCH, decode rows)": read,
        "build (model instances)": build,
        "transform": transform,
        "compare (the scan loop: old vs new, dicts)": compare,
        "check (column value checks)": check,
        "encode (array parameters)": encode,
        "write (the UPDATE statement)": write,
        "commit (chunk + checkpoint)": commit,
    }
    found["other (planning, ledger, runner)"] = max(0.0, elapsed - sum(found.values()))
    return found


def table(command: str, found: dict[str, float], elapsed: float, rows: int) -> str:
    lines = [
        f"`{command}`, {rows:,} rows, {elapsed:.1f} s under cProfile:",
        "",
        "| stage | seconds | share | µs per row |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds in found.items():
        if seconds < 0.005 * elapsed and not name.startswith("other"):
            continue
        lines.append(
            f"| {name} | {seconds:.2f} | {seconds / elapsed:.0%} | {1e6 * seconds / rows:.2f} |"
        )
    return "\n".join(lines)


def top(stats: pstats.Stats, count: int) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(count)
    text = out.getvalue()
    start = text.find("   ncalls")
    return text[start:].rstrip() if start >= 0 else text.rstrip()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", help=f"Comma-separated commands: {', '.join(COMMANDS)}.")
    parser.add_argument("--top", type=int, default=15, help="Functions listed by own time.")
    parser.add_argument("--out", type=Path, help="Keep the .prof files here.")
    args = parser.parse_args(argv)
    commands = [c.strip() for c in args.only.split(",")] if args.only else list(COMMANDS)
    unknown = [c for c in commands if c not in COMMANDS]
    if unknown or args.rows <= 0:
        parser.error(f"unknown commands {unknown}" if unknown else "--rows must be positive")

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_site.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    for command in commands:
        call_command("seed_blogposts", rows=args.rows, truncate=True, verbosity=0)
        options = ["blog.BlogPost", "--set", f"author=profile-{command}", "--progress", "none"]
        options += ["--restart"]  # a later profiling run starts over, never "already done"
        if command != "backfill_update":
            options += ["--only", "author"]
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        call_command(command, *options, stdout=io.StringIO())
        profiler.disable()
        elapsed = time.perf_counter() - started
        stats = pstats.Stats(profiler)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            stats.dump_stats(args.out / f"{command}.prof")
        print(f"\n## {command}\n")
        print(table(command, stages(stats, command, elapsed), elapsed, args.rows))
        print(f"\nTop {args.top} functions by own time:\n\n```")
        print(top(stats, args.top))
        print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
