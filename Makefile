# One target per habit. Everything runs from .venv/bin, so nothing needs an activated venv.
#   make demo   the example site on SQLite (or DATABASE_URL): migrate, seed, run a backfill
#   make test   lint (the manual's mkdocs build too), then the suite on PostgreSQL, SQLite, MariaDB
#   make test-matrix   the suite per Django x Python x database (noxfile.py)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements-installed
SQLITE_TEST_URL := sqlite:///$(CURDIR)/.test-sqlite.sqlite3

.PHONY: venv demo test test-pg test-sqlite test-mariadb test-matrix dist lint format bench seed-4m

venv: $(STAMP)

# Re-installs only when a requirements file changed since the last install.
$(STAMP): requirements.txt requirements-test.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -r requirements-dev.txt
	touch $@

demo: venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_blogposts --rows 200000 --truncate
	$(BIN)/python manage.py backfill_iterate blog.BlogPost --only author --progress bar --restart

# Every database runs even when one fails; the target fails if any did.
test: lint
	@status=0; \
	$(MAKE) --no-print-directory test-pg || status=1; \
	$(MAKE) --no-print-directory test-sqlite || status=1; \
	$(MAKE) --no-print-directory test-mariadb || status=1; \
	exit $$status

# PostgreSQL from DATABASE_URL, else 127.0.0.1:5432, else a throwaway cluster (scripts/pgcluster.py).
test-pg: venv
	$(BIN)/python scripts/pgcluster.py run -- $(BIN)/python -m pytest

test-sqlite: venv
	DATABASE_URL=$(SQLITE_TEST_URL) $(BIN)/python -m pytest

# MariaDB/MySQL from DATABASE_URL (a mysql:// URL), else 127.0.0.1:3306, else a throwaway
# server (scripts/mariadbserver.py), else skipped with one line saying why. mysqlclient is
# installed here, not by make venv: it builds only where pkg-config and libmariadb-dev are,
# and make demo must not need them.
test-mariadb: venv
	@if $(BIN)/python -c "import MySQLdb" 2>/dev/null || \
	    $(BIN)/python -m pip install --disable-pip-version-check --quiet -r requirements-mysql.txt; then \
	    $(BIN)/python scripts/mariadbserver.py run -- $(BIN)/python -m pytest; \
	else \
	    echo "test-mariadb: skipped: mysqlclient did not build (install pkg-config and libmariadb-dev; .ci/run does)"; \
	fi

# Every nox session (each in .nox/ with its own Python and Django); NOX_ARGS="-t extra" skips the
# combination make test runs, NOX_ARGS='-s tests-6.1-py3.13-sqlite -- -x' runs one.
test-matrix: venv
	$(BIN)/nox $(NOX_ARGS)

# The release files in dist/: a wheel and an sdist, checked as PyPI would render them.
dist: venv
	rm -rf dist
	$(BIN)/python -m build
	$(BIN)/twine check --strict dist/*

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	DATABASE_URL=sqlite:///$(CURDIR)/.lint-sqlite.sqlite3 $(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/mkdocs build --strict --quiet

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# PostgreSQL from DATABASE_URL or 127.0.0.1:5432, database backfill_bench; e.g.
#   make bench BENCH_ARGS="--rows 4000000 --check"
bench: venv
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -r requirements-bench.txt
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

# The 4,000,000-row dataset in DATABASE_URL (default: the example site's SQLite file), replacing
# whatever blog_blogpost held.
seed-4m: venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_blogposts --rows 4000000 --truncate
