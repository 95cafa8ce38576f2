"""Fixtures for tests that run Django commands in a subprocess against the test database.

Data a subprocess should see must be committed: use them from
`@pytest.mark.django_db(transaction=True)` tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import DEFAULT_DB_ALIAS, connections

TESTS_DIR = Path(__file__).resolve().parent
MANAGE_PY = TESTS_DIR / "manage.py"

RunManage = Callable[..., "subprocess.CompletedProcess[str]"]
SpawnManage = Callable[..., "subprocess.Popen[str]"]


def database_url(alias: str = DEFAULT_DB_ALIAS) -> str:
    """A DATABASE_URL for the database `alias` currently points at (the test database in tests)."""
    settings = connections[alias].settings_dict
    vendor = connections[alias].vendor
    if vendor == "sqlite":
        return f"sqlite:///{Path(settings['NAME']).resolve()}"
    if vendor in ("postgresql", "mysql"):
        user = quote(settings.get("USER") or "", safe="")
        password = quote(settings.get("PASSWORD") or "", safe="")
        credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        # A unix-socket directory travels percent-encoded in the host part.
        host = quote(settings.get("HOST") or "", safe="")
        port = f":{settings['PORT']}" if settings.get("PORT") else ""
        scheme = "postgres" if vendor == "postgresql" else "mysql"
        return f"{scheme}://{credentials}{host}{port}/{quote(settings['NAME'], safe='')}"
    raise NotImplementedError(f"No DATABASE_URL for the {vendor!r} backend.")


def manage_env(url: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a tests/manage.py subprocess on the database at `url`."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": url,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }


@pytest.fixture
def django_db_url(django_db_setup: None, django_db_blocker: Any) -> str:
    """DATABASE_URL of the test database, for subprocesses."""
    with django_db_blocker.unblock():
        return database_url()


@pytest.fixture
def run_manage(django_db_url: str) -> RunManage:
    """Run `python tests/manage.py ARGS...` on the test database and return the finished process.

    `run_manage("seed_blogposts", "--rows", "10", env={...}, timeout=60)`; stdout and stderr
    are captured as text; the exit code is not checked.
    """

    def run(
        *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(MANAGE_PY), *args],
            env=manage_env(django_db_url, env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def spawn_manage(django_db_url: str) -> Iterator[SpawnManage]:
    """Start `python tests/manage.py ARGS...` on the test database, for signal and kill tests.

    Returns the Popen (stdout and stderr piped, text); processes still running when the test
    ends are killed.
    """
    started: list[subprocess.Popen[str]] = []

    def spawn(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(MANAGE_PY), *args],
            env=manage_env(django_db_url, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield spawn
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


# Tests written for PostgreSQL and SQLite that do not hold on MySQL/MariaDB, each with the
# reason. Kept in one place so the MariaDB run says exactly what it does not cover.
MYSQL_SKIPS = {
    "test_composite_pk.py::test_bulk_write_joins_on_every_key_column": (
        "asserts the VALUES/unnest join's SQL text; MySQL joins a JSON_TABLE on every key column"
    ),
    "test_composite_pk.py::test_planner_walks_keys_as_row_values": (
        "asserts double-quoted row values; MySQL quotes names with backticks"
    ),
    "test_composite_pk.py::test_workers_on_sqlite_are_refused_for_composite_keys_too": (
        "MySQL/MariaDB claim chunks with SKIP LOCKED, so --workers is not refused there"
    ),
    "test_properties.py::test_set_expr_gives_the_reference_result_or_is_refused": (
        "--set-expr text functions differ on MySQL (collations: StrIndex and comparisons "
        "ignore case and accents); its arithmetic is held to the reference by "
        "test_arithmetic_gives_the_reference_result_on_every_backend"
    ),
    "test_trust.py::test_an_invalid_regex_filter_is_bad_input_before_the_run_starts": (
        "the up-front regex check knows PostgreSQL's and SQLite's regex engines only"
    ),
    "test_workers.py::test_restart_with_workers_starts_over_once": (
        "on MariaDB the workers' ledger transactions sometimes deadlock (1213); the retry "
        "splits a pending chunk, so the exact chunk count asserted here varies"
    ),
}


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.mysql":
        return
    for item in items:
        key = item.nodeid.removeprefix("tests/").split("[")[0]
        if key in MYSQL_SKIPS:
            item.add_marker(pytest.mark.skip(reason=f"MySQL/MariaDB: {MYSQL_SKIPS[key]}"))
