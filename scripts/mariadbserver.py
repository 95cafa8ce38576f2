#!/usr/bin/env python3
"""The MariaDB chooser of `make test`, and throwaway MariaDB servers for it.

    python scripts/mariadbserver.py run -- python -m pytest

runs the command with DATABASE_URL pointing at a MySQL/MariaDB server, chosen in this order:

0. BACKFILL_TEST_FORCE_THROWAWAY=1: always a throwaway server (3.);
1. DATABASE_URL, when it is a MySQL URL (mysql://, mysql2://, mysqlgis://);
2. the server at 127.0.0.1:3306 (user root, no password), when it answers within 2 seconds;
   the command gets database `backfill` there (BACKFILL_TEST_DBNAME names another, as for
   scripts/pgcluster.py, so that the nox sessions each have their own; also in 3.);
3. a throwaway server (`mariadb-install-db` into a temporary directory, `mariadbd` on a free
   port of 127.0.0.1), stopped and removed when the command ends, when the binaries exist;
   as root, it runs as an unprivileged user (`nobody` unless BACKFILL_TEST_MARIADB_USER says);
4. otherwise the command is not run: one line says why, and the exit code is 0.

It prints one line naming the server (never a password) and exits with the command's exit code.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

MYSQL_SCHEMES = frozenset({"mysql", "mysql2", "mysqlgis"})
LOCAL = ("127.0.0.1", 3306)
TEST_DATABASE = "backfill"
PROBE_TIMEOUT_SECONDS = 2
START_TIMEOUT_SECONDS = 60


def database_name(env: Mapping[str, str]) -> str:
    """The database the command gets on the local server or a throwaway one."""
    return env.get("BACKFILL_TEST_DBNAME", "").strip() or TEST_DATABASE


def describe(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def probe(host: str, port: int) -> bool:
    """Whether a MySQL server accepts root without a password at host:port."""
    try:
        import MySQLdb
    except ImportError:
        return False
    try:
        MySQLdb.connect(host=host, port=port, user="root", connect_timeout=PROBE_TIMEOUT_SECONDS)
    except MySQLdb.Error:
        return False
    return True


def find(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / name).exists()), None
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Throwaway:
    """A MariaDB server in its own temporary directory, listening on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.install_db = find("mariadb-install-db") or find("mysql_install_db")
        self.mariadbd = find("mariadbd") or find("mysqld")
        if not (self.install_db and self.mariadbd):
            raise FileNotFoundError("no mariadb-install-db/mariadbd on PATH or in /usr/sbin")
        self.dir = Path(tempfile.mkdtemp(prefix="backfill-mariadb-"))
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = os.environ.get("BACKFILL_TEST_MARIADB_USER", "nobody")
            entry = pwd.getpwnam(self.user)
            os.chmod(self.dir, 0o755)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = TEST_DATABASE) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    def start(self) -> Throwaway:
        data = self.dir / "data"
        user = [f"--user={self.user}"] if self.user else []
        installed = subprocess.run(
            [
                str(self.install_db),
                "--no-defaults",
                f"--datadir={data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *user,
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if installed.returncode:
            self.destroy()
            raise RuntimeError(f"mariadb-install-db failed: {installed.stderr.strip()[-500:]}")
        log = open(self.dir / "server.log", "wb")  # noqa: SIM115 (kept open for the server)
        self.process = subprocess.Popen(
            [
                str(self.mariadbd),
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={self.dir / 'mysqld.sock'}",
                f"--pid-file={self.dir / 'mysqld.pid'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--innodb-buffer-pool-size=128M",
                *user,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not probe("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.destroy()
                raise RuntimeError(f"mariadbd did not start; see {self.dir / 'server.log'}")
            time.sleep(0.5)
        return self

    def destroy(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def choose(env: Mapping[str, str]) -> tuple[str, str | None]:
    """``(how, url)``: "env", "local" or "throwaway" (url None: start one), or "none" with
    the reason instead of a URL.
    """
    url = env.get("DATABASE_URL", "")
    forced = env.get("BACKFILL_TEST_FORCE_THROWAWAY", "").lower() in ("1", "true", "yes", "on")
    if urlsplit(url).scheme in MYSQL_SCHEMES and not forced:
        return "env", url
    if not forced and probe(*LOCAL):
        return "local", f"mysql://root@{LOCAL[0]}:{LOCAL[1]}/{database_name(env)}"
    if (find("mariadb-install-db") or find("mysql_install_db")) and (
        find("mariadbd") or find("mysqld")
    ):
        return "throwaway", None
    return "none", (
        "no MySQL DATABASE_URL, nothing answers at 127.0.0.1:3306 and no mariadb-install-db/"
        "mariadbd to start a server (apt-get install mariadb-server)"
    )


def run(command: Sequence[str]) -> int:
    how, url = choose(os.environ)
    if how == "none":
        print(f"mariadbserver: MariaDB run skipped: {url}", file=sys.stderr)
        return 0
    server: Throwaway | None = None
    if how == "throwaway":
        server = Throwaway().start()
        url = server.url(database_name(os.environ))
    assert url is not None
    where = {"env": "from DATABASE_URL", "local": "at 127.0.0.1:3306", "throwaway": "throwaway"}
    print(f"mariadbserver: MariaDB {describe(url)} {where[how]}", file=sys.stderr, flush=True)

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return subprocess.call(list(command), env={**os.environ, "DATABASE_URL": url})
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            server.destroy()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run", help="run a command against the chosen server")
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    return run(command)


if __name__ == "__main__":
    sys.exit(main())
