"""Settings of the test suite; the database comes from DATABASE_URL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/backfill python -m pytest
    DATABASE_URL=sqlite:////tmp/backfill.sqlite3 python -m pytest

pytest-django creates the test database next to it (test_backfill, or test_backfill.sqlite3).
SQLite's test database is a file, not memory, so subprocess tests can share it.
"""

from __future__ import annotations

import tempfile
from importlib.util import find_spec
from pathlib import Path

import environ

env = environ.Env()

DATABASES = {
    "default": env.db(
        "DATABASE_URL",
        default=f"sqlite:///{Path(tempfile.gettempdir()) / 'backfill-tests.sqlite3'}",
    ),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    _sqlite_path = Path(DATABASES["default"]["NAME"])
    DATABASES["default"]["TEST"] = {
        "NAME": str(_sqlite_path.with_name(f"test_{_sqlite_path.name}"))
    }

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    # The admin's CSS and JS, served by the live server of the browser tests.
    "django.contrib.staticfiles",
    "backfill",
    "example_site.blog",
    "tests.testapp",
    "tests.migrapp",
    "tests.contractapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ROOT_URLCONF = "example_site.urls"
STATIC_URL = "static/"
SECRET_KEY = "backfill-tests-not-secret"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# The django.tasks engine's tests (tests/test_task_engine.py): django-tasks-db's database
# backend and its db_worker, when installed (requirements-test.txt). Any queue name is allowed.
if find_spec("django_tasks_db") is not None:
    INSTALLED_APPS.append("django_tasks_db")
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": []}}

# The worker start method of subprocess tests that pick one (tests/test_worker_start.py).
if env.str("BACKFILL_TEST_START_METHOD", default=""):
    BACKFILL = {"WORKER_START_METHOD": env.str("BACKFILL_TEST_START_METHOD")}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"backfill": {"handlers": ["null"], "propagate": True, "level": "DEBUG"}},
}
