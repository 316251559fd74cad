"""Which stacks on a shared Docker Engine are this checkout's: the pure rule (backends/local/ownership.py) and the
local backend's observations, env listings, usage, volume creation and adopt through their seams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provision.backends.base import Adopted
from provision.backends.local import ownership
from provision.backends.local.claims import ADOPTED_FILE
from provision.core import names
from provision.core.config import load_env
from provision.core.errors import ProjectConflict, ProvisionError
from provision.core.model import Observed, Target
from provision.core.render import build_context, render_stack
from provision.state.records import StateStore
from tests.conftest import write_env
from tests.unit.fakes import FakeRunner
from tests.unit.test_local_backend import ENV, PS_RUNNING, backend

ME, OTHER = "aaaaaa0001", "bbbbbb0002"


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


def ps(owner: str | None, project: str = "shop") -> str:
    """The recorded `docker ps` of a running stack, relabelled: project `project`, owner label `owner` (None: none)."""
    text = PS_RUNNING.replace("io.provision.project=shop", f"io.provision.project={project}")
    text = text.replace("com.docker.compose.project=shop_demo", f"com.docker.compose.project={project}_demo")
    return text.replace("io.provision.env=demo", "io.provision.env=demo" + (f",io.provision.owner={owner}" if owner else ""))


def volume(project: str, owner: str | None, name: str | None = None) -> str:
    labels = f"com.docker.compose.project={project}_demo,io.provision.env=demo,io.provision.project={project}"
    labels += f",io.provision.owner={owner}" if owner else ""
    return json.dumps({"Name": name or f"{project}_demo_pgdata", "Labels": labels}) + "\n"


def owned_target(root: Path, owner: str | None = ME) -> Target:
    write_env(root, "demo", ENV + (f"owner: {owner}\n" if owner else ""))
    config = load_env("demo", root, environ={})
    return Target(config, config.project("shop"))


def record(store: StateStore, project: str = "shop") -> None:
    """This checkout's record of the project (only whether it exists matters to ownership)."""
    paths = store.ensure_dir("demo", project)
    paths.state.write_text("{}")


# --- the pure rule -----------------------------------------------------------------------------------
def test_owners_are_the_labels_values_and_unlabelled_is_empty() -> None:
    assert ownership.owners_of([{"io.provision.owner": ME}, {}, {"x": "y"}]) == {ME, ""}
    assert ownership.owners_of([]) == frozenset()


@pytest.mark.parametrize(("me", "recorded", "adopted", "accepted"), [
    (ME, False, (), {ME}),
    (ME, True, (), {ME, ""}),  # an earlier version made it here
    (None, False, (), {""}),  # an env without an owner id: unlabelled stacks only
    (ME, False, (OTHER,), {ME, OTHER}),
])
def test_accepted_owners(me: str | None, recorded: bool, adopted: tuple[str, ...], accepted: set[str]) -> None:
    assert ownership.accepted_owners(me, recorded=recorded, adopted=adopted) == accepted


def test_a_foreign_owner_is_named_before_an_unlabelled_one() -> None:
    assert ownership.foreign_owner({ME}, {ME}) is None
    assert ownership.foreign_owner({ME, ""}, {ME}) == ""
    assert ownership.foreign_owner({"", OTHER, ME}, {ME}) == OTHER
    assert ownership.foreign_owner({OTHER}, {ME, OTHER}) is None
    assert ownership.legacy({ME, ""}, ME) and not ownership.legacy({ME}, ME) and not ownership.legacy({""}, None)


def test_the_refusal_names_the_owner_and_adopt() -> None:
    text = ownership.refusal("dev", "uxblog", "compose project uxblog_dev", OTHER, ME)
    assert f"owner {OTHER}" in text and ME in text and "provision adopt --env=dev --project=uxblog --yes" in text
    assert "carries no owner id" in ownership.refusal("dev", "uxblog", "x", "", ME)


# --- observe -------------------------------------------------------------------------------------------
def test_observe_refuses_another_owners_stack_naming_it(project_root: Path, store: StateStore) -> None:
    record(store)  # a record here does not make a labelled stack of another owner ours
    runner = FakeRunner().on("docker", "ps", stdout=ps(OTHER))
    with pytest.raises(ProjectConflict) as refused:
        backend(store, runner).observe(owned_target(project_root), None)
    assert f"owner {OTHER}" in str(refused.value) and "shop_demo" in str(refused.value)


def test_observe_of_its_own_labelled_stack(project_root: Path, store: StateStore) -> None:
    observed = backend(store, FakeRunner().on("docker", "ps", stdout=ps(ME))).observe(owned_target(project_root), None)
    assert observed.exists and observed.running and observed.adopting is None


def test_an_unlabelled_stack_is_ours_only_with_our_record_and_then_taken_over(project_root: Path,
                                                                              store: StateStore) -> None:
    target = owned_target(project_root)
    runner = FakeRunner().on("docker", "ps", stdout=ps(None))
    with pytest.raises(ProjectConflict, match="carries no owner id"):
        backend(store, runner).observe(target, None)
    record(store)
    observed = backend(store, runner).observe(target, None)
    assert observed.exists and observed.adopting is not None and ME in observed.adopting


def test_an_env_without_an_owner_id_sees_unlabelled_stacks_and_refuses_labelled_ones(project_root: Path,
                                                                                    store: StateStore) -> None:
    target = owned_target(project_root, owner=None)
    observed = backend(store, FakeRunner().on("docker", "ps", stdout=ps(None))).observe(target, None)
    assert observed.exists and observed.adopting is None
    with pytest.raises(ProjectConflict, match=f"owner {OTHER}"):
        backend(store, FakeRunner().on("docker", "ps", stdout=ps(OTHER))).observe(target, None)


def test_kept_data_of_another_owner_is_refused(project_root: Path, store: StateStore) -> None:
    runner = FakeRunner().on("docker", "ps", stdout="").on("docker", "volume", "ls", stdout=volume("shop", OTHER))
    with pytest.raises(ProjectConflict, match=f"owner {OTHER}"):
        backend(store, runner).observe(owned_target(project_root), None)
    runner = FakeRunner().on("docker", "ps", stdout="").on("docker", "volume", "ls", stdout=volume("shop", ME))
    assert backend(store, runner).observe(owned_target(project_root), None) == Observed(exists=False,
                                                                                        kept_data="shop_demo_pgdata")


# --- the env: plan, prune, --all, list and status go through observe_env ---------------------------------
def test_observe_env_lists_only_this_checkouts_stacks(project_root: Path, store: StateStore) -> None:
    target = owned_target(project_root)
    record(store, "legacy")  # unlabelled and recorded here: ours
    containers = ps(ME) + ps(OTHER, "blog") + ps(None, "legacy") + ps(None, "stray")
    volumes = volume("gone", ME) + volume("theirs", OTHER) + volume("old", None)
    runner = FakeRunner().on("docker", "ps", stdout=containers).on("docker", "volume", "ls", stdout=volumes)
    found = backend(store, runner).observe_env(target.config, {})
    assert sorted(found) == ["gone", "legacy", "shop"]  # not blog, theirs (another owner), stray or old (no record)
    assert found["gone"] == Observed(exists=False, kept_data="gone_demo_pgdata")
    assert found["legacy"].adopting is not None and found["shop"].adopting is None


def test_usage_reads_only_this_checkouts_containers(project_root: Path, store: StateStore,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr("provision.backends.local.backend.collect",
                        lambda listed, api, projects: seen.extend(listed) or {})
    runner = FakeRunner().on("docker", "ps", stdout=ps(ME) + ps(OTHER, "blog"))
    backend(store, runner).usage(owned_target(project_root).config, None)
    assert {c.labels["io.provision.project"] for c in seen} == {"shop"}


# --- volumes: created with the owner label, never relabelled --------------------------------------------
def rendered_stack(target: Target) -> Any:
    context = build_context(target.config, target.spec, backend="local", ports=None)
    return render_stack(target.config.template_path, context, {})


def made_volumes(store: StateStore, runner: FakeRunner, target: Target) -> list[str]:
    """What the backend's engine creates for the rendered stack's volumes."""
    stack = rendered_stack(target)
    return backend(store, runner).engine.make_volumes(names.compose_project_name(target.env, target.project),
                                                      target.config.owner, stack.document.get("volumes"))


def test_a_new_volume_is_created_with_the_owner_label(project_root: Path, store: StateStore) -> None:
    target = owned_target(project_root)
    runner = FakeRunner().on("docker", "volume", "ls", stdout="").on("docker", "volume", "create")
    assert made_volumes(store, runner, target) == ["shop_demo_pgdata"]
    create = runner.calls[-1]
    assert create[-2:] == ("--", "shop_demo_pgdata")
    labels = {create[i + 1] for i, arg in enumerate(create) if arg == "--label"}
    assert {f"io.provision.owner={ME}", "com.docker.compose.project=shop_demo", "com.docker.compose.volume=pgdata",
            "io.provision.project=shop", "io.provision.env=demo", "io.provision.managed=true"} == labels


def test_an_existing_volume_is_left_as_it_is_and_no_owner_id_creates_nothing(project_root: Path,
                                                                            store: StateStore) -> None:
    target = owned_target(project_root)
    runner = FakeRunner().on("docker", "volume", "ls", stdout=volume("shop", None))
    assert made_volumes(store, runner, target) == []
    assert not any(call[:3] == ("docker", "volume", "create") for call in runner.calls)
    unowned = owned_target(project_root, owner=None)
    assert made_volumes(store, FakeRunner(), unowned) == []


# --- adopt ----------------------------------------------------------------------------------------------
def test_adopt_takes_over_another_owners_stack_and_says_what_it_needs(project_root: Path, store: StateStore) -> None:
    target = owned_target(project_root)
    runner = FakeRunner().on("docker", "ps", stdout=ps(OTHER)).on("docker", "volume", "ls", stdout=volume("shop", OTHER))
    done = backend(store, runner).adopt(target)
    assert done.changed and f"owner {OTHER}" in done.messages[0] and any("secrets.env" in line for line in done.messages)
    assert json.loads((store.paths("demo", "shop").dir / ADOPTED_FILE).read_text()) == {"owners": [OTHER]}
    assert backend(store, runner).observe(target, None).exists  # ours now
    assert backend(store, runner).adopt(target) == Adopted(changed=False)  # nothing more to adopt


def test_adopt_of_nothing_says_so(project_root: Path, store: StateStore) -> None:
    runner = FakeRunner().on("docker", "ps", stdout="").on("docker", "volume", "ls", stdout="")
    with pytest.raises(ProvisionError, match="no compose project shop_demo"):
        backend(store, runner).adopt(owned_target(project_root))


def test_a_declared_or_recorded_name_another_owner_uses_is_listed_as_taken(project_root: Path,
                                                                          store: StateStore) -> None:
    target = owned_target(project_root)  # declares shop
    record(store, "theirs")
    volumes = volume("theirs", OTHER) + volume("stray", None)
    runner = FakeRunner().on("docker", "ps", stdout=ps(OTHER)).on("docker", "volume", "ls", stdout=volumes)
    found = backend(store, runner).observe_env(target.config, {})
    assert sorted(found) == ["shop", "theirs"]
    for name in found:
        assert not found[name].exists and found[name].kept_data is None and found[name].handle is None
        assert f"owner {OTHER}" in (found[name].foreign or "")
