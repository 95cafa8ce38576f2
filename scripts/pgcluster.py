#!/usr/bin/env python3
"""Throwaway PostgreSQL clusters for tests, and the PostgreSQL chooser of `make test`.

As a module::

    from scripts.pgcluster import Cluster

    with Cluster(settings={"wal_level": "replica", "max_wal_senders": "5"}) as primary:
        replica = Cluster(settings={"hot_standby": "on"}).basebackup_from(primary).start()
        try:
            ...  # primary.url("postgres"), replica.url("postgres")
        finally:
            replica.destroy()

A cluster lives in its own temporary directory (data directory, unix socket, log), listens on
127.0.0.1 only, on a free port, with trust authentication for the superuser `postgres`.
PostgreSQL refuses to run as root, so when this runs as root the server binaries run as an
unprivileged user (`nobody` unless told otherwise) that owns the temporary directory.

As a command::

    python scripts/pgcluster.py run -- python -m pytest

runs the command with DATABASE_URL pointing at a PostgreSQL server, chosen in this order:

1. BACKFILL_TEST_FORCE_THROWAWAY=1: always a throwaway cluster;
2. DATABASE_URL, when it is a PostgreSQL URL;
3. the server at BACKFILL_TEST_PROBE_URL (default postgres://postgres@127.0.0.1:5432/postgres),
   when a connection succeeds within 2 seconds; the command gets database `backfill` there;
4. a throwaway cluster, stopped and removed when the command ends (also on SIGINT/SIGTERM).

In 3 and 4 the database is named by BACKFILL_TEST_DBNAME when set (default `backfill`), so runs
side by side (the nox sessions) each have their own.

It prints one line naming the server (never a password) and exits with the command's exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import quote, urlsplit, urlunsplit

POSTGRES_SCHEMES = frozenset({"postgres", "postgresql", "pgsql", "postgis"})
DEFAULT_PROBE_URL = "postgres://postgres@127.0.0.1:5432/postgres"
TEST_DATABASE = "backfill"
PROBE_TIMEOUT_SECONDS = 2
TRUTHY = frozenset({"1", "true", "yes", "on"})


class ClusterError(RuntimeError):
    """A PostgreSQL binary is missing, or initdb/pg_ctl/pg_basebackup failed."""


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl.

    `pg_config --bindir` first, then the newest /usr/lib/postgresql/*/bin (Debian's layout, where
    the server binaries are not on PATH), then whatever directory PATH finds initdb in.

    Raises ClusterError when none has initdb.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: [int(p) if p.isdigit() else 0 for p in Path(path).parent.name.split(".")],
        reverse=True,
    )
    candidates.extend(Path(path) for path in debian)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise ClusterError(
        "No PostgreSQL server binaries found (initdb, pg_ctl): looked in `pg_config --bindir`, "
        "/usr/lib/postgresql/*/bin and PATH. Install them, e.g. `apt-get install postgresql`."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _conf_value(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class Cluster:
    """A PostgreSQL cluster in a temporary directory, for tests.

    `settings` are extra postgresql.conf parameters (`{"wal_level": "replica",
    "max_wal_senders": 5}`); they override the defaults below. `run_as` is the user that runs
    the server binaries; by default the current user, or `nobody` when that is root.
    """

    DEFAULT_SETTINGS: Mapping[str, object] = {
        "listen_addresses": "127.0.0.1",
        "fsync": False,
        "synchronous_commit": False,
        "full_page_writes": False,
        "max_connections": 100,
        "shared_buffers": "128MB",
        "logging_collector": False,
    }

    def __init__(
        self,
        *,
        settings: Mapping[str, object] | None = None,
        port: int | None = None,
        bindir: Path | str | None = None,
        run_as: str | None = None,
        superuser: str = "postgres",
        parent_dir: Path | str | None = None,
    ) -> None:
        self.settings = {**self.DEFAULT_SETTINGS, **(settings or {})}
        self.port = port or free_port()
        self.bindir = Path(bindir) if bindir else find_bindir()
        if run_as is None and os.geteuid() == 0:
            run_as = "nobody"
        self.run_as = run_as
        self.superuser = superuser
        self.host = "127.0.0.1"
        self.base_dir = Path(tempfile.mkdtemp(prefix="backfill-pg-", dir=parent_dir))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "socket"
        self.log_file = self.base_dir / "postgresql.log"
        self._initialized = False
        self.running = False
        try:
            self.socket_dir.mkdir()
            if self.run_as:
                self._hand_over(self.base_dir)
        except BaseException:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            raise

    # -- lifecycle ---------------------------------------------------------------------------

    def init(self) -> Cluster:
        """Create the data directory with initdb (trust auth, UTF8, C locale)."""
        self._run(
            [
                self._bin("initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                self.superuser,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            what="initdb",
        )
        self._write_settings()
        return self

    def basebackup_from(self, primary: Cluster) -> Cluster:
        """Fill the data directory with pg_basebackup from a running `primary`, as a standby.

        The primary needs `wal_level` replica (or logical) and `max_wal_senders` > 0; its
        pg_hba.conf from initdb already trusts replication connections from 127.0.0.1.
        """
        self._run(
            [
                self._bin("pg_basebackup"),
                "--pgdata",
                str(self.data_dir),
                "--host",
                primary.host,
                "--port",
                str(primary.port),
                "--username",
                primary.superuser,
                "--wal-method",
                "stream",
                "--write-recovery-conf",
                "--checkpoint",
                "fast",
                "--no-sync",
            ],
            what="pg_basebackup",
        )
        self._write_settings()
        return self

    def start(self, timeout: int = 60) -> Cluster:
        """Start the server with pg_ctl and wait until it accepts connections."""
        if not self._initialized:
            raise ClusterError("Call init() or basebackup_from() before start().")
        self._run(
            [
                self._bin("pg_ctl"),
                "start",
                "--pgdata",
                str(self.data_dir),
                "--log",
                str(self.log_file),
                "--wait",
                "--timeout",
                str(timeout),
            ],
            what="pg_ctl start",
        )
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (pg_ctl stop -m MODE); nothing happens when it is not running."""
        # postmaster.pid also covers a start that was interrupted after the server came up.
        if not self.running and not (self.data_dir / "postmaster.pid").exists():
            return
        self._run(
            [self._bin("pg_ctl"), "stop", "--pgdata", str(self.data_dir), "--mode", mode, "--wait"],
            what="pg_ctl stop",
        )
        self.running = False

    def destroy(self) -> None:
        """Stop the server (immediately if a fast stop fails) and remove the directory."""
        try:
            self.stop()
        except ClusterError:
            with contextlib.suppress(ClusterError):
                self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        if not self._initialized:
            self.init()
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    # -- use ---------------------------------------------------------------------------------

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        """A postgres:// URL for libpq, psycopg and django-environ (trust auth: no password)."""
        return f"postgres://{quote(user or self.superuser)}@{self.host}:{self.port}/{quote(dbname)}"

    def create_database(self, name: str) -> None:
        """CREATE DATABASE `name` unless it exists."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- internals ---------------------------------------------------------------------------

    def _bin(self, name: str) -> str:
        path = self.bindir / name
        if not path.is_file():
            raise ClusterError(f"{name} not found in {self.bindir}.")
        return str(path)

    def _command(self, argv: Sequence[str]) -> list[str]:
        if not self.run_as or self.run_as == pwd.getpwuid(os.geteuid()).pw_name:
            return list(argv)
        if shutil.which("setpriv"):
            user = pwd.getpwnam(self.run_as)
            return [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--clear-groups",
                "--",
                *argv,
            ]
        return ["runuser", "-u", self.run_as, "--", *argv]

    def _run(self, argv: Sequence[str], *, what: str) -> None:
        result = subprocess.run(
            self._command(argv),
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            details = "\n".join(
                part
                for part in (result.stdout.strip(), result.stderr.strip(), self.log_tail())
                if part
            )
            raise ClusterError(f"{what} failed (exit {result.returncode}):\n{details}")

    def _hand_over(self, path: Path) -> None:
        assert self.run_as
        user = pwd.getpwnam(self.run_as)
        for directory, _subdirs, files in os.walk(path):
            os.chown(directory, user.pw_uid, user.pw_gid)
            for name in files:
                os.chown(os.path.join(directory, name), user.pw_uid, user.pw_gid)
        # The user must reach the directory through its parents (a TMPDIR under /root would not).
        check = subprocess.run(
            self._command(["test", "-w", str(path)]), stdin=subprocess.DEVNULL, check=False
        )
        if check.returncode != 0:
            raise ClusterError(
                f"User {self.run_as!r} cannot write to {path}; set TMPDIR to a directory it can "
                "reach, e.g. TMPDIR=/tmp."
            )

    def _write_settings(self) -> None:
        settings = {
            **self.settings,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
        }
        # Appended last, so these win over anything earlier in the file (also over a primary's
        # settings copied in by pg_basebackup).
        block = "\n# backfill test cluster\n" + "".join(
            f"{key} = {_conf_value(value)}\n" for key, value in settings.items()
        )
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write(block)
        self._initialized = True


# -- choosing a server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """Where the tests' PostgreSQL comes from: `kind` is "env", "local" or "throwaway"."""

    kind: str
    url: str | None = None


def is_postgres_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in POSTGRES_SCHEMES


def with_database(url: str, dbname: str) -> str:
    """`url` with its database name (the path) replaced by `dbname`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname)))


def database_name(env: Mapping[str, str]) -> str:
    """The database the command gets on the local server or a throwaway cluster."""
    return env.get("BACKFILL_TEST_DBNAME", "").strip() or TEST_DATABASE


def choose(env: Mapping[str, str], probe: Callable[[str], bool]) -> Choice:
    """Decide which PostgreSQL the tests use; `probe(url)` says whether a server answers there."""
    if env.get("BACKFILL_TEST_FORCE_THROWAWAY", "").strip().lower() in TRUTHY:
        return Choice("throwaway")
    database_url = env.get("DATABASE_URL", "").strip()
    if database_url and is_postgres_url(database_url):
        return Choice("env", database_url)
    probe_url = env.get("BACKFILL_TEST_PROBE_URL", "").strip() or DEFAULT_PROBE_URL
    if probe(probe_url):
        return Choice("local", with_database(probe_url, database_name(env)))
    return Choice("throwaway")


def probe(url: str) -> bool:
    """Whether a PostgreSQL server accepts a connection at `url` within 2 seconds."""
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=PROBE_TIMEOUT_SECONDS):
            return True
    except Exception:
        return False


def describe(url: str) -> str:
    """`url` for humans: user, host, port and database, never the password."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


# -- the command line ----------------------------------------------------------------------------


def _exit_code(returncode: int) -> int:
    # subprocess reports death by signal N as -N; shells say 128 + N.
    return 128 - returncode if returncode < 0 else returncode


def _terminal_delivers_sigint() -> bool:
    """Whether we are the terminal's foreground group, so a Ctrl-C already reached the child."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def run(command: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run `command` with DATABASE_URL set to the chosen PostgreSQL; return its exit code."""
    environ = dict(os.environ if env is None else env)
    choice = choose(environ, probe)
    cluster: Cluster | None = None
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if child is None:
            raise SystemExit(128 + signum)  # still setting up: unwind through `finally`
        if signum != signal.SIGINT or not _terminal_delivers_sigint():
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if choice.kind == "throwaway":
            started = time.monotonic()
            cluster = Cluster()
            cluster.init().start()
            dbname = database_name(environ)
            cluster.create_database(dbname)
            url = cluster.url(dbname)
            source = (
                f"a throwaway cluster ({cluster.bindir}, {cluster.base_dir}, started in "
                f"{time.monotonic() - started:.1f} s; removed afterwards)"
            )
        else:
            assert choice.url
            url = choice.url
            source = "DATABASE_URL" if choice.kind == "env" else "the local server"
        print(f"pgcluster: PostgreSQL {describe(url)} from {source}", file=sys.stderr, flush=True)
        environ["DATABASE_URL"] = url
        child = subprocess.Popen(list(command), env=environ)
        return _exit_code(child.wait())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child is not None and child.poll() is None:
            child.terminate()
            child.wait()
        if cluster is not None:
            cluster.destroy()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pgcluster.py",
        description="Run a command against a PostgreSQL server: DATABASE_URL, the local server "
        "on 127.0.0.1:5432, or a throwaway cluster.",
    )
    subcommands = parser.add_subparsers(dest="subcommand", required=True)
    run_parser = subcommands.add_parser(
        "run", help="run CMD with DATABASE_URL set", usage="pgcluster.py run -- CMD [ARGS...]"
    )
    run_parser.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    args = parser.parse_args(argv)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("run needs a command, e.g. `pgcluster.py run -- python -m pytest`")
    try:
        return run(command)
    except ClusterError as error:
        print(f"pgcluster: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
