"""backup.offsite (issue 22): the settings and their secrets, the offsite service the stack gets, and the copy's
health read from what the service writes. No Docker."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from provision.core.archiving import (
    ArchiveFacts,
    BackupSettings,
    OffsiteSettings,
    offsite_status,
    read_status,
)
from provision.core.config import load_env
from provision.core.errors import ConfigError
from provision.core.model import Prepared, Target
from provision.core.render import build_context, render_stack
from provision.core.secrets import Secret
from provision.service.engine import with_env_secrets
from tests.conftest import write_env

KEYS = {"BACKUP_S3_ACCESS_KEY_ID": "AKIAEXAMPLEKEY", "BACKUP_S3_SECRET_ACCESS_KEY": "s3-secret-value-123"}
ENV = """
owner: repo-0001
images:
  db: postgres:17
  api: postgrest/postgrest:v12.2.3
backup:
  continuous: true
  offsite: {endpoint: "https://s3.example.com", bucket: my-backups, every: 30s}
projects:
  - name: shop
"""
NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
SECRETS = {name: Secret(f"{name.lower()}-value") for name in
           ("DB_PASSWORD", "JWT_SECRET", "DB_ADMIN_PASSWORD", "AUTHENTICATOR_PASSWORD")}


def _config(root: Path, text: str = ENV, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    write_env(root, "dev", text)
    return load_env("dev", root, environ=KEYS if environ is None else environ)


def test_offsite_settings_are_read_with_defaults(project_root: Path) -> None:
    offsite = _config(project_root).project("shop").backup.offsite
    assert offsite == OffsiteSettings(endpoint="https://s3.example.com", bucket="my-backups", every=30.0)
    assert offsite.location("dev", "shop", "pgdata") == "provision/dev/shop/pgdata"


@pytest.mark.parametrize(("offsite", "message"), [
    ("{bucket: b-1}", "backup.offsite: endpoint: missing"),
    ("{endpoint: ftp://x, bucket: my-backups}", "backup.offsite: endpoint: 'ftp://x' is not an http(s) URL"),
    ("{endpoint: 'https://s3', bucket: My_Bucket}", "backup.offsite: bucket: 'My_Bucket' is not an S3 bucket name"),
    ("{endpoint: 'https://s3', bucket: abc, colour: red}", "backup.offsite: colour: unknown key"),
    ("{endpoint: 'https://s3', bucket: abc, every: 1s}", "backup.offsite: every: '1s' is too short"),
    ("{endpoint: 'https://s3', bucket: abc, encrypt: maybe}", "backup.offsite: encrypt: 'maybe' is not true or false"),
    ("s3", "backup.offsite: must be a mapping"),
])
def test_bad_offsite_settings_name_the_key(project_root: Path, offsite: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(project_root, ENV.replace('{endpoint: "https://s3.example.com", bucket: my-backups, every: 30s}',
                                          offsite))
    assert message in str(caught.value) and "envs/dev.yml" in str(caught.value)


def test_missing_keys_are_named_with_where_they_go(project_root: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(project_root, environ={"BACKUP_S3_ACCESS_KEY_ID": "x"})
    assert "backup.offsite needs BACKUP_S3_SECRET_ACCESS_KEY in the environment or in envs/dev.env" in str(caught.value)
    encrypted = ENV.replace("every: 30s}", "every: 30s, encrypt: true}")
    with pytest.raises(ConfigError, match="needs BACKUP_ENCRYPTION_KEY"):
        _config(project_root, encrypted)
    # a project that turns archiving off needs no keys; neither does a command that contacts nothing (render)
    write_env(project_root, "dev", ENV)
    assert load_env("dev", project_root, environ={}, offline=True).backup_secrets == {}


def test_the_keys_are_hidden_from_the_config_repr(project_root: Path) -> None:
    config = _config(project_root)
    assert set(config.backup_secrets) == set(KEYS)
    assert "s3-secret-value-123" not in repr(config) and "AKIAEXAMPLEKEY" not in repr(config)


def test_the_offsite_service_alone_sees_the_keys_as_references(project_root: Path) -> None:
    config = _config(project_root, ENV.replace("every: 30s}", "every: 30s, encrypt: true}"),
                     {**KEYS, "BACKUP_ENCRYPTION_KEY": "passphrase-xyz"})
    spec = config.project("shop")
    stack = render_stack(config.template_path, build_context(config, spec, backend="local", ports=None), SECRETS)
    assert "s3-secret-value-123" not in stack.text and "passphrase-xyz" not in stack.text
    services = yaml.safe_load(stack.text)["services"]
    offsite = services["offsite"]
    assert offsite["image"] == "rclone/rclone:1.68" and offsite["entrypoint"] == ["sh", "-c"]
    env = offsite["environment"]
    assert env["RCLONE_CONFIG_OFFSITE_SECRET_ACCESS_KEY"].startswith("${BACKUP_S3_SECRET_ACCESS_KEY:?")
    assert env["ENCRYPTION_KEY"].startswith("${BACKUP_ENCRYPTION_KEY:?")
    assert env["PREFIX"] == "provision/dev/shop/pgdata" and env["BUCKET"] == "my-backups" and env["EVERY"] == "30"
    assert offsite["volumes"] == ["pgarchive:/repo"]
    assert services["archiver"]["tmpfs"] == ["/var/lib/postgresql/data"]  # no anonymous volume for the image's VOLUME
    for other in ("db", "api", "archiver"):
        assert "BACKUP_" not in json.dumps(services[other])
    # the stack's secrets carry the env's keys (the compose file's references are filled from them); only those
    target = Target(config, spec)
    prepared = with_env_secrets(target, Prepared(secrets=SECRETS))
    assert prepared.secrets["BACKUP_ENCRYPTION_KEY"].reveal() == "passphrase-xyz"
    assert set(prepared.secrets) == {*SECRETS, *KEYS, "BACKUP_ENCRYPTION_KEY"}
    unarchived = replace(spec, backup=replace(spec.backup, continuous=False))
    assert with_env_secrets(Target(config, unarchived), Prepared(secrets=SECRETS)).secrets == SECRETS


def test_without_encryption_the_offsite_service_has_no_passphrase(project_root: Path) -> None:
    config = _config(project_root)
    stack = render_stack(config.template_path, build_context(config, config.project("shop"), backend="coolify",
                                                             ports=None), SECRETS)
    env = yaml.safe_load(stack.text)["services"]["offsite"]["environment"]
    assert "ENCRYPTION_KEY" not in env and env["RCLONE_CONFIG_OFFSITE_ACCESS_KEY_ID"] == "${BACKUP_S3_ACCESS_KEY_ID}"


def _facts(offsite: dict[str, object] | None, *, running: bool = True) -> ArchiveFacts:
    return ArchiveFacts(lineage="pgdata", running=True, status_text=None, offsite_running=running,
                        offsite_text=json.dumps(offsite) if offsite is not None else None)


SETTINGS = OffsiteSettings(endpoint="http://s3:5000", bucket="backups", every=10.0)


@pytest.mark.parametrize(("facts", "health", "reason"), [
    (_facts({"last_success": "2026-12-08T11:59:55Z", "last_error": ""}), "ok", "copied 5 s ago"),
    (_facts({"last_success": "2026-12-08T11:59:55Z", "last_error": "connection refused"}), "failed",
     "copying to http://s3:5000/backups/provision fails: connection refused"),
    (_facts({"last_success": "2026-12-08T11:58:00Z", "last_error": ""}), "stale",
     "the last copy that succeeded is 120 s old (limit 60 s)"),
    (_facts({"last_success": "", "last_error": ""}), "failed", "no copy has succeeded yet"),
    (_facts(None), "failed", "the offsite service has written no status yet"),
    (_facts({"last_success": "2026-12-08T11:59:55Z"}, running=False), "failed",
     "the offsite service's container is not running"),
])
def test_the_copy_is_never_ok_unless_a_recent_copy_succeeded(facts: ArchiveFacts, health: str, reason: str) -> None:
    found = offsite_status(facts, SETTINGS, NOW, max_lag=60.0)
    assert (found.health, found.reason) == (health, reason)


def test_a_failing_copy_turns_the_project_s_backup_health(tmp_path: Path) -> None:
    info = "start_time=2026-12-08T10:00:00Z\nend_time=2026-12-08T10:00:05Z\nstart_wal=000000010000000000000002\n"
    status = {"updated": (NOW - timedelta(seconds=2)).isoformat(), "streaming": True,
              "latest_recoverable": (NOW - timedelta(seconds=2)).isoformat(), "lag_seconds": "0"}
    facts = ArchiveFacts(lineage="pgdata", running=True, status_text=json.dumps(status), infos={"b1": info},
                         offsite_running=True, offsite_text=json.dumps({"last_success": "", "last_error": "timeout"}))
    settings = BackupSettings(continuous=True, offsite=SETTINGS)
    found = read_status(facts, settings, NOW)
    assert found.health == "failed" and found.reason.startswith("offsite copy: copying to")
    assert found.to_dict()["offsite"]["error"] == "timeout"
    healthy = read_status(facts, BackupSettings(continuous=True), NOW)
    assert healthy.health == "ok" and healthy.offsite is None
