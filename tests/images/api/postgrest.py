#!/usr/bin/env python3
"""A small stand-in for PostgREST (postgrest/postgrest), for tests without a registry.

Env: PGRST_DB_URI, PGRST_DB_SCHEMAS (first of the comma list, default "public"),
PGRST_DB_ANON_ROLE (each request runs SET LOCAL ROLE to it, when set),
PGRST_SERVER_HOST (default all IPv4 interfaces), PGRST_SERVER_PORT (default 3000).

  GET /         OpenAPI-style root listing the schema's tables (503 if the db is down)
  GET /<table>  rows as JSON; ?select=a,b  ?col=eq.1 (eq neq gt gte lt lte like ilike
                is in, optionally not.)  ?order=a.desc,b  ?limit=  ?offset=
  POST /<table> insert a JSON object or array; 201, rows back with
                "Prefer: return=representation"

Like PostgREST, it serves only once its connection worker has reached the database: at start and after
a request finds the connection lost, it retries with exponential backoff (1, 2, 4, ... 32 s), and until
then every request is a 503 PGRST000. So an api started before its db is ready answers only at the next
retry; a stack that starts both at once must expect that. Each request then opens its own connection.
Rows are turned into JSON by PostgreSQL (json_agg), as PostgREST does.

Like PostgREST, it serves only the tables in its schema cache: loaded when it first reaches the
database, and loaded again on `NOTIFY pgrst, 'reload schema'` (its db-channel, LISTENed on by a
thread that reconnects, reloading on every reconnect) or SIGUSR1. A table created since is a 404
(PGRST205) until then.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg2
from psycopg2 import sql

VERSION = "12.0.2-standin"
DB_URI = os.environ.get("PGRST_DB_URI", "postgresql://")
SCHEMA = os.environ.get("PGRST_DB_SCHEMAS", os.environ.get("PGRST_DB_SCHEMA", "public")).split(",")[0].strip()
ANON_ROLE = os.environ.get("PGRST_DB_ANON_ROLE", "")
HOST = os.environ.get("PGRST_SERVER_HOST", "!4")
PORT = int(os.environ.get("PGRST_SERVER_PORT", "3000"))
OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "like": "LIKE", "ilike": "ILIKE"}
# PostgreSQL error class/code -> HTTP status, as PostgREST maps them (longest prefix wins).
STATUS = {"08": 503, "09": 500, "0L": 403, "0P": 403, "23503": 409, "23505": 409, "25006": 405,
          "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500, "3B": 500, "40": 500, "53": 503,
          "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500, "P0001": 400, "P0": 500,
          "XX": 500, "42883": 404, "42P01": 404, "42P17": 500, "42501": 401}


class ApiError(Exception):
    def __init__(self, status: int, code: str | None, message: str, details: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, {"code": code, "details": details, "hint": hint, "message": message}


def bad_request(message: str, details: str | None = None) -> NoReturn:
    raise ApiError(400, "PGRST100", message, details)


def run(query: sql.Composable, params: Any = None) -> tuple[Any, ...] | None:
    """Run one statement in its own transaction, as the anon role; return the first row."""
    try:
        conn = psycopg2.connect(DB_URI, connect_timeout=5, application_name="postgrest")
    except psycopg2.OperationalError as e:
        CONNECTION.recover()
        raise ApiError(503, "PGRST000", "Database connection error. Retrying the connection.", str(e).strip()) from e
    try:
        with conn, conn.cursor() as cur:
            if ANON_ROLE:
                cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(ANON_ROLE)))
            cur.execute("SELECT set_config('search_path', %s, true)", (sql.Identifier(SCHEMA).as_string(cur),))
            cur.execute(query, params)
            return cur.fetchone() if cur.description else None
    except psycopg2.Error as e:
        code = e.pgcode
        if code is None:  # the connection broke: no SQLSTATE
            CONNECTION.recover()
            raise ApiError(503, "PGRST001", "Database client error. Retrying the connection.", str(e).strip()) from e
        status = next((STATUS[code[:n]] for n in (5, 2) if code[:n] in STATUS), 400)
        diag = e.diag
        raise ApiError(status, code, diag.message_primary or str(e), diag.message_detail, diag.message_hint) from e
    finally:
        conn.close()


class Connection:
    """PostgREST's connection worker: `up` once the database was reached; one worker at a time retries
    with exponential backoff (1 s doubling to 32 s), as PostgREST's automatic connection recovery does."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.lock = threading.Lock()
        self.working = False

    def recover(self) -> None:
        with self.lock:
            self.up.clear()
            if self.working:
                return
            self.working = True
        threading.Thread(target=self._work, daemon=True, name="connection-worker").start()

    def _work(self) -> None:
        delay = 1
        while True:
            try:
                psycopg2.connect(DB_URI, connect_timeout=5, application_name="postgrest-worker").close()
                break
            except psycopg2.Error as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(f"{first}; Attempting to reconnect to the database in {delay} seconds...", flush=True)
                time.sleep(delay)
                delay = min(delay * 2, 32)
        print("Connection successful", flush=True)
        with self.lock:
            self.working = False
            self.up.set()

    def require(self) -> None:
        if not self.up.is_set():
            raise ApiError(503, "PGRST000", "Database connection error. Retrying the connection.")


CONNECTION = Connection()


class SchemaCache:
    """The tables PostgREST knows; None until the database was first reached."""

    def __init__(self) -> None:
        self.tables: frozenset[str] | None = None
        self.lock = threading.Lock()

    def load(self, cursor: Any = None) -> None:
        query = "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
        if cursor is not None:
            cursor.execute(query, (SCHEMA,))
            names = frozenset(r[0] for r in cursor.fetchall())
        else:
            conn = psycopg2.connect(DB_URI, connect_timeout=5, application_name="postgrest-schema")
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(query, (SCHEMA,))
                    names = frozenset(r[0] for r in cur.fetchall())
            finally:
                conn.close()
        with self.lock:
            self.tables = names

    def require(self, table: str) -> None:
        with self.lock:
            tables = self.tables
        if tables is None:
            try:
                self.load()
            except psycopg2.Error as e:
                raise ApiError(503, "PGRST002", "Could not query the database for the schema cache. Retrying.",
                               str(e).strip()) from e
            with self.lock:
                tables = self.tables
        if tables is not None and table not in tables:
            raise ApiError(404, "PGRST205", f"Could not find the table '{SCHEMA}.{table}' in the schema cache",
                           hint="Reload the schema cache: NOTIFY pgrst, 'reload schema'")

    def listen(self) -> None:
        """LISTEN pgrst forever: reload on 'reload schema' (or an empty payload) and on every reconnect."""
        while True:
            try:
                conn = psycopg2.connect(DB_URI, connect_timeout=5, application_name="postgrest-listener")
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("LISTEN pgrst")
                    self.load(cur)
                    while True:
                        if select.select([conn], [], [], 5) != ([], [], []):
                            conn.poll()
                            reload = False
                            while conn.notifies:
                                reload |= conn.notifies.pop(0).payload in ("", "reload schema")
                            if reload:
                                self.load(cur)
                                print("Schema cache reloaded", flush=True)
            except psycopg2.Error:
                time.sleep(1)


CACHE = SchemaCache()


def openapi(host: str) -> dict[str, Any]:
    row = run(sql.SQL("""
        SELECT coalesce(json_object_agg(t.table_name, (
                 SELECT coalesce(json_object_agg(c.column_name, json_build_object('type', c.data_type)
                                 ORDER BY c.ordinal_position), '{}')
                 FROM information_schema.columns c
                 WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name)
               ORDER BY t.table_name), '{}')
        FROM information_schema.tables t WHERE t.table_schema = %s"""), (SCHEMA,))
    tables: dict[str, dict[str, Any]] = row[0] if row else {}
    paths: dict[str, Any] = {"/": {"get": {"tags": ["Introspection"], "summary": "OpenAPI description"}}}
    for name in tables:
        paths[f"/{name}"] = {"get": {"tags": [name]}, "post": {"tags": [name]}}
    return {"swagger": "2.0",
            "info": {"title": "PostgREST API", "description": "standard public schema", "version": VERSION},
            "host": host, "basePath": "/", "schemes": ["http"],
            "consumes": ["application/json"], "produces": ["application/json"], "paths": paths,
            "definitions": {name: {"type": "object", "properties": cols} for name, cols in tables.items()}}


def filter_clause(column: str, expr: str) -> tuple[sql.Composable, list[Any]]:
    negate = expr.startswith("not.")
    op, _, value = expr[4:].partition(".") if negate else expr.partition(".")
    col = sql.Identifier(column)
    clause: sql.Composable
    params: list[Any] = []
    if op in OPERATORS:
        if op in ("like", "ilike"):
            value = value.replace("*", "%")
        clause = sql.SQL("{} {} %s").format(col, sql.SQL(OPERATORS[op]))
        params = [value]
    elif op == "is" and value.lower() in ("null", "true", "false", "unknown"):
        clause = sql.SQL("{} IS {}").format(col, sql.SQL(value.upper()))
    elif op == "in" and value.startswith("(") and value.endswith(")"):
        items = [v.strip().strip('"') for v in value[1:-1].split(",") if v.strip()]
        clause = sql.SQL("{} IN %s").format(col) if items else sql.SQL("false")
        params = [tuple(items)] if items else []
    else:
        bad_request(f'"failed to parse filter ({expr})" (line 1, column 1)', f"unknown operator in {column}={expr}")
    return (sql.SQL("NOT ({})").format(clause) if negate else clause), params


def select_query(table: str, query: str) -> tuple[sql.Composable, list[Any]]:
    columns: sql.Composable = sql.SQL("*")
    where: list[sql.Composable] = []
    order: list[sql.Composable] = []
    tail: list[sql.Composable] = []
    params: list[Any] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "select":
            names = [c.strip() for c in value.split(",") if c.strip()]
            if names and names != ["*"]:
                columns = sql.SQL(", ").join(
                    sql.SQL("{} AS {}").format(sql.Identifier(c.partition(":")[2]), sql.Identifier(c.partition(":")[0]))
                    if ":" in c else sql.Identifier(c) for c in names)
        elif key == "order":
            for term in filter(None, value.split(",")):
                col, *mods = term.split(".")
                if not set(mods) <= {"asc", "desc", "nullsfirst", "nullslast"}:
                    bad_request(f'"failed to parse order ({value})" (line 1, column 1)')
                words = [m.upper() for m in mods if m in ("asc", "desc")]
                words += ["NULLS " + m[5:].upper() for m in mods if m.startswith("nulls")]
                order.append(sql.SQL(" ").join([sql.Identifier(col), *map(sql.SQL, words)]))
        elif key in ("limit", "offset"):
            if not value.isdigit():
                bad_request(f'"failed to parse {key} ({value})" (line 1, column 1)')
            tail.append(sql.SQL(f"{key.upper()} {int(value)}"))
        else:
            clause, more = filter_clause(key, value)
            where.append(clause)
            params += more
    query_sql = sql.SQL("SELECT {} FROM {}").format(columns, sql.Identifier(SCHEMA, table))
    if where:
        query_sql += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
    if order:
        query_sql += sql.SQL(" ORDER BY ") + sql.SQL(", ").join(order)
    query_sql += sql.SQL(" ").join([sql.SQL(""), *tail])
    return sql.SQL("SELECT coalesce(json_agg(_t), '[]')::text, count(*) FROM ({}) _t").format(query_sql), params


def insert_query(table: str, rows: list[Any], returning: bool) -> sql.Composable:
    if not all(isinstance(r, dict) for r in rows):
        raise ApiError(400, "PGRST102", "Empty or invalid json")
    keys = list(rows[0]) if rows else []
    if any(set(r) != set(keys) for r in rows):
        raise ApiError(400, "PGRST102", "All object keys must match")
    target = sql.Identifier(SCHEMA, table)
    cols = sql.SQL(", ").join(map(sql.Identifier, keys))
    if keys:
        template = sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM json_populate_recordset(NULL::{t}, %(body)s::json)")
    else:  # {} or []: a row of defaults per object
        template = sql.SQL("INSERT INTO {t} SELECT FROM json_array_elements(%(body)s::json)")
    insert = template.format(t=target, c=cols)
    if returning:
        return sql.SQL("WITH _ins AS ({} RETURNING *) SELECT coalesce(json_agg(_ins), '[]')::text,"
                       " count(*) FROM _ins").format(insert)
    return sql.SQL("WITH _ins AS ({} RETURNING 1) SELECT NULL, count(*) FROM _ins").format(insert)


class Server(ThreadingHTTPServer):
    daemon_threads = True  # open keep-alive connections do not delay a shutdown


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return f"postgrest/{VERSION}"

    def send(self, status: int, body: str, content_type: str = "application/json; charset=utf-8",
             headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        for name, value in {"Content-Type": content_type, "Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_api(self, method: str) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path).strip("/")
        try:
            CONNECTION.require()
            if method == "GET" and not path:
                host = self.headers.get("Host", f"{HOST}:{PORT}")
                self.send(200, json.dumps(openapi(host)), "application/openapi+json; charset=utf-8")
                return
            if not path or "/" in path:
                raise ApiError(404, None, "Not Found")
            CACHE.require(path)
            if method == "GET":
                query, params = select_query(path, url.query)
                rows, count = run(query, params) or ("[]", 0)
                self.send(200, rows, headers={"Content-Range": f"0-{count - 1}/*" if count else "*/*"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except ValueError as e:
                raise ApiError(400, "PGRST102", "Empty or invalid json", str(e)) from e
            if not isinstance(body, (dict, list)):
                raise ApiError(400, "PGRST102", "Empty or invalid json")
            returning = "return=representation" in self.headers.get("Prefer", "")
            objects = body if isinstance(body, list) else [body]
            rows, _ = run(insert_query(path, objects, returning), {"body": json.dumps(objects)}) or (None, 0)
            self.send(201, rows if returning else "", headers={"Content-Range": "*/*"})
        except ApiError as e:
            self.send(e.status, json.dumps(e.body))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (unsupported method, bad request line) as JSON."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self.send(code, json.dumps({"code": None, "details": explain, "hint": None,
                                    "message": message or self.responses.get(code, ("",))[0]}))

    def do_GET(self) -> None:
        self.handle_api("GET")

    def do_HEAD(self) -> None:
        self.handle_api("GET")

    def do_POST(self) -> None:
        self.handle_api("POST")

    def log_message(self, format: str, *args: Any) -> None:
        sys.stdout.write(f"{self.address_string()} - - [{self.log_date_time_string()}] {format % args}\n")
        sys.stdout.flush()


def main() -> None:
    # PostgREST's special hosts: "*"/"*4"/"!4" all IPv4, "*6"/"!6" all IPv6.
    host = {"*": "0.0.0.0", "*4": "0.0.0.0", "!4": "0.0.0.0", "*6": "::", "!6": "::"}.get(HOST, HOST)
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = Server((host, PORT), Handler)

    def stop(signum: int, _frame: Any) -> NoReturn:
        print(f"Received {signal.Signals(signum).name}, shutting down", flush=True)
        raise SystemExit(0)

    # As PID 1 the kernel ignores SIGTERM unless a handler is installed.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: threading.Thread(target=CACHE.load, daemon=True).start())
    CONNECTION.recover()
    threading.Thread(target=CACHE.listen, daemon=True, name="listener").start()
    print(f"Listening on {host}:{PORT} (schema {SCHEMA}, anon role {ANON_ROLE or '-'})", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
