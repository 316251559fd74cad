"""An emulated ``coolify-proxy`` (Traefik): an HTTP forward proxy routing by Host header.

Clients set ``HTTP_PROXY=emu.proxy_url`` so ``http://api-<uuid>.127.0.0.1.sslip.io/`` lands
here. Routing uses the fqdn of service applications: host (+ path prefix, stripped like
Coolify's stripprefix middleware) → that container; the ``:port`` of the fqdn is the
container port. Pure mode answers like a PostgREST root while the app runs; docker mode
forwards to the container IP on the service network.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import compose as C
from .core import Core
from .server import QuietHandler, QuietHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
              "trailers", "transfer-encoding", "upgrade"}


@dataclass
class ProxyContext:
    """What a pure-mode responder gets for one proxied request.

    ``envs`` are the values applied by the service's last successful start/restart (env
    changes only reach containers on the next start, API-NOTES §9).
    """

    service_uuid: str
    service_name: str
    app_name: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    envs: dict[str, str | None] = field(default_factory=dict)


Responder = Callable[[ProxyContext], "tuple[int, dict[str, str], bytes]"]


def postgrest_root(ctx: ProxyContext) -> tuple[int, dict[str, str], bytes]:
    """Default pure-mode answer: a PostgREST-like OpenAPI root."""
    return 200, {"Content-Type": "application/openapi+json; charset=utf-8"}, json.dumps({"swagger": "2.0"}).encode()


@dataclass
class _Target:
    service_uuid: str
    app_name: str
    port: int
    prefix: str
    running: bool
    ip: str | None


class _ProxyHTTPServer(QuietHTTPServer):
    owner: ProxyServer


class _ProxyHandler(QuietHandler):
    server: _ProxyHTTPServer

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            for name, value in (headers or {"Content-Type": "text/plain; charset=utf-8"}).items():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _dispatch(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if self.command == "CONNECT":
            self._send(501, b"CONNECT not supported: the emulated proxy speaks plain http only\n")
            return
        if self.path.startswith(("http://", "https://")):
            split = urlsplit(self.path)
            host = split.hostname or ""
            path = split.path or "/"
            query = split.query
        else:
            host = (self.headers.get("Host") or "").split(":")[0]
            split = urlsplit(self.path)
            path, query = split.path or "/", split.query
        target = owner.resolve(host.lower(), path)
        if target is None:
            self._send(404, b"404 page not found\n")
            return
        if not target.running:
            self._send(503, b"no available server\n")
            return
        upstream_path = path[len(target.prefix):] if target.prefix else path
        if not upstream_path.startswith("/"):
            upstream_path = "/" + upstream_path
        if query:
            upstream_path += "?" + query
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if owner.core.docker is None:
            with owner.core.store.lock:
                svc = owner.core.store.services.get(target.service_uuid)
                envs = dict(svc.deployed_envs or {}) if svc else {}
                name = svc.name if svc else ""
            ctx = ProxyContext(target.service_uuid, name, target.app_name, self.command, upstream_path, headers,
                               body, envs)
            status, out_headers, out_body = owner.responder(ctx)
            self._send(status, out_body, out_headers)
            return
        if not target.ip:
            self._send(502, b"Bad Gateway")
            return
        headers["X-Forwarded-For"] = self.client_address[0]
        headers["X-Forwarded-Host"] = host
        headers["X-Forwarded-Proto"] = "http"
        conn = http.client.HTTPConnection(target.ip, target.port, timeout=owner.upstream_timeout)
        try:
            conn.request(self.command, upstream_path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self._send(resp.status, data, {k: v for k, v in resp.getheaders()})
        except OSError:
            self._send(502, b"Bad Gateway")
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_CONNECT = _dispatch  # noqa: N815


class ProxyServer:
    """Host-routing proxy bound to 127.0.0.1 (``url`` is what clients put in HTTP_PROXY)."""

    def __init__(self, core: Core, host: str = "127.0.0.1", port: int = 0) -> None:
        self.core = core
        self._host = host
        self.responder: Responder = postgrest_root
        self.upstream_timeout = 30.0
        self._httpd = _ProxyHTTPServer((host, port), _ProxyHandler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._httpd.server_address[1]}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="coolify-emulator-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def resolve(self, host: str, path: str) -> _Target | None:
        """The service application whose fqdn matches host and the longest path prefix."""
        core = self.core
        core.settle()
        best: tuple[int, Any, Any, str] | None = None
        with core.store.lock:
            for svc in core.store.services.values():
                for sub in svc.applications:
                    for url in C.split_urls(sub.fqdn):
                        u_host, u_path, u_port = C.url_host_path(url)
                        if u_host != host:
                            continue
                        if u_path and not (path == u_path or path.startswith(u_path + "/")):
                            continue
                        if best is None or len(u_path) > best[0]:
                            port = u_port or (443 if url.lower().startswith("https") else 80)
                            best = (len(u_path), svc, sub, f"{port}|{u_path}")
            if best is None:
                return None
            _, svc, sub, meta = best
            port_s, prefix = meta.split("|", 1)
            # Traefik routes to the container that runs now, whatever Coolify has stored of it yet
            running = (core.container_state(svc, sub) or "exited").startswith("running") and not svc.deleting
            ip = core.docker.container_ip(svc, sub) if core.docker is not None and running else None
            return _Target(svc.uuid, sub.name, int(port_s), prefix, running, ip)
