"""HTTP control-plane benchmarks.

    python bench/bench_server.py [--projects 200] [--clients 20] [--seconds 10] [--runs 3]

1. GET /v1/projects with `projects` projects (created through the API on the Coolify emulator,
   which makes 200 projects cheap): p50 and p99 latency of one client, and requests/s with
   `clients` concurrent clients.
2. POST /v1/projects (wait for healthy) against the equivalent `invoke provision --project`,
   on the local Docker Engine, interleaved: the ratio of medians.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, cleanup, environ, invoke, make_root, ports, ratio, summary  # noqa: E402
from tests.coolify_emulator import CoolifyEmulator  # noqa: E402

TOKEN = "bench-api-token"


def start_server(root: Path, env: str, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    with socket_port() as port:
        pass
    variables = {**environ(root), "PROVISION_API_TOKEN": TOKEN, **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "serve", f"--env={env}", f"--port={port}"],
                            cwd=root, env=variables, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


class socket_port:
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def bench_list(projects: int, clients: int, seconds: float) -> None:
    with CoolifyEmulator(token="1|emu", action_delay=0.05, rate_limit=1_000_000) as emu:
        root = Path(tempfile.mkdtemp(prefix="provision-bench-server-"))
        shutil.copytree(REPO / "templates", root / "templates")
        shutil.copy(REPO / "tasks.py", root / "tasks.py")
        (root / "envs").mkdir()
        (root / "envs" / "api.yml").write_text(
            "owner: bench-0001\nbackend: coolify\nimages: {db: postgres:16-alpine, api: postgrest/postgrest:v12.2.3}\n"
            "projects: []\nhealth: {timeout: 30}\ncoolify: {requests_per_minute: 100000}\n")  # limits lifted
        (root / "envs" / "api.env").write_text(f"COOLIFY_API_URL={emu.base_url}\nCOOLIFY_API_TOKEN=1|emu\n")
        proxy = {"HTTP_PROXY": emu.proxy_url, "NO_PROXY": "127.0.0.1,localhost"}
        proc, url = start_server(root, "api", proxy)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            def create(i: int) -> None:
                with httpx.Client(base_url=url, headers=headers, timeout=300, trust_env=False) as api:
                    response = api.post("/v1/projects", json={"name": f"t{i:03d}"})
                    assert response.status_code == 201, response.text

            started = time.perf_counter()
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(create, range(projects)))
            print(f"created {projects} projects through the API in {time.perf_counter() - started:.1f} s")

            with httpx.Client(base_url=url, headers=headers, timeout=60, trust_env=False) as api:
                assert len(api.get("/v1/projects").json()["projects"]) == projects
                latencies = []
                for _ in range(300):
                    t0 = time.perf_counter()
                    api.get("/v1/projects").raise_for_status()
                    latencies.append(time.perf_counter() - t0)
            latencies.sort()
            p50 = latencies[len(latencies) // 2] * 1000
            p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
            print(f"GET /v1/projects ({projects} projects), 1 client: p50 {p50:.1f} ms, p99 {p99:.1f} ms (n=300)")

            count = [0] * clients
            stop = time.perf_counter() + seconds

            def hammer(i: int) -> None:
                with httpx.Client(base_url=url, headers=headers, timeout=60, trust_env=False) as api:
                    while time.perf_counter() < stop:
                        api.get("/v1/projects").raise_for_status()
                        count[i] += 1

            threads = [threading.Thread(target=hammer, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print(f"GET /v1/projects, {clients} concurrent clients: {sum(count) / seconds:.0f} requests/s "
                  f"over {seconds:g} s")
        finally:
            proc.terminate()
            proc.wait(30)


def bench_post_vs_cli(runs: int) -> None:
    root, env = make_root(port_range=ports(27000))
    proc, url = start_server(root, env)
    samples: dict[str, list[float]] = {"post": [], "cli": []}
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300,
                          trust_env=False) as api:
            for i in range(runs):
                samples["cli"].append(invoke(root, "provision", f"--env={env}", f"--project=cli{i}"))
                t0 = time.perf_counter()
                response = api.post("/v1/projects", json={"name": f"http{i}"})
                samples["post"].append(time.perf_counter() - t0)
                assert response.status_code == 201, response.text
                for name in (f"cli{i}", f"http{i}"):
                    api.delete(f"/v1/projects/{name}", params={"delete_data": "true"})
    finally:
        proc.terminate()
        proc.wait(30)
        cleanup(env)
    print(f"invoke provision (cold)   {summary(samples['cli'])}")
    print(f"POST /v1/projects (cold)  {summary(samples['post'])}")
    print(f"  ratio POST/CLI (target <= 1.05): {ratio(samples['post'], samples['cli']):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bench_list(args.projects, args.clients, args.seconds)
    bench_post_vs_cli(args.runs)


if __name__ == "__main__":
    main()
