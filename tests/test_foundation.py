"""The project's scaffolding: the seed command, the settings, and the PostgreSQL chooser."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from example_site.blog.models import BlogPost
from scripts import pgcluster
from tests.conftest import RunManage

PROJECT_DIR = Path(__file__).resolve().parent.parent
PGCLUSTER = PROJECT_DIR / "scripts" / "pgcluster.py"
EXAMPLE_SETTINGS = PROJECT_DIR / "example_site" / "settings.py"
TEST_SETTINGS = PROJECT_DIR / "tests" / "settings.py"


# -- seed_blogposts ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_seed_inserts_exactly_n_rows_in_batches() -> None:
    out = StringIO()

    call_command("seed_blogposts", rows=1234, batch=500, stdout=out)

    assert BlogPost.objects.count() == 1234
    lines = out.getvalue().splitlines()
    assert [re.sub(r"[\d,.]+ rows/s", "R rows/s", line.strip()) for line in lines[:3]] == [
        "500 / 1,234 rows ( 40.5%), R rows/s",
        "1,000 / 1,234 rows ( 81.0%), R rows/s",
        "1,234 / 1,234 rows (100.0%), R rows/s",
    ]
    assert re.fullmatch(
        rf"Inserted 1,234 rows into blog_blogpost on database 'default' \({connection.vendor}\) "
        r"in [\d.]+ s \([\d,]+ rows/s\)\.",
        lines[3],
    )
    assert len(lines) == 4
    post = BlogPost.objects.first()
    assert post is not None
    assert re.fullmatch(r"[0-9a-f]{32}", post.title)
    assert re.fullmatch(r"[0-9a-f]{32}", post.author)
    assert BlogPost.objects.values("title").distinct().count() == 1234


@pytest.mark.django_db
def test_seed_appends_and_truncate_restarts_ids() -> None:
    call_command("seed_blogposts", rows=10, stdout=StringIO())
    call_command("seed_blogposts", rows=5, stdout=StringIO())
    assert BlogPost.objects.count() == 15

    out = StringIO()
    call_command("seed_blogposts", rows=3, truncate=True, stdout=out)

    assert sorted(BlogPost.objects.values_list("id", flat=True)) == [1, 2, 3]
    assert out.getvalue().splitlines()[0] == "Emptied blog_blogpost and reset its id sequence."


@pytest.mark.django_db
def test_seed_is_silent_at_verbosity_0() -> None:
    out = StringIO()
    call_command("seed_blogposts", rows=7, verbosity=0, stdout=out)
    assert out.getvalue() == ""
    assert BlogPost.objects.count() == 7


@pytest.mark.django_db
@pytest.mark.parametrize("rows", [0, -5])
def test_seed_rejects_non_positive_rows(rows: int) -> None:
    BlogPost.objects.create(title="kept", author="kept")

    with pytest.raises(CommandError) as excinfo:
        call_command("seed_blogposts", rows=rows, truncate=True, stdout=StringIO())

    assert str(excinfo.value) == (
        f"--rows must be a positive integer, got {rows}. "
        "Pass the number of rows to insert, e.g. --rows 100000."
    )
    assert excinfo.value.returncode == 2
    assert list(BlogPost.objects.values_list("title", flat=True)) == ["kept"]


@pytest.mark.django_db
def test_seed_rejects_non_positive_batch() -> None:
    with pytest.raises(CommandError) as excinfo:
        call_command("seed_blogposts", rows=10, batch=0, stdout=StringIO())
    assert excinfo.value.returncode == 2
    assert str(excinfo.value).startswith("--batch must be a positive integer, got 0.")
    assert BlogPost.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_seed_in_a_subprocess_writes_to_the_test_database(run_manage: RunManage) -> None:
    result = run_manage("seed_blogposts", "--rows", "2500", "--batch", "1000")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("Inserted 2,500 rows into blog_blogpost")
    assert BlogPost.objects.count() == 2500
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'blog_blogpost'")
            (reltuples,) = cursor.fetchone()
        assert reltuples == 2500  # ANALYZE ran


@pytest.mark.django_db(transaction=True)
def test_seed_rows_0_exits_2_with_one_line_and_writes_nothing(run_manage: RunManage) -> None:
    result = run_manage("seed_blogposts", "--rows", "0", "--truncate")

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "CommandError: --rows must be a positive integer, got 0. "
        "Pass the number of rows to insert, e.g. --rows 100000.\n"
    )
    assert BlogPost.objects.count() == 0


# -- settings ---------------------------------------------------------------------------------


def test_example_site_reads_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://blog:pw@db.example:5433/blogdb")

    settings = runpy.run_path(str(EXAMPLE_SETTINGS))

    database = settings["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["NAME"], database["USER"], database["PASSWORD"]) == ("blogdb", "blog", "pw")
    assert (database["HOST"], database["PORT"]) == ("db.example", 5433)


def test_example_site_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)

    settings = runpy.run_path(str(EXAMPLE_SETTINGS))

    database = settings["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert database["NAME"] == str(PROJECT_DIR / "db.sqlite3")
    assert settings["DEBUG"] is False
    assert settings["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1"]
    assert "backfill" in settings["INSTALLED_APPS"]
    assert settings["DEFAULT_AUTO_FIELD"] == "django.db.models.AutoField"


def test_example_site_debug_and_hosts_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG", "true")
    monkeypatch.setenv("ALLOWED_HOSTS", "blog.example,.example.org")

    settings = runpy.run_path(str(EXAMPLE_SETTINGS))

    assert settings["DEBUG"] is True
    assert settings["ALLOWED_HOSTS"] == ["blog.example", ".example.org"]


def test_test_settings_keep_sqlite_test_database_in_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'suite.sqlite3'}")

    settings = runpy.run_path(str(TEST_SETTINGS))

    database = settings["DATABASES"]["default"]
    assert database["NAME"] == str(tmp_path / "suite.sqlite3")
    assert database["TEST"] == {"NAME": str(tmp_path / "test_suite.sqlite3")}


def test_test_settings_read_a_postgres_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5999/backfill")

    settings = runpy.run_path(str(TEST_SETTINGS))

    database = settings["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["NAME"], database["PORT"]) == ("backfill", 5999)
    assert "TEST" not in database


@pytest.mark.django_db
def test_the_suite_runs_on_the_database_url_it_was_given() -> None:
    settings = runpy.run_path(str(TEST_SETTINGS))["DATABASES"]["default"]
    assert connection.settings_dict["ENGINE"] == settings["ENGINE"]
    assert connection.settings_dict["NAME"] != settings["NAME"]  # pytest-django's test database


# -- pgcluster: choosing the PostgreSQL server ------------------------------------------------


class Probe:
    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, url: str) -> bool:
        self.asked.append(url)
        return self.answers


def test_choose_prefers_a_postgres_database_url() -> None:
    probe = Probe(answers=True)
    env = {"DATABASE_URL": "postgresql://app:pw@db:5432/app"}

    assert pgcluster.choose(env, probe) == pgcluster.Choice("env", env["DATABASE_URL"])
    assert probe.asked == []


def test_choose_ignores_a_sqlite_database_url_and_uses_the_local_server() -> None:
    probe = Probe(answers=True)
    env = {"DATABASE_URL": "sqlite:////tmp/x.sqlite3"}

    choice = pgcluster.choose(env, probe)

    assert choice == pgcluster.Choice("local", "postgres://postgres@127.0.0.1:5432/backfill")
    assert probe.asked == ["postgres://postgres@127.0.0.1:5432/postgres"]


def test_choose_probes_the_url_it_is_told() -> None:
    probe = Probe(answers=True)
    env = {"BACKFILL_TEST_PROBE_URL": "postgres://me@127.0.0.1:6543/postgres"}

    assert pgcluster.choose(env, probe) == pgcluster.Choice(
        "local", "postgres://me@127.0.0.1:6543/backfill"
    )
    assert probe.asked == ["postgres://me@127.0.0.1:6543/postgres"]


def test_choose_names_the_local_database_after_backfill_test_dbname() -> None:
    env = {"BACKFILL_TEST_DBNAME": "backfill_dj61_py313", "DATABASE_URL": "sqlite:///x"}

    assert pgcluster.choose(env, Probe(answers=True)) == pgcluster.Choice(
        "local", "postgres://postgres@127.0.0.1:5432/backfill_dj61_py313"
    )


def test_choose_starts_a_throwaway_cluster_when_nothing_answers() -> None:
    assert pgcluster.choose({}, Probe(answers=False)) == pgcluster.Choice("throwaway")


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_choose_force_throwaway_beats_everything(value: str) -> None:
    probe = Probe(answers=True)
    env = {"BACKFILL_TEST_FORCE_THROWAWAY": value, "DATABASE_URL": "postgres://a@b/c"}

    assert pgcluster.choose(env, probe) == pgcluster.Choice("throwaway")
    assert probe.asked == []


@pytest.mark.parametrize("value", ["", "0", "no"])
def test_choose_force_throwaway_off(value: str) -> None:
    env = {"BACKFILL_TEST_FORCE_THROWAWAY": value, "DATABASE_URL": "postgres://a@b/c"}
    assert pgcluster.choose(env, Probe(answers=False)) == pgcluster.Choice(
        "env", "postgres://a@b/c"
    )


def test_describe_never_shows_the_password() -> None:
    assert (
        pgcluster.describe("postgres://app:s3cret@db.internal:5432/app")
        == "postgres://app@db.internal:5432/app"
    )
    assert pgcluster.describe("postgres://db/app") == "postgres://db/app"


def test_probe_says_no_quickly_when_nothing_listens() -> None:
    port = pgcluster.free_port()
    assert pgcluster.probe(f"postgres://postgres@127.0.0.1:{port}/postgres") is False


# -- pgcluster: the throwaway cluster, for real -------------------------------------------------


def run_pgcluster(*command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PGCLUSTER), "run", "--", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def pg_binaries() -> Path:
    try:
        return pgcluster.find_bindir()
    except pgcluster.ClusterError as error:
        pytest.skip(str(error))


def test_run_uses_a_throwaway_cluster_and_removes_it(
    pg_binaries: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_TEST_FORCE_THROWAWAY", "1")
    # A nox session names its own database; this test is about the default name.
    monkeypatch.delenv("BACKFILL_TEST_DBNAME", raising=False)
    child = (
        "import os, sys, psycopg\n"
        "url = os.environ['DATABASE_URL']\n"
        "with psycopg.connect(url) as conn:\n"
        "    print(url, conn.execute('SELECT current_database()').fetchone()[0])\n"
        "sys.exit(3)\n"
    )

    result = run_pgcluster(sys.executable, "-c", child, env=dict(os.environ))

    assert result.returncode == 3, result.stderr
    url, dbname = result.stdout.split()
    assert re.fullmatch(r"postgres://postgres@127\.0\.0\.1:\d+/backfill", url)
    assert dbname == "backfill"
    (line,) = result.stderr.splitlines()
    match = re.fullmatch(
        rf"pgcluster: PostgreSQL {re.escape(url)} from a throwaway cluster "
        r"\((?P<bindir>[^,]+), (?P<base>[^,]+), started in [\d.]+ s; removed afterwards\)",
        line,
    )
    assert match, line
    assert not Path(match["base"]).exists()
    assert pgcluster.probe(url) is False


def test_run_names_database_url_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKFILL_TEST_FORCE_THROWAWAY", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgres://app:s3cret@127.0.0.1:1/app")

    result = run_pgcluster(
        sys.executable,
        "-c",
        "import os; print(os.environ['DATABASE_URL'])",
        env=dict(os.environ),
    )

    assert result.returncode == 0
    assert result.stdout == "postgres://app:s3cret@127.0.0.1:1/app\n"
    assert (
        result.stderr == "pgcluster: PostgreSQL postgres://app@127.0.0.1:1/app from DATABASE_URL\n"
    )


def test_cluster_settings_reach_the_server(pg_binaries: Path) -> None:
    import psycopg

    with pgcluster.Cluster(settings={"work_mem": "7MB", "wal_level": "replica"}) as cluster:
        with psycopg.connect(cluster.url()) as conn:
            settings: dict[str, str] = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings "
                    "WHERE name IN ('work_mem', 'wal_level', 'listen_addresses', 'port')"
                ).fetchall()
            )
        base_dir = cluster.base_dir
    assert settings == {
        "work_mem": "7168",
        "wal_level": "replica",
        "listen_addresses": "127.0.0.1",
        "port": str(cluster.port),
    }
    assert not base_dir.exists()
