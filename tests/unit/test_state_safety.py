"""The state directory under adverse conditions: planted links, a full disk, values that need quoting, and
PROVISION_STATE_DIR set in `.env`."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from dotenv import dotenv_values

from provision.core.errors import LockTimeout, StateError, StateWriteError
from provision.core.secrets import Secret
from provision.infra import incidents
from provision.infra.fsutil import atomic_write, dotenv_quote, write_json
from provision.service.workspace import Workspace
from provision.state import history
from provision.state.layout import StateLayout
from provision.state.records import StateStore, default_state_dir, hold_lock


def _raise(code: int) -> object:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail


# --- links are never followed ------------------------------------------------------------------------------
def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    store = StateStore(tmp_path / "state")
    lock = store.ensure_dir("dev", "shop").lock
    lock.symlink_to(victim)
    with pytest.raises(StateError, match=rf"{lock} is a symbolic link"):
        with store.lock("dev", "shop", timeout=1):
            pass
    dangling = tmp_path / "state" / "ports.lock"
    dangling.symlink_to(tmp_path / "created-through-the-link")
    with pytest.raises(StateError, match="ports.lock is a symbolic link"):
        with hold_lock(dangling, 1, what="the port registry"):
            pass
    assert victim.read_text() == "precious" and not (tmp_path / "created-through-the-link").exists()


def test_the_lock_still_serialises_and_times_out(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    with store.lock("dev", "shop", timeout=1):
        with pytest.raises(LockTimeout, match="another run is operating on project 'shop'"):
            with store.lock("dev", "shop", timeout=0.1):
                pass
    with store.lock("dev", "shop", timeout=0):
        pass
    assert store.paths("dev", "shop").lock.stat().st_mode & 0o777 == 0o600


def test_a_history_file_that_is_a_link_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    state = tmp_path / "state"
    state.mkdir()
    StateLayout(state).history.symlink_to(victim)
    with pytest.raises(StateError, match=r"history\.jsonl is a symbolic link"):
        history.record(state, env="dev", project="shop", action="provision", config_hash=None, result="ok",
                       duration=1.0, backend="local")
    with pytest.raises(StateError, match=r"history\.jsonl is a symbolic link"):
        list(history.read(state))
    assert victim.read_text() == "precious\n"


def test_history_still_appends_and_reads(tmp_path: Path) -> None:
    for project in ("shop", "blog"):
        history.record(tmp_path, env="dev", project=project, action="provision", config_hash=None, result="ok",
                       duration=1.0, backend="local")
    assert [r["project"] for r in history.read(tmp_path)] == ["shop", "blog"]
    assert list(history.read(tmp_path / "none")) == []
    assert StateLayout(tmp_path).history.stat().st_mode & 0o777 == 0o600


# --- a full disk is a StateError naming the path, the cause and the fix ------------------------------------------
@pytest.mark.parametrize(("code", "fix"), [(errno.ENOSPC, "free space"), (errno.EDQUOT, "quota"),
                                           (errno.EROFS, "read-only"), (errno.EACCES, "permission")])
def test_a_refused_state_write_is_a_state_error_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             code: int, fix: str) -> None:
    store = StateStore(tmp_path / "state")
    store.ensure_dir("dev", "shop")
    monkeypatch.setattr(os, "fsync", _raise(code))
    with pytest.raises(StateError, match="PROVISION_STATE_DIR") as caught:
        store.write_secrets("dev", "shop", {"DB_PASSWORD": Secret("s3cr3t-value")})
    message = str(caught.value)
    assert str(store.paths("dev", "shop").secrets) in message and os.strerror(code) in message and fix in message
    assert "s3cr3t-value" not in message
    assert os.listdir(store.paths("dev", "shop").dir) == []  # no temporary file left
    with pytest.raises(StateError, match=r"state\.json"):
        write_json(tmp_path / "state" / "dev" / "shop" / "state.json", {"a": 1})


def test_a_full_disk_under_history_is_a_state_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "write", _raise(errno.ENOSPC))
    with pytest.raises(StateError, match=rf"cannot write {tmp_path / 'history.jsonl'}: No space left on device"):
        history.record(tmp_path, env="dev", project="shop", action="provision", config_hash=None, result="ok",
                       duration=1.0, backend="local")


def test_a_state_directory_that_cannot_be_made_is_a_state_error(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Path, "mkdir", _raise(errno.EROFS))
    with pytest.raises(StateError, match="read-only"):
        StateStore(tmp_path / "state").ensure_dir("dev", "shop")
    with pytest.raises(StateError, match="read-only"):
        atomic_write(tmp_path / "x" / "y.json", "{}")


def test_an_incident_log_that_cannot_be_written_is_still_no_crash(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", _raise(errno.ENOSPC))
    error = incidents.record(RuntimeError("boom"), tmp_path / "incidents")
    assert "incident" in str(error) and str(tmp_path) not in str(error)
    assert isinstance(StateWriteError("m", path="p", cause=OSError(errno.ENOSPC, "x")), OSError)


# --- secrets.env quoting --------------------------------------------------------------------------------------
ROUND_TRIP = ["pa ss #1 'q'", 'dq "x" \\ back\\slash', "#start", " lead and trail ", "a=b=c", "tab\there",
              "line1\nline2", "cr\rlf", "ünï ∂", "dollar $ alone", "price 5$", "$ {", "cost $HOME", "${HOME}",
              "two $$ dollars", "it's $X", "$X back\\slash", "0123abc", "`cmd` $(cmd)"]


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_secrets_round_trip_through_python_dotenv(tmp_path: Path, value: str) -> None:
    store = StateStore(tmp_path / "state")
    store.write_secrets("dev", "shop", {"DB_PASSWORD": Secret(value), "JWT_SECRET": Secret("plain")})
    assert {k: v.reveal() for k, v in store.read_secrets("dev", "shop").items()} == {
        "DB_PASSWORD": value, "JWT_SECRET": "plain"}
    assert dotenv_values(store.paths("dev", "shop").secrets, interpolate=False)["DB_PASSWORD"] == value


@pytest.mark.parametrize("value", ["$X and \\\\", "$X and \\'", "$X ends \\", "$X\rcr"])
def test_a_value_no_quoting_reads_alike_is_refused_without_showing_it(tmp_path: Path, value: str) -> None:
    store = StateStore(tmp_path / "state")
    with pytest.raises(StateError, match="DB_PASSWORD: a value") as caught:
        store.write_secrets("dev", "shop", {"DB_PASSWORD": Secret(value)})
    assert value not in str(caught.value)
    assert not store.paths("dev", "shop").secrets.exists()


def test_quoting_picks_double_quotes_unless_compose_would_interpolate() -> None:
    assert dotenv_quote("pa ss #1 'q'") == "\"pa ss #1 'q'\""
    assert dotenv_quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert dotenv_quote("it's $X") == "'it\\'s $X'"


# --- PROVISION_STATE_DIR in .env --------------------------------------------------------------------------------
def test_the_state_dir_set_in_dot_env_is_honoured(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    assert default_state_dir(root, {}) == root / ".provision"
    (root / ".env").write_text("# shared settings\nPROVISION_STATE_DIR=var/state\n")
    assert default_state_dir(root, {}) == (root / "var" / "state").resolve()
    (root / ".env").write_text(f"PROVISION_STATE_DIR={tmp_path / 'abs'}\n")
    assert default_state_dir(root, {}) == tmp_path / "abs"
    assert Workspace(root, environ={}).store.root == tmp_path / "abs"
    # the process environment wins
    assert default_state_dir(root, {"PROVISION_STATE_DIR": str(tmp_path / "env")}) == tmp_path / "env"
    assert Workspace(root, environ={"PROVISION_STATE_DIR": str(tmp_path / "env")}).store.root == tmp_path / "env"
