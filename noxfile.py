"""The test matrix: the whole suite per Django x Python x database.

    nox                     every session (make test-matrix)
    nox -t extra            what .ci/run adds to `make test`: 6.0 on SQLite, 6.1 on PostgreSQL
                            and on MariaDB
    nox -s "tests-6.1-py3.13-postgres"

Interpreters come from pyenv's versions directory when PATH does not have them (CI starts with
a PATH that may not); nothing is downloaded. PostgreSQL is chosen by scripts/pgcluster.py and
MariaDB by scripts/mariadbserver.py, as for `make test`, with a database of each session's own,
so sessions never share one. A MariaDB session also installs mysqlclient
(requirements-mysql.txt), which builds against libmariadb (pkg-config, libmariadb-dev).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import nox

ROOT = Path(__file__).resolve().parent

# (Django, Python): each Django on the oldest Python it supports, so together they cover
# Python 3.11-3.13 and Django 5.2-6.1. The first is what `make test` runs (Python 3.11 picks
# Django 5.2 from requirements.txt).
COMBINATIONS = [("5.2", "3.11"), ("6.0", "3.12"), ("6.1", "3.13")]
DEFAULT = COMBINATIONS[0]
DATABASES = ("postgres", "sqlite", "mariadb")

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _add_pyenv_interpreters() -> None:
    """Put pyenv's Python 3.11-3.13 on PATH (its shims only reach the versions it has enabled)."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = []
    for _, python in COMBINATIONS:
        # The newest patch release of each minor version, e.g. versions/3.13.0/bin.
        candidates = sorted(glob.glob(str(root / f"{python}.*" / "bin" / f"python{python}")))
        if candidates:
            found.append(str(Path(candidates[-1]).parent))
    os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_add_pyenv_interpreters()


def _server_env(suffix: str, schemes: tuple[str, ...]) -> dict[str, str]:
    """A database of this session's own: DATABASE_URL's name (or `backfill`) plus a suffix.
    DATABASE_URL counts only when its scheme starts with one of ``schemes``."""
    url = os.environ.get("DATABASE_URL", "")
    if urlsplit(url).scheme.startswith(schemes):
        parts = urlsplit(url)
        name = parts.path.lstrip("/") or "backfill"
        return {"DATABASE_URL": urlunsplit(parts._replace(path=f"/{name}_{suffix}"))}
    return {"DATABASE_URL": "", "BACKFILL_TEST_DBNAME": f"backfill_{suffix}"}


def _make_session(django: str, database: str) -> object:
    def tests(session: nox.Session) -> None:
        session.install("-r", "requirements-test.txt", f"Django>={django},<{_next_minor(django)}")
        session.run("python", "-m", "django", "--version")
        suffix = f"dj{django}_py{session.python}".replace(".", "")
        # The wheel test does not depend on the session: `make test` runs it once.
        pytest = ["python", "-m", "pytest", "-m", "not package", *session.posargs]
        if database == "postgres":
            env = _server_env(suffix, ("postgres",))
            session.run("python", "scripts/pgcluster.py", "run", "--", *pytest, env=env)
        elif database == "mariadb":
            try:
                session.install("-r", "requirements-mysql.txt")
            except nox.command.CommandFailed:
                # As make test-mariadb: one line, not a failure.
                session.skip("mysqlclient did not build (install pkg-config and libmariadb-dev)")
            env = _server_env(suffix, ("mysql",))
            session.run("python", "scripts/mariadbserver.py", "run", "--", *pytest, env=env)
        else:
            url = f"sqlite:///{ROOT / f'.nox-{suffix}.sqlite3'}"
            session.run(*pytest, env={"DATABASE_URL": url})

    return tests


def _next_minor(version: str) -> str:
    major, minor = version.split(".")
    return f"{major}.{int(minor) + 1}"


# What CI runs after `make test` (tag "extra"): each newer Django on at least one database, and
# MariaDB with the Django that needs its newest version (6.1: MariaDB 10.11); the other three
# sessions (tag "more") run with a bare `make test-matrix`. A whole-suite session takes 4-5
# minutes, and CI has 30 in all.
EXTRA = {("6.0", "sqlite"), ("6.1", "postgres"), ("6.1", "mariadb")}


def _tag(django: str, python: str, database: str) -> str:
    if (django, python) == DEFAULT:
        return "default"
    return "extra" if (django, database) in EXTRA else "more"


for _django, _python in COMBINATIONS:
    for _database in DATABASES:
        cast(Any, nox.session)(
            name=f"tests-{_django}-py{_python}-{_database}",
            python=_python,
            tags=[_tag(_django, _python, _database), _database],
        )(_make_session(_django, _database))
