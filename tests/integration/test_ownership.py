"""Two checkouts (two project roots, two owner ids) on one Docker Engine, in the same env: neither sees, prunes,
destroys or provisions over the other's stacks; adopt takes one over on purpose."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import Sandbox, _docker, cleanup_env, leftovers, new_sandbox

OWNER_A, OWNER_B = "aaaaaa0001", "bbbbbb0002"


@pytest.fixture
def checkouts(tmp_path: Path, test_images: Mapping[str, str]) -> Iterator[tuple[Sandbox, Sandbox]]:
    a = new_sandbox(tmp_path / "a", test_images)
    b = new_sandbox(tmp_path / "b", test_images)
    (b.root / "envs" / f"{b.env}.yml").unlink()
    b.env = a.env  # the same env name, so the same compose project names
    a.write_env(["uxblog", "uxsig"], extra=f"owner: {OWNER_A}\n")
    b.write_env(["uxshop"], extra=f"owner: {OWNER_B}\n")
    try:
        yield a, b
    finally:
        cleanup_env(a.env)
    assert leftovers(a.env) == [], f"resources left behind for env {a.env}"


def projects(box: Sandbox, task: str, *args: str) -> dict[str, str]:
    """{project: status or plan outcome} of `task --json` in this checkout."""
    data = box.cli(task, "--json", *args).json()
    key = "outcome" if task == "plan" else "status"
    return {p["project"]: p[key] for p in data["projects"]}


def owners(env: str, project: str) -> dict[str, set[str]]:
    """The owner labels of the project's containers, volumes and networks."""
    label = f"label=com.docker.compose.project={project}_{env}"
    found: dict[str, set[str]] = {}
    for kind, listing in (("container", ["ps", "-a"]), ("volume", ["volume", "ls"]), ("network", ["network", "ls"])):
        ids = _docker(*listing, "-q", "--filter", label).stdout.split()
        labels = ".Config.Labels" if kind == "container" else ".Labels"
        found[kind] = {_docker(kind, "inspect", "--format", f'{{{{index {labels} "io.provision.owner"}}}}', i)
                       .stdout.strip() for i in ids}
    return found


def test_two_checkouts_on_one_engine_see_and_touch_only_their_own_stacks(checkouts: tuple[Sandbox, Sandbox]) -> None:
    a, b = checkouts
    a.cli("provision")
    b.cli("provision")
    assert owners(a.env, "uxblog") == {"container": {OWNER_A}, "volume": {OWNER_A}, "network": {OWNER_A}}
    assert owners(a.env, "uxshop") == {"container": {OWNER_B}, "volume": {OWNER_B}, "network": {OWNER_B}}

    # neither's plan, status or list sees the other's stacks; no orphan to prune
    assert projects(b, "plan") == {"uxshop": "no-op"}
    assert projects(a, "plan") == {"uxblog": "no-op", "uxsig": "no-op"}
    assert projects(b, "status") == {"uxshop": "running"}
    assert projects(b, "list") == {"uxshop": "running"}
    assert projects(a, "list") == {"uxblog": "running", "uxsig": "running"}
    pruned = b.cli("provision", "--prune", "--yes")
    assert "uxblog" not in pruned.output and "uxsig" not in pruned.output

    # destroy --all in B removes B's stack only
    b.cli("destroy", "--all", "--yes")
    assert projects(b, "status") == {"uxshop": "destroyed"}
    assert projects(a, "status") == {"uxblog": "running", "uxsig": "running"}

    # a name A uses is refused in B, naming the owner and what to do; nothing of A's changes
    b.write_env(["uxshop", "uxblog"], extra=f"owner: {OWNER_B}\n")
    for argv in (("provision", "--project=uxblog"), ("destroy", "--project=uxblog"), ("stop", "--project=uxblog")):
        refused = b.cli(*argv, check=False)
        assert refused.returncode != 0, argv
        assert f"owner {OWNER_A}" in refused.stderr and "invoke adopt --env=" in refused.stderr, refused.stderr
        assert "secrets file" not in refused.stderr
    assert projects(a, "status") == {"uxblog": "running", "uxsig": "running"}
    assert projects(b, "plan")["uxblog"] == "taken"
    [shown] = [p for p in b.cli("status", "--json").json()["projects"] if p["project"] == "uxblog"]
    assert shown["status"] == "taken" and shown["api_url"] is None and f"owner {OWNER_A}" in shown["messages"][0]

    # adopt takes it over on purpose: with A's secrets, B's next provision relabels its containers
    (b.state_dir / b.env / "uxblog").mkdir(parents=True, exist_ok=True)
    shutil.copy(a.state_dir / a.env / "uxblog" / "secrets.env", b.state_dir / b.env / "uxblog" / "secrets.env")
    adopted = b.cli("adopt", "--project=uxblog", "--yes")
    assert f"owner {OWNER_A}" in adopted.output
    b.cli("provision", "--project=uxblog")
    assert owners(a.env, "uxblog")["container"] == {OWNER_B}
    assert owners(a.env, "uxblog")["volume"] == {OWNER_A}  # a volume's labels never change: B's record says it is B's
    assert projects(b, "status")["uxblog"] == "running"
    assert projects(a, "list")["uxblog"] == "taken"  # declared in A, but the stack is B's now
    refused = a.cli("provision", "--project=uxblog", check=False)
    assert refused.returncode != 0 and f"owner {OWNER_B}" in refused.stderr
    assert projects(a, "status", "--project=uxsig") == {"uxsig": "running"}

    # A's own volume, made with its label, is reattached after a destroy and deleted with --delete-data
    a.cli("destroy", "--project=uxsig")
    assert projects(a, "status", "--project=uxsig") == {"uxsig": "destroyed"}
    assert owners(a.env, "uxsig")["volume"] == {OWNER_A}
    a.cli("provision", "--project=uxsig")
    assert owners(a.env, "uxsig") == {"container": {OWNER_A}, "volume": {OWNER_A}, "network": {OWNER_A}}
    a.cli("destroy", "--project=uxsig", "--delete-data", "--yes", "--no-backup")
    assert owners(a.env, "uxsig") == {"container": set(), "volume": set(), "network": set()}


def test_a_stack_made_without_an_owner_id_is_taken_over_by_its_own_checkout_only(
        checkouts: tuple[Sandbox, Sandbox]) -> None:
    a, b = checkouts
    a.write_env(["uxblog"])  # as an earlier version made it: no owner label anywhere
    a.cli("provision")
    assert owners(a.env, "uxblog") == {"container": {""}, "volume": {""}, "network": {""}}
    password = a.secrets("uxblog")["DB_PASSWORD"]

    # another checkout has no record of it: not its stack, not an orphan, refused by name
    assert projects(b, "plan") == {"uxshop": "create"}
    b.write_env(["uxblog"], extra=f"owner: {OWNER_B}\n")
    refused = b.cli("provision", "--project=uxblog", check=False)
    assert refused.returncode != 0 and "carries no owner id" in refused.stderr and "invoke adopt --env=" in refused.stderr

    # its own checkout, now with an owner id, takes it over at the next run with one line; then no-ops
    a.write_env(["uxblog"], extra=f"owner: {OWNER_A}\n")
    taken = a.cli("provision")
    assert taken.stderr.count("adopting:") == 1, taken.stderr
    found = owners(a.env, "uxblog")
    assert (found["container"], found["volume"]) == ({OWNER_A}, {""})  # a volume's labels never change
    assert len(found["network"]) == 1 and found["network"] <= {"", OWNER_A}  # compose >= 2.24 may recreate it
    assert a.secrets("uxblog")["DB_PASSWORD"] == password
    again = a.cli("provision", "--json").json()["projects"][0]
    assert again["action"] == "no-op" and again["changed"] is False
    assert projects(a, "plan") == {"uxblog": "no-op"}
