#!/usr/bin/env python3
# ruff: noqa: E501  (the SQL of each shape reads best on one line)
"""How to send a chunk's changed rows to MySQL/MariaDB in one statement: the measurement.

    .venv/bin/python scripts/mysql_write_shapes.py [ROWS [CHUNK [one,union,values,json]]]

Creates table ``t`` in database ``backfill_shapes`` at 127.0.0.1:3306 (root, or MYSQL_HOST,
MYSQL_PORT, MYSQL_USER, MYSQL_PASSWORD), fills it with ROWS random rows (default 1,000,000), then
for each shape rewrites ``author`` in keyset chunks of CHUNK rows (default 10,000), each chunk
read ``FOR UPDATE`` and written with one ``UPDATE … JOIN`` of a ``UNION ALL`` derived table, a
``VALUES`` table or a ``JSON_TABLE``, and prints rows/s next to one ``UPDATE`` of the whole table.
docs/mysql.md quotes a run; backfill uses the fastest, JSON_TABLE.
"""

import json
import os
import sys
import time

import MySQLdb

server = MySQLdb.connect(
    host=os.environ.get("MYSQL_HOST", "127.0.0.1"),
    port=int(os.environ.get("MYSQL_PORT", "3306")),
    user=os.environ.get("MYSQL_USER", "root"),
    password=os.environ.get("MYSQL_PASSWORD", ""),
    autocommit=True,
)
server.cursor().execute("CREATE DATABASE IF NOT EXISTS backfill_shapes")
server.select_db("backfill_shapes")
conn = server
c = conn.cursor()
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
B = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000


def reset():
    c.execute("DROP TABLE IF EXISTS t")
    c.execute(
        "CREATE TABLE t (id int PRIMARY KEY AUTO_INCREMENT, title varchar(255) NOT NULL, author varchar(60) NOT NULL) ENGINE=InnoDB"
    )
    digits = (
        "(SELECT 0 d UNION ALL " + " UNION ALL ".join(f"SELECT {i}" for i in range(1, 10)) + ")"
    )
    c.execute(
        "INSERT INTO t (title, author) SELECT MD5(RAND()), MD5(RAND()) FROM "
        + ", ".join(f"{digits} d{i}" for i in range(7))
        + f" LIMIT {N}"
    )
    c.execute("ANALYZE TABLE t")
    c.fetchall()


def run(name, build):
    reset()
    t0 = time.monotonic()
    client = 0.0
    for lo in range(0, N, B):
        c.execute("BEGIN")
        c.execute(
            "SELECT id, author FROM t WHERE id > %s AND id <= %s ORDER BY id FOR UPDATE",
            (lo, lo + B),
        )
        rows = c.fetchall()
        t1 = time.monotonic()
        sql, params = build([(r[0], r[1].upper()) for r in rows], lo, lo + B)
        client += time.monotonic() - t1
        c.execute(sql, params)
        c.execute("COMMIT")
    el = time.monotonic() - t0
    c.execute("SELECT COUNT(*) FROM t WHERE author <> UPPER(author) COLLATE utf8mb4_bin")
    bad = c.fetchone()[0]
    print(
        f"{name:12s} {N / el:9,.0f} rows/s  {el:6.1f}s  (client build {client:.1f}s) unchanged={bad}",
        flush=True,
    )


def union(rows, lo, hi):
    sel = " UNION ALL ".join(["SELECT %s, %s"] * len(rows))
    sel = "SELECT %s AS _k, %s AS _v0" + sel[len("SELECT %s, %s") :]
    return (
        f"UPDATE t JOIN ({sel}) v ON t.id = v._k SET t.author = v._v0 WHERE t.id > %s AND t.id <= %s",
        [p for r in rows for p in r] + [lo, hi],
    )


def values(rows, lo, hi):
    vals = ", ".join(["(%s, %s)"] * len(rows))
    return (
        f"UPDATE t JOIN (WITH v(_k, _v0) AS (VALUES {vals}) SELECT * FROM v) v ON t.id = v._k SET t.author = v._v0 WHERE t.id > %s AND t.id <= %s",
        [p for r in rows for p in r] + [lo, hi],
    )


def jt(rows, lo, hi):
    doc = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    return (
        "UPDATE t JOIN JSON_TABLE(%s, '$[*]' COLUMNS (_k int PATH '$[0]', _v0 longtext PATH '$[1]')) v ON t.id = v._k SET t.author = v._v0 WHERE t.id > %s AND t.id <= %s",
        [doc, lo, hi],
    )


def one_update():
    reset()
    t0 = time.monotonic()
    c.execute("UPDATE t SET author = UPPER(author)")
    el = time.monotonic() - t0
    print(f"{'one UPDATE':12s} {N / el:9,.0f} rows/s  {el:6.1f}s", flush=True)


c.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_TRANS_TABLES')")
which = sys.argv[3].split(",") if len(sys.argv) > 3 else ["one", "union", "values", "json"]
for w in which:
    {
        "one": one_update,
        "union": lambda: run("UNION ALL", union),
        "values": lambda: run("VALUES", values),
        "json": lambda: run("JSON_TABLE", jt),
    }[w]()
