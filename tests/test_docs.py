"""Every command line the README and the manual (docs/*.md) show still works as shown.

What counts as a command line, and what is checked:

- In a fenced code block, a line that starts with ``$ `` (a transcript; the lines after it up to
  the next ``$ `` are its output), or, in a block without prompts, a line whose program is one
  this project's docs use (``python``, ``manage.py``, ``make``, ``docker``, ``psql``, ...) or a
  cron line. ``\\`` continuations are joined; ``# comments``, ``VAR=value`` prefixes, ``time``,
  redirections and the shell around the command (``cd … &&``, ``|| [ $? -eq 3 ]``, ``&``) are
  dropped. A YAML block's ``command: [...]`` list is a command line too.
- Every ``manage.py`` command among them (also ``docker compose run --rm web CMD``, whose entry
  point is ``manage.py``) is parsed by that command's own parser,
  ``create_parser("manage.py", name).parse_args(argv)``, and each option it names must be an
  option of that command as spelled (argparse would accept an abbreviation; the docs must not).
  Synopsis lines (``[--json]``, ``…``, ``F=V``) and inline code spans such as
  ``manage.py backfill_verify NAME`` or ``backfill_runs --json`` get the option-name check only.
  Command lines that appear in a transcript's *output* (``resume  python manage.py …``, ``Work
  it after deploy with: python manage.py …``) are parsed too.
- ``make TARGET VAR=…`` names a target and variables of the Makefile; ``scripts/bench.py``
  lines parse with its own ``parse_args``; ``python -m MODULE`` names an importable module;
  every repository path a line names (``scripts/seed_blogposts.sql``) exists.
- The manual is then followed from its first page to its last, in the order of mkdocs.yml's
  nav, on one table of 5,000 BlogPosts (``seed_blogposts --rows 5000``, as the docs' samples):
  every ``manage.py`` line of a code block is run in-process with ``call_command``, in document
  order, and must exit as the docs show: the code after ``$ echo $?``, else non-zero when its
  output shows a ``CommandError``, else 0; and the run names its output shows (``Completed run
  'update blog.BlogPost set author d58de89c'.``) must be the ones it names. The README is not
  run again: it is docs/index.md with links into docs/ (checked below).
- ``NOT_RUN`` lists, with the reason, each ``manage.py`` line that is only parsed: lines that
  need Celery, a replica, a bigger table, another database schema or a file the reader writes.
  An entry no doc shows any more fails the test, so the list cannot go stale. ``BEFORE`` sets
  up the state such a line would have left (the deferred run `migrate` records).
  ``--workers`` above 1 is not run on SQLite, where the docs say it is bad input.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command, get_commands, load_command_class
from django.core.management.base import CommandParser
from django.db import DEFAULT_DB_ALIAS, connection

from backfill import deferred, ledger
from tests.support import committing, run

ROOT = Path(__file__).resolve().parent.parent
DOCS_DIR = ROOT / "docs"
README = ROOT / "README.md"

# Programs whose lines in a prompt-less code block are command lines.
PROGRAMS = {
    "python",
    "python3",
    ".venv/bin/python",
    "manage.py",
    "make",
    "docker",
    "psql",
    "createdb",
    ".venv/bin/py-spy",
}
SHELL_OPERATORS = {"&&", "||", ";", "&", "|"}
REDIRECTIONS = {">", ">>", "<", ">&", "&>", "<&"}
STATUS = "blog: BlogPost.status"  # the deferred run of docs/migrations.md
CRON = re.compile(r"^([\d*/,-]+\s+){5}")

# Each manage.py line the docs show that the test parses but does not run, and why. The key is
# the command as shown (prompt and continuations removed, whitespace collapsed).
NOT_RUN = {
    # migrate changes the schema of the test database, which every other test shares.
    "python manage.py migrate": "migrate: changes the test database's schema",
    "time python manage.py migrate blog 0002": "migrate: changes the test database's schema",
    "python manage.py migrate > deploy.log 2>&1 & sleep 40; kill -TERM $!; wait $!;"
    ' echo "exit $?"': "migrate in the background, then kill: changes the test database's schema",
    # The reader's own transform modules.
    "python manage.py backfill_cursor blog.BlogPost --transform fixes.long_author_row": (
        "fixes.py is the reader's module; tests/test_trust.py covers the message"
    ),
    "python manage.py backfill_cursor blog.BlogPost --only author --transform fixes.upper_author"
    " --batch-size 1000": "fixes.py is the reader's module; tests/test_transforms.py covers it",
    # Only true of a bigger table.
    "python manage.py backfill_iterate blog.BlogPost --only author --max-runtime 1": (
        "stops a 300,000-row run after 1 s; 5,000 rows are done sooner (test_resume.py)"
    ),
    # A task engine, a cluster, a profiler, cron.
    "python manage.py backfill_iterate blog.BlogPost --transform blog.backfills.fix_author"
    ' --filter author__isnull=False --engine celery --joiners 8 --budget 600 --name "blogpost'
    ' author"': "needs Celery and a broker; tests/test_engines.py runs real workers",
    "python manage.py backfill_iterate blog.BlogPost --transform blog.backfills.fix_author --name"
    " 'blogpost author' --workers 2 --max-runtime 3000": (
        "a Kubernetes Job's command; blog.backfills.fix_author is the reader's transform"
    ),
    "DATABASE_URL=postgres://postgres@127.0.0.1:5432/backfill_bench .venv/bin/py-spy record --idle"
    " --format speedscope -o /tmp/cursor.json -- .venv/bin/python manage.py backfill_cursor"
    " blog.BlogPost --set author=x --only author --progress none": (
        "py-spy on the benchmark's database"
    ),
    "*/10 * * * * cd /srv/app && python manage.py backfill_iterate blog.BlogPost --only author"
    " --max-runtime 540 || [ $? -eq 3 ]": "a crontab line",
    "docker compose run --rm web createsuperuser": "docker compose",
    "docker compose run --rm web seed_blogposts --rows 4000000 --truncate": "docker compose",
    "docker compose run --rm web backfill_iterate blog.BlogPost --only author": "docker compose",
    ".venv/bin/py-spy record --idle -r 250 -f raw -o /tmp/cursor.spy -- .venv/bin/python"
    " manage.py backfill_cursor blog.BlogPost --set author=x --only author --progress none": (
        "py-spy, installed by the reader; scripts/profile_commands.py runs the profile"
    ),
    # django.tasks: a worker of the reader's task backend, the reader's transform, cron.
    "python manage.py db_worker --queue-name backfill # on each worker host, N in all": (
        "django-tasks-db's worker; tests/test_task_engine.py runs real db_worker processes"
    ),
    "python manage.py backfill_iterate blog.BlogPost --transform blog.backfills.fix_author"
    ' --name "blogpost author" --enqueue': (
        "needs a django.tasks backend and the reader's transform; tests/test_task_engine.py"
    ),
    "*/5 * * * * cd /srv/app && python manage.py backfill_enqueue --stalled": "a crontab line",
    # Run control: a pause needs a process that is working the run when it arrives.
    "python manage.py backfill_runs nightly-authors --pause --by ops": (
        "needs a process working the run; tests/test_control.py pauses a real one"
    ),
    "python manage.py backfill_runs nightly-authors --cancel --by ops": (
        "cancels the run the --pause line paused; tests/test_control.py runs both"
    ),
    # Expand, backfill, contract: rows the previous release wrote with status NULL.
    "python manage.py backfill_verify 'blog: BlogPost.status'": (
        "shown twice: the second time with rows the previous release wrote with status NULL"
        " (exit 1), which the test database, migrated past 0007, cannot hold (test_contract.py)"
    ),
}


def record_the_deferred_run() -> None:
    """What the `migrate` shown just before did: 0006 recorded 'blog: BlogPost.status' pending."""
    recipe = deferred.declared_recipe(STATUS)
    assert recipe is not None
    ledger.record_pending(STATUS, recipe, using=DEFAULT_DB_ALIAS, estimated_rows=5000)


# The state a line not run would have left, set up before the line that needs it.
BEFORE = {"python manage.py backfill_pending": record_the_deferred_run}


@dataclass(frozen=True)
class Shown:
    """One command line as a doc shows it."""

    path: Path
    line: int
    text: str  # as shown: prompt and continuations removed, whitespace collapsed
    kind: str  # "block": a line to type; "output": inside a transcript's output; "yaml"
    expected: int | None = 0  # the exit the doc shows; None: non-zero
    names: tuple[str, ...] = ()  # the run names its output shows ("Completed run 'NAME'.")

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.text}"


def doc_files() -> list[Path]:
    """docs/*.md in the order of mkdocs.yml's nav (pages missing from it last)."""
    nav = re.findall(r"^\s*-\s[^:\n]+:\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    pages = [DOCS_DIR / name for name in nav]
    return pages + sorted(set(DOCS_DIR.glob("*.md")) - set(pages))


def code_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, line number of the first line, lines) of each fenced block."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opening = lines[i].strip()
        if opening.startswith("```"):
            start, i = i + 1, i + 1
            while not lines[i].strip().startswith("```"):
                i += 1
            yield opening[3:].strip(), start + 1, [line.strip() for line in lines[start:i]]
        i += 1


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.M | re.S)


def joined(lines: list[str], i: int) -> tuple[str, int]:
    """Line i with its backslash continuations, and the index after them."""
    parts = [lines[i]]
    while parts[-1].endswith("\\") and i + 1 < len(lines):
        parts[-1] = parts[-1][:-1]
        i += 1
        parts.append(lines[i])
    return " ".join(" ".join(parts).split()), i + 1


def is_command(line: str) -> bool:
    words = line.split()
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]
    if words and words[0] == "time":
        words = words[1:]
    return bool(words) and (words[0] in PROGRAMS or bool(CRON.match(line) and "manage.py" in line))


def embedded(line: str) -> str | None:
    """A ``python manage.py …`` command inside a line of output, up to an em dash."""
    found = re.search(r"python manage\.py \S.*", line)
    return found.group(0).split(" — ")[0].strip() if found else None


def shown_in(path: Path) -> list[Shown]:
    """Every command line of one file's code blocks."""
    shown: list[Shown] = []
    for language, first, lines in code_blocks(path.read_text()):
        if language == "yaml":
            for listed in re.findall(r"command:\s*(\[.*?\])", "\n".join(lines), re.S):
                shown.append(Shown(path, first, shlex.join(json.loads(listed)), "yaml"))
            continue
        if language == "python":
            continue
        transcript = any(line.startswith("$ ") for line in lines)
        i = 0
        while i < len(lines):
            line = lines[i]
            if transcript and line.startswith("$ "):
                text, after = joined(lines, i)
                output = []
                j = after
                while j < len(lines) and not lines[j].startswith("$ "):
                    output.append(lines[j])
                    j += 1
                expected: int | None = 0
                status = re.fullmatch(r"\$ echo \$\?", lines[j]) if j < len(lines) else None
                if status and j + 1 < len(lines) and lines[j + 1].isdigit():
                    expected = int(lines[j + 1])
                elif any("CommandError:" in out for out in output):
                    expected = None
                names = tuple(
                    dict.fromkeys(re.findall(r"(?:[Rr]un|backfill) '([^']+)'", "\n".join(output)))
                )
                if not text.startswith("$ echo"):
                    shown.append(Shown(path, first + i, text[2:], "block", expected, names))
                i = after
                continue
            text, after = joined(lines, i)
            text = text.split(" # ")[0].strip()
            if not transcript and is_command(text):
                shown.append(Shown(path, first + i, text, "block"))
                i = after
                continue
            command = embedded(line)
            if command and not line.startswith("#"):
                shown.append(Shown(path, first + i, command, "output"))
            i += 1
    return shown


def all_shown() -> list[Shown]:
    return [s for path in [README, *doc_files()] for s in shown_in(path)]


def segments(text: str) -> list[list[str]]:
    """The simple commands of a shell line, redirections and their targets removed."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    result: list[list[str]] = [[]]
    skip = False
    for n, token in enumerate(tokens):
        if skip:
            skip = False
        elif token in SHELL_OPERATORS:
            result.append([])
        elif token in REDIRECTIONS:
            if result[-1] and result[-1][-1].isdigit() and n and tokens[n - 1].isdigit():
                result[-1].pop()
            skip = True
        else:
            result[-1].append(token)
    return [segment for segment in result if segment]


def manage_argv(segment: list[str]) -> list[str] | None:
    """[command, *arguments] when this simple command runs manage.py (or the compose image)."""
    for n, token in enumerate(segment):
        if token == "manage.py" or token.endswith("/manage.py"):
            return segment[n + 1 :]
    if segment[:3] == ["docker", "compose", "run"]:
        rest = [t for t in segment[3:] if t != "--rm"]
        return rest[1:]
    return None


def parser_for(name: str) -> CommandParser:
    commands = get_commands()
    if name not in commands:
        raise CommandError(f"there is no command {name!r}")
    command = load_command_class(commands[name], name)
    return command.create_parser("manage.py", name)


def unknown_options(parser: CommandParser, words: list[str]) -> list[str]:
    """Options among ``words`` that the parser does not have, spelled exactly."""
    known = parser._option_string_actions
    unknown = []
    for word in words:
        if word == "--":
            break
        option = word.split("=", 1)[0]
        if re.fullmatch(r"--?[A-Za-z][\w-]*", option) and option not in known:
            unknown.append(option)
    return unknown


def check_manage(argv: list[str]) -> list[str]:
    """Problems with a manage.py command line (an empty list when it parses)."""
    if not argv:
        return ["no command after manage.py"]
    try:
        parser = parser_for(argv[0])
        unknown = unknown_options(parser, argv[1:])
        if unknown:
            return [f"{argv[0]} has no option {', '.join(unknown)}"]
        parser.parse_args(argv[1:])
    except CommandError as exc:
        return [str(exc)]
    return []


def check_synopsis(text: str) -> list[str]:
    """Option names of a synopsis (``manage.py backfill_runs [NAME] [--json]``) or a span."""
    words = text.split()
    if words[0] == "python":
        words = words[1:]
    if words[0].endswith("manage.py"):
        words = words[1:]
    try:
        parser = parser_for(words[0])
    except CommandError as exc:
        return [str(exc)]
    options = re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", " ".join(words[1:]))
    unknown = unknown_options(parser, options)
    return [f"{words[0]} has no option {', '.join(unknown)}"] if unknown else []


def check_other(segment: list[str]) -> list[str]:
    """Problems with a command line that does not run manage.py."""
    while segment and re.fullmatch(r"[A-Z_]+=\S*", segment[0]):
        segment = segment[1:]
    problems = []
    for token in segment:
        in_repository = re.fullmatch(r"(scripts|tests|example_site|backfill|docs)/[\w./-]+", token)
        if in_repository and not (ROOT / token).exists():
            problems.append(f"{token} does not exist")
    if segment and segment[0] == "make":
        makefile = (ROOT / "Makefile").read_text()
        for word in segment[1:]:
            if "=" in word:
                variable = word.split("=", 1)[0]
                if f"$({variable})" not in makefile:
                    problems.append(f"the Makefile does not use {variable}")
            elif not re.search(rf"^{re.escape(word)}:", makefile, re.M):
                problems.append(f"the Makefile has no target {word}")
    if "-m" in segment[:-1] and segment[0].endswith(("python", "python3")):
        module = segment[segment.index("-m") + 1]
        if importlib.util.find_spec(module) is None:
            problems.append(f"no module {module}")
    if len(segment) > 1 and segment[1] == "scripts/bench.py":
        sys.path.insert(0, str(ROOT))
        try:
            from scripts import bench

            bench.parse_args(segment[2:])
        except SystemExit:
            problems.append("scripts/bench.py refuses these arguments")
        finally:
            sys.path.remove(str(ROOT))
    return problems


def is_synopsis(text: str) -> bool:
    """``manage.py backfill_runs [NAME] [--json]``: a usage line, not one to type."""
    return text.startswith("manage.py ") and bool(re.search(r"[\[…|]", text))


def problems_of(text: str) -> list[str]:
    """Everything wrong with one command line as a doc shows it."""
    if is_synopsis(text):
        return check_synopsis(text)
    problems = []
    for segment in segments(text):
        argv = manage_argv(segment)
        if argv is not None:
            problems += check_manage(argv)
        else:
            problems += check_other(segment)
    return problems


def spans_in(path: Path) -> list[tuple[int, str]]:
    """Inline code spans of prose that hold a command: ``manage.py …``, ``backfill_runs --json``."""
    text = prose(path.read_text())
    found = []
    for match in re.finditer(r"`([^`\n]+)`", text):
        span = match.group(1)
        if re.match(
            r"(python )?manage\.py [a-z_]+( |$)|backfill_(update|iterate|cursor|runs"
            r"|pending|verify|enqueue) \S",
            span,
        ):
            found.append((text.count("\n", 0, match.start()) + 1, span))
    return found


# -- the checks -------------------------------------------------------------------------------


def test_the_docs_show_command_lines() -> None:
    shown = all_shown()
    texts = {s.text for s in shown}
    # The extraction finds what it must: a transcript, a runbook line, a continuation, a make
    # line, an output line and the YAML list.
    assert "python manage.py backfill_runs" in texts
    assert "make demo" in texts
    assert (
        "python manage.py backfill_iterate blog.BlogPost --only author --target-chunk-time 0.2"
        " --sleep 0.05 --max-replica-lag 5" in texts
    )
    assert {s.kind for s in shown} == {"block", "output", "yaml"}
    assert len([s for s in shown if "manage.py" in s.text]) > 40


@pytest.mark.parametrize("shown", all_shown(), ids=lambda s: f"{s.path.name}:{s.line}")
def test_command_line_parses(shown: Shown) -> None:
    assert problems_of(shown.text) == [], shown.where()


@pytest.mark.parametrize(
    ("path", "line", "span"),
    [(path, line, span) for path in [README, *doc_files()] for line, span in spans_in(path)],
    ids=lambda value: value.name if isinstance(value, Path) else None,
)
def test_inline_command_names_real_options(path: Path, line: int, span: str) -> None:
    assert check_synopsis(span) == [], f"{path.relative_to(ROOT)}: `{span}`"


@pytest.mark.parametrize(
    "text",
    [
        "python manage.py backfill_iterate blog.BlogPost --only author --no-such-option",
        "python manage.py backfill_iterate blog.BlogPost --only author --max-run 5",  # abbreviated
        "python manage.py backfill_update blog.BlogPost --batch-size",  # a value missing
        "python manage.py backfill_nonexistent blog.BlogPost",
        "manage.py backfill_runs [NAME] [--jsn]",
        "make no-such-target",
        "make bench NO_SUCH_VARIABLE=1",
        ".venv/bin/python scripts/bench.py --rows 100 --no-such-option",
        ".venv/bin/python -m no_such_module",
        "psql -f scripts/no_such_file.sql",
    ],
)
def test_a_wrong_line_is_caught(text: str) -> None:
    assert problems_of(text) != []


def test_wrong_inline_options_are_caught() -> None:
    assert check_synopsis("backfill_runs --jsn") == ["backfill_runs has no option --jsn"]
    assert check_synopsis("backfill_runs --json") == []


def test_readme_is_the_manuals_front_page() -> None:
    """README.md is docs/index.md with its links pointing into docs/: one text, two places."""
    readme = README.read_text()
    index = (DOCS_DIR / "index.md").read_text()
    assert readme.replace("](docs/", "](") == index


def test_every_line_not_run_is_still_shown() -> None:
    texts = {s.text for s in all_shown()}
    assert sorted(set(NOT_RUN) - texts) == []


def runnable(shown: Shown) -> tuple[list[str] | None, str]:
    """The argv to run for a line, or None and why not."""
    if shown.kind == "output" or "manage.py" not in shown.text:
        return None, "not a manage.py line to type"
    if shown.text in NOT_RUN:
        return None, NOT_RUN[shown.text]
    if is_synopsis(shown.text):
        return None, "a synopsis (its option names are checked)"
    parts = segments(shown.text)
    if len(parts) != 1 or parts[0][0] not in ("python", ".venv/bin/python", "manage.py"):
        return None, "wrapped in other shell commands"
    argv = manage_argv(parts[0])
    if argv is None:
        return None, "wrapped in other shell commands"
    if connection.vendor == "sqlite":
        workers = re.search(r"--workers (\d+)", shown.text)
        if workers and int(workers.group(1)) > 1:
            return None, "--workers above 1 is bad input on SQLite (the docs say so)"
    return argv, ""


def test_every_manage_line_is_run_or_listed() -> None:
    """A manage.py line is run, or NOT_RUN (or the SQLite rule) says why: nothing is dropped."""
    for shown in all_shown():
        if shown.kind != "output" and "manage.py" in shown.text:
            argv, why = runnable(shown)
            assert argv is not None or why != "wrapped in other shell commands", shown.where()


@committing
def test_the_manual_runs_as_shown() -> None:
    """Every runnable line of the manual, page by page in nav order, on 5,000 BlogPosts."""
    call_command("seed_blogposts", "--rows", "5000", "--truncate", verbosity=0)
    ran, wrong = 0, []
    for path in doc_files():
        for shown in shown_in(path):
            argv, _ = runnable(shown)
            if argv is None:
                continue
            if shown.text in BEFORE:
                BEFORE[shown.text]()
            outcome = run(*argv)
            ran += 1
            ok = (
                outcome.returncode != 0
                if shown.expected is None
                else (outcome.returncode == shown.expected)
            )
            if not ok:
                wanted = "non-zero" if shown.expected is None else shown.expected
                wrong.append(
                    f"{shown.where()}\n  exit {outcome.returncode}, the doc shows {wanted}:"
                    f" {outcome.error or outcome.stdout[-300:]}"
                )
            said = outcome.stdout + outcome.stderr + outcome.error
            for name in shown.names:
                if name not in said:
                    wrong.append(f"{shown.where()}\n  the doc shows run {name!r}; it said: {said}")
    assert wrong == [], "\n".join(wrong)
    assert ran >= 25
