"""Docker mode: what is pushed to the emulator really runs on the local Docker Engine.

Builds a tiny FROM-scratch image from ``tinyhttp.c`` (static, gcc), runs a service through
the API, reaches it through the emulated proxy and checks names, labels, volumes and cleanup.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.coolify_emulator import CoolifyEmulator
from tests.coolify_emulator.docker_mode import INSTANCE_LABEL, LABEL, LABEL_VALUE

from .conftest import TOKEN, b64, make_client

pytestmark = pytest.mark.docker

HERE = Path(__file__).resolve().parent


def docker(*args: str, timeout: float = 60) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,  # noqa: S603
                          check=True)
    return proc.stdout


@pytest.fixture(scope="module")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Build ``coolify-emulator-selftest/tinyhttp:<random>`` and remove it afterwards."""
    if shutil.which("docker") is None or shutil.which("gcc") is None:
        pytest.fail("docker mode self-test needs `docker` and `gcc` on PATH")
    ctx = tmp_path_factory.mktemp("tinyhttp")
    subprocess.run(["gcc", "-static", "-O2", "-o", str(ctx / "tinyhttp"), str(HERE / "tinyhttp.c")],  # noqa: S603
                   check=True, timeout=120, capture_output=True)
    (ctx / "Dockerfile").write_text(f'FROM scratch\nCOPY tinyhttp /tinyhttp\nLABEL {LABEL}={LABEL_VALUE}\n'
                                    'ENTRYPOINT ["/tinyhttp"]\n')
    tag = f"coolify-emulator-selftest/tinyhttp:{int(time.time() * 1000)}"
    docker("build", "-q", "-t", tag, str(ctx), timeout=120)
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag],  # noqa: S603
                       capture_output=True, timeout=60, check=False)


def compose_for(image: str) -> str:
    return f"""\
services:
  api:
    image: {image}
    environment:
      - SERVICE_FQDN_API_3000
      - GREETING=${{GREETING:-hello}}
      - DATA_DIR=/data
    volumes:
      - app_data:/data
    healthcheck:
      test: ["CMD", "/tinyhttp", "--check"]
      interval: 200ms
      timeout: 1s
      retries: 50
volumes:
  app_data:
"""


def wait_for(client: httpx.Client, uuid: str, wanted: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        resp = client.get(f"/services/{uuid}")
        seen = resp.json().get("status", "") if resp.status_code == 200 else str(resp.status_code)
        if seen == wanted:
            return
        time.sleep(0.1)
    raise AssertionError(f"{uuid}: wanted {wanted}, last {seen}")


def labelled(kind: str, instance: str) -> list[str]:
    """Names of containers/volumes/networks carrying the emulator instance label."""
    selector = f"label={INSTANCE_LABEL}={instance}"
    if kind == "container":
        return docker("ps", "-a", "--filter", selector, "--format", "{{.Names}}").split()
    return docker(kind, "ls", "--filter", selector, "--format", "{{.Name}}").split()


def test_service_runs_for_real(tiny_image: str) -> None:
    with CoolifyEmulator(token=TOKEN, docker=True, action_delay=0) as emu, make_client(emu, timeout=30) as c:
        assert emu.docker is not None
        instance = emu.docker.instance_id
        project = c.post("/projects", json={"name": "docker-mode"}).json()["uuid"]
        resp = c.post("/services", json={
            "project_uuid": project, "environment_name": "production", "name": "tiny",
            "server_uuid": emu.localhost["uuid"],
            "docker_compose_raw": b64(compose_for(tiny_image))})
        assert resp.status_code == 201, resp.text
        uuid = resp.json()["uuid"]
        c.patch(f"/services/{uuid}/envs/bulk", json={"data": [{"key": "GREETING", "value": "it's $real ${x}"}]})
        assert c.post(f"/services/{uuid}/start").status_code == 200
        wait_for(c, uuid, "running:healthy")

        # Coolify's naming, plus the cleanup label everywhere
        assert labelled("container", instance) == [f"api-{uuid}"]
        assert labelled("volume", instance) == [f"{uuid}_app-data"]
        assert labelled("network", instance) == [uuid]
        labels = json.loads(docker("inspect", "--format", "{{json .Config.Labels}}", f"api-{uuid}"))
        assert labels[LABEL] == LABEL_VALUE and labels["coolify.serviceId"] and labels["coolify.type"] == "service"
        env_file = emu.docker.workdir(uuid) / ".env"
        assert env_file.exists() and "GREETING=" in env_file.read_text()

        url = f"http://api-{uuid}.127.0.0.1.sslip.io/hello"
        with httpx.Client(proxy=emu.proxy_url, timeout=10) as web:
            body = web.get(url).json()
            assert body == {"swagger": "2.0", "greeting": "it's $real ${x}", "boots": 1, "path": "/hello"}
            logs = c.get(f"/services/{uuid}/logs", params={"sub_service_name": "api"}).json()["logs"]
            assert "GET /hello" in logs

            emu.docker.stored_exited_seconds = 5.0
            assert c.post(f"/services/{uuid}/restart").status_code == 200
            assert emu.core.wait_idle(timeout=60)
            # the job is over and the new container runs, but what StopService stored stays until a refresh:
            # a reader who looks only now still sees that the restart happened
            assert c.get(f"/services/{uuid}").json()["status"] == "exited"
            wait_for(c, uuid, "running:healthy")
            assert web.get(url).json()["boots"] == 2  # the named volume survived the recreate

            assert c.post(f"/services/{uuid}/stop").status_code == 200
            wait_for(c, uuid, "exited")
            # docker stop, then rm: the stored status reads exited between the two
            deadline = time.monotonic() + 30
            while labelled("container", instance) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert labelled("container", instance) == []
            assert web.get(url).status_code == 503

        assert c.delete(f"/services/{uuid}", params={"delete_volumes": "false"}).status_code == 200
        wait_for(c, uuid, "404")
        assert labelled("volume", instance) == [f"{uuid}_app-data"]  # kept on request
        assert labelled("network", instance) == []
        workdir = emu.docker.root
    # leaving the context removes everything this instance created
    for kind in ("container", "volume", "network"):
        assert labelled(kind, instance) == []
    assert not workdir.exists()
