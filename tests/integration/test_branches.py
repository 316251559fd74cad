"""Branches (issue 23) on the real engine: a clone of a source taking writes, branches recorded as branches
(plan, prune, list, branches, gc, destroy of a parent), reset, masking, and a branch's own secrets."""

from __future__ import annotations

import threading
import time

import httpx
import psycopg

from tests.conftest import Sandbox, sql


def _urls(sandbox: Sandbox, project: str) -> tuple[str, str]:
    out = sandbox.cli("outputs", f"--project={project}", "--format=json").json()
    return str(out["api_url"]), str(out["db_url"])


def _count(db_url: str) -> int:
    return int(sql(db_url, "select count(*) from items")[0][0])


class Writer(threading.Thread):
    """Inserts a row into `items` every few milliseconds until stopped; `written`: how many committed."""

    def __init__(self, db_url: str) -> None:
        super().__init__(daemon=True)
        self.db_url, self.written, self.stop = db_url, 0, threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.db_url, autocommit=True, connect_timeout=10) as conn:
            while not self.stop.is_set():
                conn.execute("insert into items (name) values ('written meanwhile')")
                self.written += 1
                time.sleep(0.005)

    def __enter__(self) -> Writer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(timeout=30)


def _seed(db_url: str, rows: int) -> None:
    sql(db_url, "create table items (id serial primary key, name text, email text)")
    sql(db_url, "grant select on items to anon")
    sql(db_url, "insert into items (name, email) select 'item ' || g, 'user' || g || '@example.com' "
                "from generate_series(1, %s) g", rows)


def test_a_clone_of_a_source_taking_writes_is_consistent(sandbox: Sandbox) -> None:
    """The backup's row counts come from the dump's own snapshot: rows arriving meanwhile make no mismatch."""
    sandbox.cli("provision", "--project=shop")
    _, source_url = _urls(sandbox, "shop")
    _seed(source_url, 2000)
    with Writer(source_url) as writer:
        while writer.written < 20:
            time.sleep(0.05)
        cloned = sandbox.cli("clone", "--project=shop", "--to=shop-pr-1", "--json").json()
        made = sandbox.cli("backup", "--project=shop", "--json").json()
    copied = cloned["details"]["row_counts"]["public.items"]
    assert 2020 <= copied < 2000 + writer.written  # a point in the middle of the writes
    assert made["details"]["row_counts"]["public.items"] >= copied
    api_url, branch_url = _urls(sandbox, "shop-pr-1")
    assert _count(branch_url) == copied
    assert _count(source_url) == 2000 + writer.written  # the source kept every write
    assert len(httpx.get(f"{api_url}/items", params={"select": "id"}, timeout=10).json()) == copied
