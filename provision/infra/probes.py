"""Host-side probes: does api_url answer HTTP, does db_url accept a PostgreSQL connection."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import interrupts

# A probe returns None when the check passes, else a short reason it failed.
Probe = Callable[[], "str | None"]


def http_probe(url: str, *, timeout: float = 3.0) -> Probe:
    """Passes when `url` answers with any HTTP status below 500 (honours HTTP_PROXY/NO_PROXY)."""

    def check() -> str | None:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"{url} does not answer: {reason}"
        return None if status < 500 else f"{url} answers HTTP {status}"

    return check


def postgres_probe(url: str, *, timeout: float = 3.0) -> Probe:
    """Passes when `url` accepts a connection and answers `SELECT 1`; the reason never holds the password."""

    def check() -> str | None:
        import psycopg  # deferred: only probing needs it

        try:
            with psycopg.connect(url, connect_timeout=max(1, int(timeout))) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"database does not accept connections: {first}"
        return None

    return check


def postgres_ping(host: str, port: int, *, timeout: float = 2.0) -> Probe:
    """Passes when a PostgreSQL server at host:port accepts connections, as `pg_isready` decides (libpq's
    PQping): it answers a startup message with an authentication request, or with any error but
    57P03 "the database system is starting up". Needs no password; a proxy that accepts and then drops
    the connection (Docker's, before the server listens) does not pass."""

    def check() -> str | None:
        user = b"provision-ping"
        params = b"user\0" + user + b"\0database\0" + user + b"\0\0"
        startup = (8 + len(params)).to_bytes(4, "big") + (196608).to_bytes(4, "big") + params  # protocol 3.0
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                sock.sendall(startup)
                kind = sock.recv(1)
                if kind == b"R":
                    return None
                if kind != b"E":
                    return f"{host}:{port} closed the connection (the server is not listening yet)"
                length = int.from_bytes(_recv_exactly(sock, 4), "big")
                body = _recv_exactly(sock, max(0, min(length - 4, 8192)))
        except OSError as exc:
            return f"{host}:{port} does not accept connections: {exc}"
        fields = {chunk[:1]: chunk[1:].decode(errors="replace") for chunk in body.split(b"\0") if chunk}
        if fields.get(b"C") == "57P03":
            return f"{host}:{port}: {fields.get(b'M', 'the database system is starting up')}"
        return None

    return check


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        data += chunk
    return data


@dataclass(frozen=True)
class WaitOutcome:
    ok: bool
    elapsed: float
    failures: Mapping[str, str]


def wait_for(
    probes: Mapping[str, Probe],
    *,
    timeout: float,
    interval: float = 0.25,
    max_interval: float = 2.0,
    pace: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = interrupts.sleep,
    together: bool = False,
) -> WaitOutcome:
    """Run `probes` until all pass or `timeout` seconds elapse; backs off from `interval` to `max_interval`.
    With `pace`, the pause is instead that share of the time waited so far (between `interval` and
    `max_interval`): a wait never overshoots the moment things became ready by much more than that share.

    Probes that passed are not run again. With `together`, each round runs its probes at the same time, one
    thread each (for probes that wait on the network, not on each other); a probe's exception is raised as
    when they run in turn, the first in `probes`' order. Never raises for a failing probe: the outcome says
    which failed; raises Interrupted when the run is interrupted.
    """
    def waited(run: Callable[[list[Probe]], list[str | None]]) -> WaitOutcome:
        return _wait(probes, run, timeout=timeout, interval=interval, max_interval=max_interval, pace=pace,
                     clock=clock, sleep=sleep)

    if not together or len(probes) < 2:
        return waited(lambda due: [probe() for probe in due])
    with ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="probe") as pool:
        return waited(lambda due: list(pool.map(_called, due)))


def _called(probe: Probe) -> str | None:
    return probe()


def _wait(probes: Mapping[str, Probe], run: Callable[[list[Probe]], list[str | None]], *, timeout: float,
          interval: float, max_interval: float, pace: float | None, clock: Callable[[], float],
          sleep: Callable[[float], None]) -> WaitOutcome:
    """wait_for's rounds, each running the pending probes with `run` (their reasons in their order)."""
    start = clock()
    pending = dict(probes)
    failures: dict[str, str] = {}
    delay = interval
    while True:
        interrupts.check()
        due = list(pending.items())
        for (name, _), reason in zip(due, run([probe for _, probe in due]), strict=True):
            if reason is None:
                pending.pop(name)
                failures.pop(name, None)
            else:
                failures[name] = reason
        elapsed = clock() - start
        if not pending:
            return WaitOutcome(True, elapsed, {})
        if elapsed >= timeout:
            return WaitOutcome(False, elapsed, dict(failures))
        if pace is not None:
            delay = min(max(interval, pace * elapsed), max_interval)
        sleep(min(delay, max(0.0, timeout - elapsed)))
        delay = min(delay * 1.5, max_interval)
