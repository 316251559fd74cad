"""Shared fixtures: a throwaway project root with the real template, and a clean environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.sandbox import Sandbox

REPO = Path(__file__).resolve().parent.parent

# the CLI runs in the test process (tests/inprocess.py) unless PROVISION_TEST_CLI=subprocess; `popen`, kill tests
# and tests marked subprocess_cli always start a real process
IN_PROCESS = os.environ.get("PROVISION_TEST_CLI", "") != "subprocess"

TEST_IMAGES = {"db": "provision-test/postgres:15", "api": "provision-test/postgrest:12"}


# modules whose tests take 30 s and more each (`pytest --durations`): run first, so that on xdist workers they
# overlap with everything else instead of being the last ones left (the suite's tail)
SLOW_FIRST = ("test_pitr.py", "test_verify.py", "test_offsite.py", "test_request_shapes.py", "test_coolify_data.py",
              "test_coolify_placement.py", "test_api_coolify_and_fuzz.py", "test_release.py", "test_data.py",
              "test_branches.py", "test_coolify_docker.py", "test_coolify_races.py", "test_ownership.py")


def _slow_first(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """`items` so that each of the `workers` contiguous blocks xdist's worksteal scheduler hands out at the start
    (len // workers-left at a time) begins with its share of the SLOW_FIRST tests: they start at once on every
    worker, and what is stolen later (from a block's end) is the quick tests."""
    slow = [item for item in items if item.path.name in SLOW_FIRST]
    quick = [item for item in items if item.path.name not in SLOW_FIRST]
    if workers < 2:
        return slow + quick
    sizes, left = [], len(items)
    for remaining in range(workers, 0, -1):
        sizes.append(left // remaining)
        left -= sizes[-1]
    blocks: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for index, item in enumerate(slow):
        blocks[index % workers].append(item)
    for block, size in zip(blocks, sizes, strict=True):
        while len(block) < size and quick:
            block.append(quick.pop(0))
    return [item for block in blocks for item in block] + quick


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder, so `-m unit` / `-m docker` / `-m coolify` select them (CI runs them all); order them
    so that the slow modules' tests start first on every xdist worker (`_slow_first`)."""
    workerinput = getattr(config, "workerinput", None)
    items[:] = _slow_first(items, int(workerinput["workercount"]) if workerinput else 1)
    for item in items:
        path = str(item.path)
        if "/tests/unit/" in path:
            item.add_marker(pytest.mark.unit)
        if "/tests/integration/" in path or "/tests/server/test_api_local" in path:
            item.add_marker(pytest.mark.docker)
        if "/tests/coolify/" in path or "/tests/server/test_api_coolify" in path:
            item.add_marker(pytest.mark.coolify)


def anonymous_volumes() -> set[str] | None:
    """Volumes nobody named (64 hex digits) that no container uses: what a helper or stack container made for an
    image's VOLUME and nobody removed (named ones are left out: a test's own, dangling between two containers);
    None without a reachable engine."""
    if shutil.which("docker") is None:
        return None
    found = subprocess.run(["docker", "volume", "ls", "-q", "--filter", "dangling=true"], capture_output=True,
                           text=True, timeout=60, check=False)
    if found.returncode != 0:
        return None
    return {name for name in found.stdout.split() if len(name) == 64 and all(c in "0123456789abcdef" for c in name)}


def anonymous_volumes_left(before: set[str], timeout: float = 15) -> set[str]:
    """The anonymous volumes beyond `before` that are still there after up to `timeout` seconds: a `docker run
    --rm` helper (of a test running beside) has one for its lifetime, and the daemon removes it just after the
    container, so one seen now must be gone within a few seconds."""
    deadline = time.monotonic() + timeout
    while (left := (anonymous_volumes() or set()) - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


_ANONYMOUS_BEFORE = pytest.StashKey[set[str] | None]()


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the run's controller, once
        session.config.stash[_ANONYMOUS_BEFORE] = anonymous_volumes()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The whole run leaves no anonymous volume behind (one a stack or helper container made for an image's
    VOLUME and nobody removed: labels cannot find it, so the sandboxes' own checks cannot either)."""
    before = session.config.stash.get(_ANONYMOUS_BEFORE, None)
    if hasattr(session.config, "workerinput") or before is None:
        return
    left = anonymous_volumes_left(before)
    if left:
        session.config.get_terminal_writer().line(
            f"the tests left {len(left)} anonymous volume(s) behind: {', '.join(sorted(left)[:5])}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# developer settings no test may see: Coolify credentials, a state dir override, secrets, the API token
DEVELOPER_VARIABLES = ("COOLIFY_API_URL", "COOLIFY_API_TOKEN", "PROVISION_STATE_DIR", "PROVISION_COMPOSE",
                       "DB_PASSWORD", "JWT_SECRET", "PROVISION_API_TOKEN")


def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Remove DEVELOPER_VARIABLES and give HOME a fresh empty directory (for fixtures of a wider scope too)."""
    for key in DEVELOPER_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No developer settings leak into tests: no Coolify credentials, no state dir override, no HOME files."""
    clean_environment(monkeypatch, tmp_path_factory)


def write_env(root: Path, name: str, text: str) -> Path:
    path = root / "envs" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def project_root(tmp_path: Path) -> Iterator[Path]:
    """A project root holding the real template and an `envs/` directory (empty)."""
    root = tmp_path / "root"
    (root / "envs").mkdir(parents=True)
    shutil.copytree(REPO / "templates", root / "templates")
    yield root


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Fail (not skip) when no engine answers: run ../shared/ci/ensure-docker.sh or start dockerd."""
    try:
        result = _docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except FileNotFoundError:
        pytest.fail("the docker CLI is not installed: these tests need a Docker Engine with Compose v2")
    if result.returncode != 0:
        pytest.fail(f"no Docker Engine is reachable ({result.stderr.strip()}): start dockerd before running the tests")
    if _docker("compose", "version").returncode != 0:
        pytest.fail("`docker compose` (Compose v2) is not installed")


@pytest.fixture(scope="session")
def test_images(docker_engine: None) -> Mapping[str, str]:
    """Build (or reuse, when cached) the stand-in postgres and postgrest images."""
    result = subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh")], capture_output=True, text=True,
                            timeout=900, check=False)
    if result.returncode != 0:
        pytest.fail(f"building the test images failed:\n{result.stdout}\n{result.stderr}")
    return TEST_IMAGES


def cleanup_env(env: str) -> None:
    """Remove every container, volume and network labelled with this env."""
    label = f"label=io.provision.env={env}"
    ids = _docker("ps", "-aq", "--filter", label).stdout.split()
    if ids:
        _docker("rm", "-f", "-v", *ids)
    for kind in ("volume", "network"):
        names = _docker(kind, "ls", "-q", "--filter", label).stdout.split()
        if names:
            _docker(kind, "rm", "-f", *names) if kind == "volume" else _docker(kind, "rm", *names)


def leftovers(env: str) -> list[str]:
    label = f"label=io.provision.env={env}"
    found = _docker("ps", "-aq", "--filter", label).stdout.split()
    found += _docker("volume", "ls", "-q", "--filter", label).stdout.split()
    found += _docker("network", "ls", "-q", "--filter", label).stdout.split()
    return found


def new_sandbox(tmp: Path, images: Mapping[str, str]) -> Sandbox:
    """A project root `tmp`/root (tasks.py, the real templates, envs/<env>.yml declaring shop on the local
    backend) with a unique env name; the caller removes the env's resources (cleanup_env)."""
    root = tmp / "root"
    (root / "envs").mkdir(parents=True)
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    env = "it-" + uuid.uuid4().hex[:8]
    box = Sandbox(root=root, env=env, images=images, in_process=IN_PROCESS)
    box.write_env(["shop"])
    return box


@pytest.fixture
def sandbox(request: pytest.FixtureRequest, tmp_path: Path, test_images: Mapping[str, str]) -> Iterator[Sandbox]:
    box = new_sandbox(tmp_path, test_images)
    if request.node.get_closest_marker("subprocess_cli") is not None:
        box.in_process = False
    env = box.env
    try:
        yield box
    finally:
        cleanup_env(env)
    assert leftovers(env) == [], f"resources left behind for env {env}"


def sql(url: str, statement: str, *params: object) -> list[tuple]:  # type: ignore[type-arg]
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:
        cursor = conn.execute(statement, params or None)
        rows = cursor.fetchall() if cursor.description else []
        conn.commit()
        return rows


def reload_schema(db_url: str, api_url: str, table: str, *, proxy: str | None = None, timeout: float = 15) -> None:
    """What a deploy does after DDL: `NOTIFY pgrst, 'reload schema'`, then wait until the API (PostgREST's
    schema cache) serves `table`."""
    import time
    import urllib.error
    import urllib.request

    sql(db_url, "NOTIFY pgrst, 'reload schema'")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy} if proxy else {}))
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        try:
            with opener.open(f"{api_url}/{table}", timeout=5) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        if status != 404:
            return
        time.sleep(0.1)
    raise AssertionError(f"{api_url}/{table} still answers 404 after NOTIFY pgrst, 'reload schema'")
