"""backup.offsite on the real engine (issue 22): the stack's offsite service copies the archive to an S3 stand-in
(moto's server, tests/images/s3) over HTTPS with a certificate of the test's own CA (backup.offsite.ca_cert),
encrypted; without the CA the copy fails and `backups --check` says why; the store's retention deletes what the
window does not need, from the store's own listing; the store going away is reported by `backups --check` and,
when it comes back empty, everything is copied again. The stand-in joins the project's network under the
endpoint's name."""

from __future__ import annotations

import shlex
import shutil
import socket
import ssl
import subprocess
import time

import httpx

from tests.archives import archive_when
from tests.conftest import Sandbox, sql

S3_IMAGE = "provision-test/s3:moto"
RCLONE_IMAGE = "provision-test/rclone:1"
KEYS = {"BACKUP_S3_ACCESS_KEY_ID": "test-access-key", "BACKUP_S3_SECRET_ACCESS_KEY": "test-secret-key-42",
        "BACKUP_ENCRYPTION_KEY": "correct horse battery staple"}


def _docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=check).stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# a CA and a certificate it signed for the stand-in (its name on the project's network, and 127.0.0.1 where the test
# reads it), made with the cryptography package of the stand-in's own image: printed as CA, certificate, key
_CERTS = """
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
now = datetime.datetime.now(datetime.timezone.utc)
def make(subject, key, issuer, issuer_key, ca, names=()):
    built = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        built = built.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return built.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
print(make("provision test CA", ca_key, "provision test CA", ca_key, True), end="=====\\n")
print(make(sys.argv[1], key, "provision test CA", ca_key, False,
           [x509.DNSName(sys.argv[1]), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), end="=====\\n")
print(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption()).decode(), end="")
"""
# the stand-in over HTTPS: moto's server with the certificate and key (written to files each time it starts)
_SERVE = ('printf %s "$CERT" > /tmp/cert.pem && printf %s "$KEY" > /tmp/key.pem && '
          'exec python3 -m moto.server -H 0.0.0.0 -p 5000 -c /tmp/cert.pem -k /tmp/key.pem')


def _start_store(sandbox: Sandbox, store: str, port: int) -> str:
    """The S3 stand-in, serving HTTPS with a certificate of a CA made here; the CA's PEM (certs/store-ca.pem)."""
    made = subprocess.run(["docker", "run", "--rm", "-i", "--entrypoint", "python3", S3_IMAGE, "-", store],
                          input=_CERTS, capture_output=True, text=True, timeout=120, check=True).stdout
    ca, cert, key = made.split("=====\n")
    (sandbox.root / "certs").mkdir(exist_ok=True)
    (sandbox.root / "certs" / "store-ca.pem").write_text(ca)
    _docker("run", "-d", "--name", store, "--label", f"io.provision.env={sandbox.env}", "-p", f"127.0.0.1:{port}:5000",
            "-e", f"CERT={cert}", "-e", f"KEY={key}", "--entrypoint", "sh", S3_IMAGE, "-c", _SERVE)
    return ca


def _objects(port: int, bucket: str, ca: str) -> list[str]:
    """The store's keys, read through the stand-in's published port (ListObjectsV2, unsigned: moto allows it)."""
    answer = httpx.get(f"https://127.0.0.1:{port}/{bucket}", params={"list-type": "2"}, timeout=10,
                       verify=ssl.create_default_context(cadata=ca))
    if answer.status_code == 404:
        return []
    answer.raise_for_status()
    return [part.split("</Key>")[0] for part in answer.text.split("<Key>")[1:]]


def test_the_archive_is_copied_offsite_encrypted_pruned_survives_an_outage_and_restores_a_lost_host(
        sandbox: Sandbox) -> None:
    store, port, bucket = f"s3-{sandbox.env}", _free_port(), "provision-backups"
    (sandbox.root / "envs" / f"{sandbox.env}.env").write_text("".join(f"{k}={v}\n" for k, v in KEYS.items()))

    def configure(ca_cert: bool) -> None:
        sandbox.write_env(["shop"], images={**sandbox.images, "db": "provision-test/postgres:17"}, extra=(
            "backup:\n  continuous: true\n  base_every: 1h\n  retention: 1d\n  max_lag: 60s\n"
            f"  offsite: {{endpoint: 'https://{store}:5000', bucket: {bucket}, every: 5s, encrypt: true, "
            f"image: '{RCLONE_IMAGE}'{', ca_cert: certs/store-ca.pem' if ca_cert else ''}}}\n"))

    ca = _start_store(sandbox, store, port)
    configure(ca_cert=True)
    db_url = sandbox.cli("provision", "--project=shop", "--json", "--show-secrets").json()["projects"][0]["db_url"]
    network = f"{sandbox.compose_name('shop')}_default"
    _docker("network", "connect", "--alias", store, network, store)

    # the keys reach the offsite service only, never the output or the other services
    for service in ("db", "api", "archiver"):
        assert "test-secret-key-42" not in _docker("inspect", f"{sandbox.compose_name('shop')}-{service}-1")
    assert all("test-secret-key-42" not in out and "battery" not in out for out in sandbox.outputs)

    sql(db_url, "create table items (id int)")
    sql(db_url, "insert into items select generate_series(1, 100)")
    # the first copy carries the base and the first segments, encrypted, through TLS: minutes on a loaded host
    status = archive_when(sandbox, lambda s: s["health"] == "ok" and s["offsite"]["newest_base"] is not None,
                          timeout=300)
    assert status["offsite"]["health"] == "ok" and status["offsite"]["error"] is None
    stored = _objects(port, bucket, ca)
    control = _docker("exec", f"{sandbox.compose_name('shop')}-db-1", "pg_controldata", "/var/lib/postgresql/data")
    system_id = control.split("Database system identifier:")[1].split()[0]
    assert status["offsite"]["system_identifier"] == system_id
    prefix = f"provision/{sandbox.env}/shop/pgdata/"  # then <system identifier>/, encrypted like every name
    assert len(stored) >= 3 and all(key.startswith(prefix) for key in stored)
    assert not any("wal" in key[len(prefix):] or "base.tar" in key for key in stored)  # names are encrypted too

    # with the passphrase, the store reads back as the archive: finished WAL segments and base backups only
    rclone = _Rclone(network, store, bucket, prefix, ca)
    listed = rclone.files()
    assert f"{system_id}/status.json" in listed
    assert any(line.startswith(f"{system_id}/base/") and line.endswith("base.tar.gz") for line in listed)
    assert any(line.startswith(f"{system_id}/wal/0") for line in listed)
    assert not any(line.endswith(".partial") or "/tmp-" in line for line in listed)

    # the store's retention goes by the store's own listing: two base backups of 2020 and a WAL segment before both
    # are put there (the local repository never had them); the newest base before the window (1d) stays, so does
    # the WAL from its start segment on, the rest goes
    first_wal = min(line.split("/")[-1] for line in listed if line.startswith(f"{system_id}/wal/0"))
    old, kept = f"{system_id}/base/20200101T000000Z", f"{system_id}/base/20200102T000000Z"
    rclone.put({f"{old}/backup_info": _info(1577836805, "000000010000000000000000"), f"{old}/base.tar.gz": "old",
                f"{kept}/backup_info": _info(1577923205, first_wal), f"{kept}/base.tar.gz": "kept",
                f"{system_id}/wal/000000010000000000000000": "old"})

    # without the CA the store's certificate is refused: the copy fails, and `backups --check` says why
    configure(ca_cert=False)
    sandbox.cli("provision", "--project=shop")
    failed = archive_when(sandbox, lambda s: s["offsite"]["health"] == "failed", timeout=60)
    assert "x509: certificate signed by unknown authority" in failed["offsite"]["error"], failed
    assert "backup.offsite.ca_cert" in failed["reason"]
    check = sandbox.cli("backups", "--check", check=False)
    assert check.returncode == 1 and "TLS certificate is not accepted" in check.output

    # with it again (the service starts anew, and prunes at start)
    configure(ca_cert=True)
    sandbox.cli("provision", "--project=shop")
    pruned = archive_when(sandbox, lambda s: s["health"] == "ok" and s["offsite"]["oldest_base"] == "20200102T000000Z",
                          timeout=120)
    after = set(rclone.files())
    assert after >= {*listed, f"{kept}/backup_info", f"{kept}/base.tar.gz"}, (sorted(listed), sorted(after))
    assert not after & {f"{old}/backup_info", f"{old}/base.tar.gz", f"{system_id}/wal/000000010000000000000000"}
    # (3, or 4 when the segment before the real base's start, which the running service had not copied, was copied
    # by the new one before its first pruning)
    assert pruned["offsite"]["prune_error"] is None and pruned["offsite"]["pruned_files"] >= 3

    # the store goes away: the copy fails, `backups --check` says so and exits non-zero
    _docker("stop", "-t", "1", store)
    failed = archive_when(sandbox, lambda s: s["offsite"]["health"] == "failed", timeout=60)
    assert failed["health"] == "failed" and failed["reason"].startswith("offsite copy: copying to")
    check = sandbox.cli("backups", "--check", check=False)
    assert check.returncode == 1 and "offsite copy" in check.output

    # it comes back empty (moto keeps nothing): everything is copied again
    _docker("start", store)
    archive_when(sandbox, lambda s: s["health"] == "ok", timeout=90)
    assert len(_objects(port, bucket, ca)) >= len(stored)
    assert sandbox.cli("backups", "--check").returncode == 0
    _lose_the_host_and_restore_from_the_store(sandbox, store, db_url)


def _info(end_epoch: int, start_wal: str) -> str:
    return (f"start_time=2020-01-01T00:00:00Z\nend_time=2020-01-01T00:00:05Z\nend_epoch={end_epoch}\n"
            f"start_lsn=0/2000028\nend_lsn=0/2000100\nstart_wal={start_wal}\ntimeline=1\n")


class _Rclone:
    """The store read and written as the archive names its files, with the passphrase (rclone's crypt) and the CA,
    from one-off containers on the project's network."""

    def __init__(self, network: str, store: str, bucket: str, prefix: str, ca: str) -> None:
        self.argv = ["docker", "run", "--rm", "--network", network, "--entrypoint", "sh",
                     "-e", "RCLONE_CONFIG_S3_TYPE=s3", "-e", "RCLONE_CONFIG_S3_PROVIDER=Other",
                     "-e", f"RCLONE_CONFIG_S3_ENDPOINT=https://{store}:5000",
                     "-e", "RCLONE_CONFIG_S3_ACCESS_KEY_ID=x", "-e", "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=y",
                     "-e", "RCLONE_CONFIG_SAFE_TYPE=crypt", "-e", f"RCLONE_CONFIG_SAFE_REMOTE=s3:{bucket}/{prefix}",
                     "-e", f"K={KEYS['BACKUP_ENCRYPTION_KEY']}", "-e", f"CA={ca}", RCLONE_IMAGE, "-c"]

    def _run(self, script: str) -> str:
        setup = ('set -e; printf %s "$CA" > /tmp/ca.pem; export RCLONE_CA_CERT=/tmp/ca.pem; '
                 'RCLONE_CONFIG_SAFE_PASSWORD=$(printf %s "$K" | rclone obscure -); export RCLONE_CONFIG_SAFE_PASSWORD\n')
        return subprocess.run([*self.argv, setup + script], capture_output=True, text=True, timeout=120,
                              check=True).stdout

    def files(self) -> list[str]:
        return self._run("rclone lsf -R --files-only safe:").split()

    def put(self, files: dict[str, str]) -> None:
        """Each file (its path under the prefix: its text), written through the crypt remote."""
        self._run("".join(f"printf %s {shlex.quote(text)} | rclone rcat safe:{name}\n" for name, text in files.items()))


def _lose_the_host_and_restore_from_the_store(sandbox: Sandbox, store: str, db_url: str) -> None:
    """The host's data and archive are lost (destroy --delete-data, and the state directory's copy of the project
    with its secrets): a new cluster is provisioned in its place, and restore --to-time --offsite brings back the
    old one's data as it was at the moment asked, from the (encrypted) store alone."""

    def provision() -> str:
        url = sandbox.cli("provision", "--project=shop", "--json", "--show-secrets").json()["projects"][0]["db_url"]
        _docker("network", "connect", "--alias", store, f"{sandbox.compose_name('shop')}_default", store, check=False)
        return str(url)

    old = archive_when(sandbox, lambda s: s["health"] == "ok" and s["offsite"]["newest_base"] is not None,
                       timeout=120)
    sql(db_url, "create table marks (id serial primary key, name text)")
    sql(db_url, "insert into marks (name) values ('A')")
    time.sleep(1.5)
    moment = sql(db_url, "select now()")[0][0]
    time.sleep(1.5)
    sql(db_url, "insert into marks (name) values ('B')")
    # a WAL segment is copied once finished: finish the current one so the store holds both inserts
    _docker("exec", f"{sandbox.compose_name('shop')}-db-1", "sh", "-c",
            'psql -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "select pg_switch_wal()"')
    archive_when(sandbox, lambda s: s["offsite"]["newest_wal"] != old["offsite"]["newest_wal"] and s["offsite"]["health"]
          == "ok" and s["latest"] is not None and s["latest"] > moment.isoformat(), timeout=120)
    time.sleep(6)  # one more round: the store's status.json says how far its copy reaches

    sandbox.cli("destroy", "--project=shop", "--delete-data", "--yes", "--no-backup")
    shutil.rmtree(sandbox.state_dir / sandbox.env / "shop")
    new_url = provision()  # a new, empty cluster with new secrets, archiving under its own identifier
    assert sql(new_url, "select count(*) from pg_tables where tablename = 'marks'") == [(0,)]
    archive_when(sandbox, lambda s: s["offsite"]["system_identifier"] not in (None, old["offsite"]["system_identifier"]),
                 timeout=120)

    done = sandbox.cli("restore", "--project=shop", f"--to-time={moment.isoformat()}", "--offsite", "--yes",
                       "--json").json()["details"]
    assert done["lineage"] == f"offsite-{old['offsite']['system_identifier']}" and done["reached"] == "target"
    assert [r[0] for r in sql(new_url, "select name from marks order by id")] == ["A"]
    assert done["row_counts"]["public.marks"] == 1
