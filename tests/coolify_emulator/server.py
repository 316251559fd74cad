"""The HTTP side: a ThreadingHTTPServer running Coolify's middleware chain.

Order per request: faults → route (the 404 fallback: throttle per address) → auth:sanctum → throttle per
user (Laravel's middleware priority puts auth before the throttle: see ``ApiApp.handle``) → api.token.team →
ApiAllowed → api.sensitive → api.ability → controller. Nothing here logs request headers, so the bearer
token never reaches a log.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..timing import SYSTEM, Clock
from .api import Api, ApiRequest, ApiResponse, QueryException, Route, jr, text
from .core import Core
from .faults import Fault, FaultRegistry, RequestLog, RequestRecord
from .state import Token

ELEVATED = {"root", "write", "deploy", "read:sensitive", "write:sensitive"}

_HTML_500 = "<!DOCTYPE html><html><head><title>Server Error</title></head><body>500 | Server Error</body></html>"
_HTML_429 = ("<!DOCTYPE html><html><head><title>Too Many Requests</title></head>"
             "<body>429 | Too Many Requests</body></html>")


def bearer_token(header: str | None) -> str | None:
    """Laravel's ``$request->bearerToken()`` (case-insensitive ``Bearer `` prefix)."""
    if not header:
        return None
    pos = header.lower().rfind("bearer ")
    if pos == -1:
        return None
    value = header[pos + 7:]
    return value.split(",", 1)[0] if "," in value else value


def request_ip(headers: Message, peer: str) -> str:
    """``$request->ip()`` behind Coolify's TrustProxies (``app/Http/Middleware/TrustProxies.php:15``:
    ``$proxies = '*'``, which trusts the calling address only): the rightmost valid ``X-Forwarded-For`` entry
    that is not the peer itself (Symfony ``Request::getClientIps``), else the peer."""
    forwarded = headers.get("X-Forwarded-For") or ""
    for entry in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
        candidate = entry
        if candidate.startswith("[") and "]" in candidate:  # [v6]:port
            candidate = candidate[1:candidate.index("]")]
        elif candidate.count(":") == 1:  # v4:port
            candidate = candidate.split(":", 1)[0]
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if candidate != peer:
            return candidate
    return peer


class RateLimiter:
    """Laravel's fixed-window ``ThrottleRequests`` (``Limit::perMinute``)."""

    def __init__(self, clock: Clock = SYSTEM) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, int]] = {}
        self.clock = clock

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def hit(self, key: str, limit: int, window: float) -> tuple[bool, int, int, int]:
        """Returns (allowed, remaining, retry_after_seconds, reset_epoch)."""
        now = self.clock.monotonic()
        with self._lock:
            start, count = self._buckets.get(key, (now, 0))
            if now - start >= window:
                start, count = now, 0
            available_in = max(1, int(round(start + window - now)))
            reset_at = int(self.clock.time() + available_in)
            if count >= limit:
                self._buckets[key] = (start, count)
                return False, 0, available_in, reset_at
            count += 1
            self._buckets[key] = (start, count)
            return True, max(0, limit - count), available_in, reset_at


class ApiApp:
    """Middleware chain + router, independent of the socket layer."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.api = Api(core)
        self.limiter = RateLimiter(core.clock)

    def _ip_allowed(self, ip: str) -> bool:
        allowed = [a.strip() for a in self.core.settings.allowed_ips if a.strip()]
        if not allowed or "0.0.0.0" in allowed:
            return True
        addr = ipaddress.ip_address(ip)
        for entry in allowed:
            try:
                if addr in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        return False

    def _lookup_token(self, raw: str | None) -> Token | None:
        if raw is None:
            return None
        with self.core.store.lock:
            token = self.core.store.tokens.get(raw)
        if token is None or token.expired(self.core.clock.time()):
            return None
        return token

    def handle(self, method: str, full_path: str, query: dict[str, str], headers: Message, body: bytes,
               client_ip: str) -> ApiResponse:
        """Answer one request (faults are applied by the socket layer around this).

        Laravel sorts route middleware by ``$middlewarePriority`` (framework ``Foundation/Http/Kernel.php``;
        Coolify's ``app/Http/Kernel.php`` keeps the default), where ``AuthenticatesRequests`` (``auth:sanctum``)
        comes before ``ThrottleRequests`` although ``routes/api.php`` lists the ``api`` group's throttle first. So a
        request to an authenticated route is refused 401 without counting, then counted against its *user*
        (``app/Providers/RouteServiceProvider.php:47-53``: ``$request->user()?->id ?: $request->ip()``): every
        token of one user shares a bucket, whatever the address. Only routes without auth (the 404 fallback,
        ``routes/api.php`` last lines; the health checks) are counted per address.
        """
        settings = self.core.settings
        ip = request_ip(headers, client_ip)
        if full_path.rstrip("/") in ("/api/health", "/api/v1/health") and method in ("GET", "HEAD"):
            # RouteServiceProvider.php:48-49: 1000/min for the path `api/health` only; /api/v1/health gets the
            # configured limit; one bucket per address for both (the key is the same, only the limit differs)
            limit = 1000 if full_path.rstrip("/") == "/api/health" else settings.rate_limit
            return self._throttle(f"ip:{ip}", lambda: text(200, "OK", "text/plain; charset=UTF-8"), limit=limit)
        if not (full_path == "/api/v1" or full_path.startswith("/api/v1/")):
            if full_path.startswith("/api/"):
                return self._throttle(f"ip:{ip}", lambda: jr(404, {"message": "Not found.",
                                                                   "docs": "https://coolify.io/docs"}))
            return text(404, "Not Found")
        rel = full_path[len("/api/v1"):] or "/"
        req = ApiRequest(method=method, path=rel, query=query, headers=headers, raw_body=body, client_ip=ip)
        match = self.api.match(req.method, req.path)
        if match is None:  # the fallback route: `api` group only, no auth, so counted per address
            return self._throttle(f"ip:{ip}", lambda: jr(404, {"message": "Not found.",
                                                               "docs": "https://coolify.io/docs"}), req)
        token = self._lookup_token(bearer_token(headers.get("Authorization")))
        if token is None:
            return jr(401, {"message": "Unauthenticated."})  # auth:sanctum runs first: not counted, no headers
        return self._throttle(f"user:{token.user_id}", lambda: self._route(req, token, *match), req)

    def _throttle(self, key: str, answer: Callable[[], ApiResponse], req: ApiRequest | None = None, *,
                  limit: int | None = None) -> ApiResponse:
        """ThrottleRequests: count one hit of ``key``; over the limit the 429 (``{"message":"Too Many
        Attempts."}``, Retry-After, X-RateLimit-Reset) and ``answer`` is never called (nothing is done); else
        ``answer()`` with X-RateLimit-Limit/-Remaining."""
        settings = self.core.settings
        limit = settings.rate_limit if limit is None else limit
        allowed, remaining, retry_after, reset_at = self.limiter.hit(key, limit, settings.rate_limit_window)
        if allowed:
            resp = answer()
        else:
            resp = jr(429, {"message": "Too Many Attempts."})
            resp.headers.update({"Retry-After": str(retry_after), "X-RateLimit-Reset": str(reset_at)})
        resp.headers.update({"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining)})
        return self._finish(req, resp) if req is not None else resp

    def _finish(self, req: ApiRequest, resp: ApiResponse) -> ApiResponse:
        if self.core.settings.strict_accept and resp.status in (429, 500) and not req.wants_json():
            html = _HTML_429 if resp.status == 429 else _HTML_500
            resp.body = html.encode()
            resp.headers["Content-Type"] = "text/html; charset=UTF-8"
        return resp

    def _route(self, req: ApiRequest, token: Token, route: Route, params: dict[str, str]) -> ApiResponse:
        """The rest of the chain after auth and throttle: team check, ApiAllowed, ability, controller."""
        settings = self.core.settings
        if not token.in_team:
            return jr(401, {"message": "Invalid token."})
        if token.role == "member" and token.abilities & ELEVATED:
            return jr(403, {"message": "Missing required team role."})
        if not route.skip_api_allowed:
            if not settings.api_enabled:
                return jr(403, {"success": True, "message": "API is disabled."})
            if not self._ip_allowed(req.client_ip):
                return jr(403, {"success": True, "message": "You are not allowed to access the API."})
        req.token = token
        req.sensitive = token.can("root") or token.can("read:sensitive")
        if route.ability and not (token.can("root") or token.can(route.ability)):
            return jr(403, {"message": f"Missing required permissions: {route.ability}"})
        try:
            return route.handler(req, **params)
        except QueryException:  # a statement PostgreSQL refused: expected, so no traceback
            return jr(500, {"message": "Server Error"})
        except Exception:  # noqa: BLE001 - a 500 like Laravel's handler
            traceback.print_exc(file=sys.stderr)
            return jr(500, {"message": "Server Error"})


class QuietHTTPServer(ThreadingHTTPServer):
    """Threaded server for the API and the proxy: daemon threads, reusable address, deep backlog."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that vanish (timeouts, injected faults) are normal here: stay quiet."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 request handler that never logs (requests carry tokens)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - never log (tokens)
        return


class _HTTPServer(QuietHTTPServer):
    owner: ApiServer


class _Handler(QuietHandler):
    server: _HTTPServer
    server_version = "nginx"
    sys_version = ""

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding", "") or "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline().strip().split(b";", 1)[0]
                size = int(size_line or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        owner = self.server.owner
        body = self._read_body()
        split = urlsplit(self.path)
        full_path = split.path or "/"
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        rel = full_path[len("/api/v1"):] if full_path.startswith("/api/v1") else full_path
        method = self.command
        try:
            body_json = json.loads(body) if body else None
        except ValueError:
            body_json = None
        latency, fault = owner.faults.take(method, rel or "/", full_path)
        if latency:
            owner.stopping.wait(latency)

        def record(status: int | None, fault_name: str | None = None, answer: ApiResponse | None = None) -> None:
            refusal = None
            if answer is not None and answer.status >= 400:
                try:
                    refusal = json.loads(answer.body) if answer.body else None
                except ValueError:
                    refusal = answer.body[:200].decode(errors="replace")
            owner.log.record(RequestRecord(method, rel or "/", query, status, fault_name, body_json, full_path,
                                           at=owner.app.core.clock.time(), answer=refusal))

        if fault is not None and not fault.after:
            if fault.fault in ("hang", "drop", "reset"):
                record(None, fault.fault)
                self._lose(fault)
                return
            resp = self._fault_response(fault, None)
            record(resp.status, fault.fault, resp)
            self._write(resp)
            return
        resp = owner.app.handle(method, full_path, query, self.headers, body, self.client_address[0])
        if fault is not None:
            if fault.fault in ("hang", "drop", "reset"):
                record(None, fault.fault)
                self._lose(fault)
                return
            resp = self._fault_response(fault, resp)
            record(resp.status, fault.fault, resp)
        else:
            record(resp.status, None, resp)
        if method == "HEAD":
            resp = ApiResponse(resp.status, b"", {**resp.headers, "Content-Length": str(len(resp.body))})
        self._write(resp)

    def _fault_response(self, fault: Fault, real: ApiResponse | None) -> ApiResponse:
        if fault.fault == "malformed":
            if fault.body is not None:
                body = fault.body
            elif real is not None and real.body:
                body = real.body[: max(1, len(real.body) // 2)]
            else:
                body = b'{"message":"Service starting req'
            return ApiResponse(fault.status or 200, body, {"Content-Type": "application/json"})
        if fault.fault == "429":
            settings = self.server.owner.app.core.settings
            return ApiResponse(429, fault.body or b'{"message":"Too Many Attempts."}', {
                "Content-Type": "application/json", "Retry-After": str(fault.retry_after),
                "X-RateLimit-Limit": str(settings.rate_limit), "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(self.server.owner.app.core.clock.time()) + fault.retry_after)})
        status = int(fault.status or fault.fault)
        body = fault.body if fault.body is not None else json.dumps(
            {"message": "Server Error" if status == 500 else f"HTTP {status}"}).encode()
        return ApiResponse(status, body, {"Content-Type": "application/json"})

    def _lose(self, fault: Fault) -> None:
        """Hang (then drop), drop, or reset the connection without an HTTP response."""
        owner = self.server.owner
        if fault.fault == "hang":
            owner.stopping.wait(fault.seconds if fault.seconds is not None else owner.app.core.settings.hang_seconds)
        self.close_connection = True
        try:
            if fault.fault == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _write(self, resp: ApiResponse) -> None:
        try:
            self.send_response(resp.status)
            headers = {"Cache-Control": "no-cache, private", **resp.headers}
            headers.setdefault("Content-Length", str(len(resp.body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if resp.body and self.command != "HEAD":
                self.wfile.write(resp.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch  # noqa: N815


class ApiServer:
    """Runs :class:`ApiApp` on 127.0.0.1 in a background thread."""

    def __init__(self, core: Core, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = ApiApp(core)
        self.faults = FaultRegistry()
        self.log = RequestLog()
        self.stopping = threading.Event()
        self._host = host
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        return self._host

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=f"coolify-emulator-api:{self.port}", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Blocking variant for the CLI."""
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
