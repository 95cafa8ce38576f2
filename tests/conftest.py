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
