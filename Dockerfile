# The example site with the backfill app. `docker compose up` runs it against PostgreSQL 15;
# any manage.py command runs as `docker compose run --rm web COMMAND ...`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --gid 10001 app && useradd --create-home --uid 10001 --gid 10001 app

WORKDIR /app

COPY requirements.txt requirements-mysql.txt ./
RUN pip install -r requirements.txt

# MYSQL=1 (docker-compose.mariadb.yml) adds mysqlclient (requirements-mysql.txt), built against
# libmariadb; gcc goes again after the build, libmariadb stays for mysqlclient to load.
ARG MYSQL=""
RUN if [ -n "$MYSQL" ]; then \
        apt-get update && apt-get install -y --no-install-recommends pkg-config libmariadb-dev gcc \
        && pip install -r requirements-mysql.txt \
        && apt-get purge -y gcc && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*; \
    fi

COPY --chown=app:app . .
# The default SQLite database (db.sqlite3) is written next to manage.py.
RUN chown app:app /app

USER 10001:10001

EXPOSE 8000
ENTRYPOINT ["python", "manage.py"]
CMD ["runserver", "0.0.0.0:8000"]
