"""backup.offsite (issue 22): the settings and their secrets, the offsite service the stack gets, and the copy's
health read from what the service writes. No Docker."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from provision.core.archiving import (
    ArchiveFacts,
    BackupSettings,
    BaseBackup,
    OffsiteSettings,
    offsite_status,
    read_status,
    retained,
)
from provision.core.config import load_env
from provision.core.errors import ConfigError
from provision.core.model import Prepared, Target
from provision.core.render import OFFSITE_SCRIPT, build_context, render_stack
from provision.core.secrets import Secret
from provision.service.engine import with_env_secrets
from tests.conftest import write_env
from tests.unit.userland import Userland

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


# --- backup.offsite.ca_cert: a store whose TLS certificate a private CA signed ---------------------------------
# a self-signed CA certificate (EC P-256, made with the cryptography package): nothing secret
CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBTzCB9aADAgECAhRBIfXCQH6VaHGnSq/QF7TYUTvWUzAKBggqhkjOPQQDAjAc
MRowGAYDVQQDDBFwcm92aXNpb24gdGVzdCBDQTAgFw0yNjEyMDgwMjIyNDdaGA8y
MTI2MTExNDAzMjI0N1owHDEaMBgGA1UEAwwRcHJvdmlzaW9uIHRlc3QgQ0EwWTAT
BgcqhkjOPQIBBggqhkjOPQMBBwNCAAQIbGE/zB+NLxVNChRy6XM8LDPJXOwcYuUC
bvxHusDO9DLC7sX6X/fHSvUZZM0RWFStGups1abxzWjZPeOWbdPNoxMwETAPBgNV
HRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQDecQcx79tLffzJMMRAcL8y
lWnORYOu7XykpJ9gTuZ9ZgIhAO2K6iHY5Ni+c6S5vvvB0U45S+FGTsrRremD/Ppe
6Beb
-----END CERTIFICATE-----
"""
WITH_CA = ENV.replace("every: 30s}", "every: 30s, ca_cert: certs/store-ca.pem}")


@pytest.mark.parametrize("backend", ["local", "coolify"])
def test_the_ca_reaches_the_offsite_service_as_text_in_its_environment(project_root: Path, backend: str) -> None:
    """No file is mounted (Coolify has none of this machine's): the PEM travels base64 in one variable, which the
    script writes to a file for rclone; without ca_cert there is none (the system's CAs verify the store)."""
    (project_root / "certs").mkdir()
    (project_root / "certs" / "store-ca.pem").write_text(CA_PEM)
    config = _config(project_root, WITH_CA)
    offsite = config.project("shop").backup.offsite
    assert offsite is not None and offsite.ca_cert == "certs/store-ca.pem" and offsite.ca_pem == CA_PEM
    assert CA_PEM not in repr(offsite)  # long, and nothing to read there
    stack = render_stack(config.template_path, build_context(config, config.project("shop"), backend=backend,
                                                             ports=None), SECRETS)
    services = yaml.safe_load(stack.text)["services"]
    env = services["offsite"]["environment"]
    assert base64.b64decode(env["CA_CERT_BASE64"]).decode() == CA_PEM and env["RETENTION"] == str(7 * 86400)
    assert all("CA_CERT" not in json.dumps(services[other]) for other in ("db", "api", "archiver"))
    plain = _config(project_root)
    stack = render_stack(plain.template_path, build_context(plain, plain.project("shop"), backend=backend,
                                                            ports=None), SECRETS)
    assert "CA_CERT_BASE64" not in yaml.safe_load(stack.text)["services"]["offsite"]["environment"]


@pytest.mark.parametrize(("content", "message"), [
    (None, "backup.offsite: ca_cert: certs/store-ca.pem: no such file (paths are relative to "),
    ("hello\n", "backup.offsite: ca_cert: certs/store-ca.pem: not a PEM certificate (no -----BEGIN CERTIFICATE-----"),
    (CA_PEM.replace("MIIBTzCB", "MIIB!!!!"), "backup.offsite: ca_cert: certs/store-ca.pem: not a PEM certificate ("),
    (CA_PEM + "-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----\n",
     "backup.offsite: ca_cert: certs/store-ca.pem: holds a private key"),
    (b"\x30\x82\x01\x4f\xff", "backup.offsite: ca_cert: certs/store-ca.pem: not a PEM certificate (binary: a DER"),
    ("x" * 70000, "is more than a CA certificate"),
])
def test_a_ca_file_that_is_missing_or_not_pem_is_refused_naming_file_and_key(
        project_root: Path, content: str | bytes | None, message: str) -> None:
    if content is not None:
        (project_root / "certs").mkdir()
        path = project_root / "certs" / "store-ca.pem"
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        _config(project_root, WITH_CA)
    assert message in str(caught.value) and str(caught.value).startswith("envs/dev.yml: ")


def test_a_ca_for_a_plain_http_endpoint_is_refused(project_root: Path) -> None:
    (project_root / "certs").mkdir()
    (project_root / "certs" / "store-ca.pem").write_text(CA_PEM)
    with pytest.raises(ConfigError, match="ca_cert: certs/store-ca.pem is for TLS, but endpoint 'http://s3:9000' is "
                                          "plain HTTP"):
        _config(project_root, WITH_CA.replace("https://s3.example.com", "http://s3:9000"))


def test_a_project_s_own_offsite_names_its_layer(project_root: Path) -> None:
    text = ENV.replace("  - name: shop\n", "  - name: shop\n    backup:\n      offsite: {endpoint: 'https://s3.x', "
                                           "bucket: abc, ca_cert: nope.pem}\n")
    with pytest.raises(ConfigError, match=r"projects\[0\]\.backup\.offsite: ca_cert: nope.pem: no such file"):
        _config(project_root, text)


def test_a_refused_prune_turns_the_copy_failed_and_says_nothing_was_deleted() -> None:
    facts = _facts({"last_success": "2026-12-08T11:59:55Z", "last_error": "", "prune_error": "base 20261201T000000Z's "
                    "start segment 000000010000000000000002 is not in the store: nothing deleted"})
    found = offsite_status(facts, SETTINGS, NOW, max_lag=60.0)
    assert found.health == "failed"
    assert found.reason == ("retention in http://s3:5000/backups/provision deleted nothing: base 20261201T000000Z's "
                            "start segment 000000010000000000000002 is not in the store: nothing deleted")
    pruned = offsite_status(_facts({"last_success": "2026-12-08T11:59:55Z", "pruned_at": "2026-12-08T11:59:56Z",
                                    "pruned_files": "7", "oldest_base": "20261201T000000Z"}), SETTINGS, NOW, 60.0)
    assert pruned.health == "ok" and pruned.to_dict()["pruned_files"] == 7
    assert pruned.to_dict()["oldest_base"] == "20261201T000000Z" and pruned.to_dict()["pruned_at"].startswith("2026")


# --- the store's retention: offsite.sh's prune on a fake store ----------------------------------------------------
# rclone stood in for by a script over a directory: `lsf -R --files-only`, `cat`, `delete --files-from-raw` of the
# remote `offsite:<path>` (= $STORE/<path>); $FAIL makes one of them fail like an unreachable store
FAKE_RCLONE = """#!/bin/sh
cmd=$1; shift; p=""; from=""
while [ $# -gt 0 ]; do case $1 in offsite:*) p=$STORE/${1#offsite:};; --files-from-raw) from=$2; shift;; esac; shift; done
if [ "$cmd" = "${FAIL:-}" ]; then echo "2026/12/08 12:00:00 ERROR : $cmd: dial tcp: connection refused" >&2; exit 1; fi
case $cmd in
  lsf) cd "$p" && find . -type f | sed 's#^[.]/##' ;;
  cat) cat "$p" ;;
  delete) while read -r f; do rm "$p/$f" && echo "$f" >> "$STORE/deleted"; done < "$from" ;;
  *) exit 2 ;;
esac
"""
SYSID = "7012345678901234567"
DAY = 86400


def _store(tmp_path: Path, bases: dict[str, tuple[int, str]], wal: list[str]) -> Path:
    """A fake store's copy of one cluster: `bases` (name: (end epoch, start WAL)), each with a base.tar.gz, and
    `wal` segments."""
    copy = tmp_path / "store" / "bkt" / "p" / SYSID
    for name, (end, start) in bases.items():
        (copy / "base" / name).mkdir(parents=True)
        (copy / "base" / name / "base.tar.gz").write_text("tar")
        if end >= 0:
            (copy / "base" / name / "backup_info").write_text(
                f"start_time=x\nend_time=y\nend_epoch={end}\nstart_lsn=0/2000028\nstart_wal={start}\n")
    (copy / "wal").mkdir(parents=True, exist_ok=True)
    for name in wal:
        (copy / "wal" / name).write_text("")
    (copy / "status.json").write_text("{}")
    return copy


def _prune(userland: Userland, tmp_path: Path, retention: int, fail: str = "", local: dict[str, list[str]] | None = None) -> dict[str, str]:
    """offsite.sh's prune (and then rules) run once with the fake rclone: its variables afterwards."""
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "rclone").write_text(FAKE_RCLONE)
    (stub / "rclone").chmod(0o755)
    repo = tmp_path / "repo"
    for part, names in (local or {"base": [], "wal": []}).items():
        (repo / part).mkdir(parents=True, exist_ok=True)
        for name in names:
            (repo / part / name).mkdir() if part == "base" else (repo / part / name).write_text("")
    script = OFFSITE_SCRIPT.read_text()
    functions = "\n".join(script[script.index(f"{name}() {{"):].split("\n}\n", 1)[0] + "\n}"
                          for name in ("why", "prune", "rules"))
    run = (f"{functions}\nD={repo}; remote=offsite:bkt/p/; sysid={SYSID}; flags='--retries 1 --timeout 60s'\n"
           f"RETENTION={retention}; log=$(mktemp); gone=$(mktemp); filters=$(mktemp); infos=''; kept=''; perr=''\n"
           "prune; rc=$?; rules\n"
           'printf "rc=%s\\nperr=%s\\nkept=%s\\npruned=%s\\n" "$rc" "$perr" "$kept" "${pruned:-}"; '
           'sed "s/^/rule=/" "$filters"')
    out = userland.run(run, stub=stub, env={"STORE": str(tmp_path / "store"), "FAIL": fail}).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        found[key] = f"{found[key]}\n{value}" if key in found else value
    return found


def _seg(n: int, timeline: int = 1) -> str:
    return f"{timeline:08X}{n // 256:08X}{n % 256:08X}"


def _left(copy: Path) -> set[str]:
    """The files in a fake store's copy (the store has no directories: the empty ones a deletion leaves do not
    count)."""
    return {str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()}


def test_the_store_keeps_the_window_and_the_newest_base_before_it_as_retained_says(tmp_path: Path, userland: Userland) -> None:
    now = int(datetime.now(UTC).timestamp())
    days = (10, 8, 6, 3, 1)
    names = [f"2026110{i}T000000Z" for i in range(len(days))]
    copy = _store(tmp_path, {n: (now - d * DAY, _seg(2 * i + 2)) for i, (n, d) in enumerate(zip(names, days, strict=True))},
                  [_seg(n) for n in range(1, 12)] + [_seg(1, timeline=2), "00000002.history"])
    (copy / "base" / "20261031T000000Z").mkdir()  # an older base the store never got whole: no backup_info
    (copy / "base" / "20261031T000000Z" / "base.tar.gz").write_text("half")
    found = _prune(userland, tmp_path, 7 * DAY, local={"base": [names[0], names[1]], "wal": [_seg(1), _seg(3), _seg(4)]})
    assert (found["rc"], found["perr"], found["kept"]) == ("0", "", names[1])
    ends = [datetime.fromtimestamp(now - d * DAY, UTC) for d in days]
    expected = {b.name for b in retained([BaseBackup(n, end, end, "", "", _seg(2 * i + 2), 1)
                                          for i, (n, end) in enumerate(zip(names, ends, strict=True))],
                                         7 * DAY, datetime.now(UTC))}
    assert {f.split("/")[1] for f in _left(copy) if f.startswith("base/")} == expected == set(names[1:])
    # the WAL before the oldest kept base's start segment goes, on any timeline (as pg_archivecleanup does)
    assert sorted(f[4:] for f in _left(copy) if f.startswith("wal/")) == sorted(
        [_seg(n) for n in range(4, 12)] + ["00000002.history"])
    assert found["pruned"] == str(len((tmp_path / "store" / "deleted").read_text().splitlines())) == "7"
    # what it deleted is not copied again from the local repository meanwhile; the rest is
    assert found["rule"].splitlines()[:3] == [f"- /base/{names[0]}/**", f"- /wal/{_seg(1)}", f"- /wal/{_seg(3)}"]
    assert found["rule"].splitlines()[3:] == ["- /wal/*.partial", "- /wal/.*", "+ /wal/*", "- /base/tmp-*/**",
                                              "+ /base/*/**", "- *"]


def test_the_store_keeps_everything_within_the_window(tmp_path: Path, userland: Userland) -> None:
    now = int(datetime.now(UTC).timestamp())
    copy = _store(tmp_path, {"20261101T000000Z": (now - 3 * DAY, _seg(3)), "20261102T000000Z": (now - DAY, _seg(5))},
                  [_seg(n) for n in range(1, 7)])
    before = _left(copy)
    found = _prune(userland, tmp_path, 7 * DAY)
    assert (found["rc"], found["kept"]) == ("0", "20261101T000000Z") and _left(copy) == {
        p for p in before if p != f"wal/{_seg(1)}" and p != f"wal/{_seg(2)}"}


@pytest.mark.parametrize(("fail", "bases", "perr"), [
    ("lsf", None, "listing the store: ERROR : lsf: dial tcp: connection refused"),
    ("cat", None, "reading base/20261101T000000Z/backup_info: ERROR : cat: dial tcp: connection refused"),
    ("", {"20261101T000000Z": (0, _seg(9)), "20261102T000000Z": (1, _seg(10))},  # no segment 10 in the store
     f"base 20261102T000000Z's start segment {_seg(10)} is not in the store: nothing deleted"),
    ("delete", None, "deleting: ERROR : delete: dial tcp: connection refused"),
])
def test_the_store_loses_nothing_when_its_listing_cannot_be_trusted(
        tmp_path: Path, fail: str, bases: dict[str, tuple[int, str]] | None, perr: str, userland: Userland) -> None:
    copy = _store(tmp_path, bases or {"20261101T000000Z": (0, _seg(2)), "20261102T000000Z": (1, _seg(4))},
                  [_seg(n) for n in range(1, 8)])
    before = _left(copy)
    found = _prune(userland, tmp_path, 7 * DAY, fail=fail)
    assert (found["rc"], found["perr"]) == ("1", perr) and _left(copy) == before


def test_a_backup_info_without_its_end_deletes_nothing(tmp_path: Path, userland: Userland) -> None:
    copy = _store(tmp_path, {"20261101T000000Z": (0, _seg(2)), "20261102T000000Z": (1, _seg(4))},
                  [_seg(n) for n in range(1, 8)])
    (copy / "base" / "20261101T000000Z" / "backup_info").write_text("start_time=x\nstart_wal=garbage\n")
    before = _left(copy)
    found = _prune(userland, tmp_path, 7 * DAY)
    assert found["rc"] == "1" and _left(copy) == before
    assert found["perr"] == "base/20261101T000000Z/backup_info in the store has no end_epoch or start_wal"


@pytest.mark.parametrize(("log", "said"), [
    ('2026/12/08 03:17:43 NOTICE: Config file "/root/.config/rclone/rclone.conf" not found - using defaults\n'
     "2026/12/08 03:17:44 ERROR : Attempt 1/1 failed with 1 errors and: RequestError: send request failed\n"
     'caused by: Head "https://s3:5000/bkt/a/f": x509: certificate signed by unknown authority\n'
     "2026/12/08 03:17:44 Failed to copy: RequestError: send request failed\n"
     'caused by: Head "https://s3:5000/bkt/a/f": x509: certificate signed by unknown authority\n',
     "the store's TLS certificate is not accepted: x509: certificate signed by unknown authority (a private CA? "
     "backup.offsite.ca_cert names its PEM file)"),
    ("2026/12/08 03:17:44 Failed to copy: RequestError: send request failed\n"
     "caused by: Put https://s3:5000/bkt: dial tcp 10.0.0.9:5000: connect: connection refused\n",
     "Failed to copy: RequestError: send request failed caused by: Put https://s3:5000/bkt: dial tcp 10.0.0.9:5000: "
     "connect: connection refused"),
    ("something else entirely\n", "something else entirely"),
])
def test_the_copy_s_error_is_rclone_s_last_with_its_cause_and_a_certificate_is_named(
        tmp_path: Path, log: str, said: str, userland: Userland) -> None:
    script = OFFSITE_SCRIPT.read_text()
    why = script[script.index("why() {"):].split("\n}\n", 1)[0] + "\n}"
    (tmp_path / "log").write_text(log)
    found = userland.run(f'{why}\nprintf %s "$(why {tmp_path}/log)"').stdout  # as the script uses it: $(why log)
    assert found == said
