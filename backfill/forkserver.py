"""Imported by the fork server that starts ``--workers`` processes, before it forks any: Django
is set up once there, so each worker starts with settings read and apps loaded, instead of
importing them itself (seconds per worker on a busy machine).

The fork server is single-threaded and opens no database connection, so forking from it stays
safe. When the setup fails here, each worker tries again itself and reports what went wrong.
"""

from __future__ import annotations

import contextlib
import os

if os.environ.get("DJANGO_SETTINGS_MODULE"):
    import django

    with contextlib.suppress(Exception):
        django.setup()
