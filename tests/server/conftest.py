"""A real server: `invoke serve` in a subprocess on 127.0.0.1, driven with httpx."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.sandbox import Sandbox

TOKEN = "api-" + "t0k3n" * 8
# what a caller of a server without a token sends with every POST, PUT, PATCH and DELETE, body or not
JSON = {"Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    sandbox: Sandbox
    port: int
    proc: subprocess.Popen[str] | None = None
    token: str | None = TOKEN
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str, timeout: float = 30) -> Server:
        env = self.sandbox.environ()
        if self.token:
            env["PROVISION_API_TOKEN"] = self.token
        log = open(self.sandbox.root / f"server-{self.port}.log", "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", "serve", f"--env={self.sandbox.env}", f"--port={self.port}", *extra],
            cwd=self.sandbox.root, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        self._log = log
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"server did not start: {self.log()}")

    def log(self) -> str:
        return "".join(p.read_text() for p in self.sandbox.root.glob("server-*.log"))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        for client in self.clients:
            client.close()
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
            self._log = None

    def client(self, *, token: str | None = TOKEN, timeout: float = 300) -> httpx.Client:
        """An httpx client for this server, closed when the server is stopped."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False)
        self.clients.append(client)
        return client


@pytest.fixture
def server_factory() -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()


def run_server(servers: list[Server], sandbox: Sandbox, *extra: str, token: str | None = TOKEN) -> Server:
    server = Server(sandbox, free_port(), token=token)
    servers.append(server)
    return server.start(*extra)


def problem(response: httpx.Response) -> dict:  # type: ignore[type-arg]
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body) and body["status"] == response.status_code
    return body


