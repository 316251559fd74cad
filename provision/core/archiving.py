"""Continuous archiving (point-in-time recovery), the pure part: the `backup:` settings of an env file, the archive
facts the archiver writes (status.json, each base backup's backup_info) read into a window and a health, the time a
restore is asked for, and which base backup a restore starts from. Nothing here touches Docker.

The archiver itself is a POSIX sh loop in the project's stack (templates/archiver.sh): pg_receivewal streams WAL
through a physical replication slot into the repository volume, pg_basebackup takes a base backup every
`base_every`, and status.json says how far the archive reaches (docs/architecture.md)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .resources import parse_size, show_size

# the repository volume's compose key, the socket volume's, and where the archiver mounts the repository
REPOSITORY_VOLUME = "pgarchive"
SOCKET_VOLUME = "pgsocket"
REPOSITORY_PATH = "/repo"
# the replication role the archiver logs in as (LOGIN REPLICATION, nothing else; docs/security.md)
ARCHIVER_ROLE = "provision_archiver"
SLOT = "provision_archiver"
# the archiver's command: as root only to hand the repository to the postgres user (whose files a restore's postgres
# reads), then the script (its ARCHIVER_SCRIPT variable) as postgres, with gosu (Debian images), su-exec (Alpine) or
# setpriv (util-linux)
START = (f"mkdir -p {REPOSITORY_PATH} && find {REPOSITORY_PATH} ! -user postgres -exec chown postgres:postgres {{}} + "
         f"&& for t in gosu su-exec; do command -v $t >/dev/null && exec $t postgres sh -c 'eval \"$ARCHIVER_SCRIPT\"'; "
         f"done; exec setpriv --reuid=postgres --regid=postgres --init-groups sh -c 'eval \"$ARCHIVER_SCRIPT\"'")
POLL_SECONDS = 5  # the archiver writes status.json this often
NOT_RUNNING = "the archiver container is not running"  # the reason a restore does not wait out
STALE_AFTER = 4 * POLL_SECONDS  # a status.json older than this: the archiver is not writing it (stale)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_KEYS = ("continuous", "retention", "base_every", "max_lag", "max_slot_wal_keep_size", "repository", "offsite")
# backup.offsite: an S3-compatible store the stack's offsite service copies the archive to (templates/offsite.sh);
# its keys, and the encryption passphrase, come from the environment or envs/<env>.env, never from a committed file
S3_ACCESS_KEY = "BACKUP_S3_ACCESS_KEY_ID"
S3_SECRET_KEY = "BACKUP_S3_SECRET_ACCESS_KEY"
ENCRYPTION_KEY = "BACKUP_ENCRYPTION_KEY"
OFFSITE_SECRETS = (S3_ACCESS_KEY, S3_SECRET_KEY, ENCRYPTION_KEY)
DEFAULT_OFFSITE_IMAGE = "rclone/rclone:1.68"
_OFFSITE_KEYS = ("endpoint", "bucket", "prefix", "region", "encrypt", "every", "image", "ca_cert")
CA_CERT_LIMIT = 64 * 1024  # bytes of PEM: it travels in an environment variable (the offsite service's, base64)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def parse_duration(value: object) -> float:
    """Seconds in a duration such as 60s, 10m, 24h, 7d, 2w (a bare number is seconds); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration such as 60s, 10m, 24h or 7d")
    found = _DURATION.match(str(value))
    if found is None:
        raise ValueError(f"{value!r} is not a duration such as 60s, 10m, 24h or 7d")
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


def show_duration(seconds: float) -> str:
    """7d, 24h, 10m, 60s, 1.5s: the largest whole unit."""
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class OffsiteSettings:
    """`backup.offsite`: where the offsite service copies the archive (an S3-compatible store), how often, and
    whether the files are encrypted before they leave (rclone's crypt, with BACKUP_ENCRYPTION_KEY)."""

    endpoint: str
    bucket: str
    prefix: str = "provision"
    region: str = "us-east-1"
    encrypt: bool = False
    every: float = 60.0  # seconds between two copies
    image: str = DEFAULT_OFFSITE_IMAGE  # an image with rclone and a POSIX sh (the official rclone/rclone)
    # the CA certificate(s) the store's TLS certificate is verified against instead of the system's (rclone's
    # --ca-cert), for a store with a private or self-signed one: the file as the env file names it, and its PEM text
    ca_cert: str | None = None
    ca_pem: str | None = field(default=None, repr=False)

    @property
    def secret_names(self) -> tuple[str, ...]:
        """The env secrets the offsite service needs."""
        return (S3_ACCESS_KEY, S3_SECRET_KEY, *((ENCRYPTION_KEY,) if self.encrypt else ()))

    @property
    def ca_base64(self) -> str | None:
        """ca_cert's PEM as the offsite containers get it (CA_CERT_BASE64: one line, whatever carries it)."""
        return base64.b64encode(self.ca_pem.encode("ascii")).decode() if self.ca_pem else None

    def location(self, env: str, project: str, lineage: str) -> str:
        """Where a lineage's copy lives in the bucket: `<prefix>/<env>/<project>/<lineage>`."""
        return f"{self.prefix}/{env}/{project}/{lineage}"

    def shown(self) -> str:
        return f"{self.endpoint.rstrip('/')}/{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class BackupSettings:
    """A project's `backup:` block (the env's, a project's own keys laid over it)."""

    continuous: bool = False
    retention: float = 7 * 86400  # seconds of history kept recoverable
    base_every: float = 86400  # seconds between base backups
    max_lag: float = 60.0  # seconds: `backups --check`'s objective
    max_slot_wal_keep_size: int = 1024**3  # bytes of WAL the slot may hold back (a dead archiver's ceiling)
    offsite: OffsiteSettings | None = None  # a copy of the archive off the engine's host

    @property
    def slot_keep_setting(self) -> str:
        """max_slot_wal_keep_size as PostgreSQL reads it (MB)."""
        return f"{max(1, self.max_slot_wal_keep_size // 1024**2)}MB"

    def to_context(self) -> dict[str, Any]:
        return {"continuous": self.continuous, "retention": int(self.retention), "base_every": int(self.base_every),
                "max_lag": self.max_lag, "max_slot_wal_keep_size": show_size(self.max_slot_wal_keep_size)}


DEFAULT_BACKUP = BackupSettings()


def backup_settings(*layers: Mapping[str, Any], where: Sequence[str] = ("backup",),
                    root: Path | None = None) -> BackupSettings:
    """The settings of `layers` (env first, then a project's own), each key checked; ValueError naming the key
    (`<where>.<key>: ...`, `where` the layer's name in the env file) of the first problem. `root`: where the
    files the settings name (backup.offsite.ca_cert) are relative to (the current directory when None)."""
    values: dict[str, Any] = {}
    for index, layer in enumerate(layers):
        name = where[min(index, len(where) - 1)]
        if not isinstance(layer, Mapping):
            raise ValueError(f"{name}: must be a mapping such as {{continuous: true, retention: 7d}}")
        for key, value in layer.items():
            if key not in _KEYS:
                raise ValueError(f"{name}.{key}: unknown key: it is one of {', '.join(_KEYS)}")
            values[key] = (name, value)
    settings: dict[str, Any] = {}
    for key, (name, value) in values.items():
        try:
            settings[key] = _setting(key, value, root)
        except ValueError as exc:
            raise ValueError(f"{name}.{key}: {exc}") from None
    settings.pop("repository", None)
    made = BackupSettings(**settings)
    if made.base_every > made.retention:
        name = values.get("base_every", values.get("retention", ("backup", None)))[0]
        raise ValueError(f"{name}.base_every: {show_duration(made.base_every)} is longer than retention "
                         f"{show_duration(made.retention)}: a base backup at least once per retention window")
    return made


def _setting(key: str, value: object, root: Path | None = None) -> object:
    if key == "continuous":
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return value
    if key == "repository":
        if value != "volume":
            raise ValueError(f"{value!r} is not a repository this version can write: only 'volume' (the default: a "
                             f"volume on the engine's host, kept by destroy unless --delete-data); for a copy in an "
                             f"S3-compatible store as well, set backup.offsite")
        return value
    if key == "offsite":
        return _offsite(value, root)
    if key == "max_slot_wal_keep_size":
        size = parse_size(value)
        if size < 64 * 1024**2:
            raise ValueError(f"{value!r} is under 64M: the slot would drop WAL the archiver still needs")
        return size
    seconds = parse_duration(value)
    if seconds <= 0 or (key == "base_every" and seconds < 60):
        raise ValueError(f"{value!r} is too short" + (" (at least 60s between base backups)" if key == "base_every"
                                                       else ""))
    return seconds


def _offsite(value: object, root: Path | None = None) -> OffsiteSettings:
    """`backup.offsite` checked: a mapping with an http(s) endpoint and an S3 bucket name at least; its ca_cert
    read (relative to `root`) and checked to be PEM certificates."""
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping such as {endpoint: https://s3.example.com, bucket: backups}")
    for key in value:
        if key not in _OFFSITE_KEYS:
            raise ValueError(f"{key}: unknown key: it is one of {', '.join(_OFFSITE_KEYS)}")
    for key in ("endpoint", "bucket"):
        if not value.get(key):
            raise ValueError(f"{key}: missing: the offsite store needs an endpoint URL and a bucket")
    endpoint, bucket = str(value["endpoint"]).strip(), str(value["bucket"]).strip()
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", endpoint):
        raise ValueError(f"endpoint: {endpoint!r} is not an http(s) URL such as https://s3.eu-west-1.amazonaws.com")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"bucket: {bucket!r} is not an S3 bucket name (3 to 63 lowercase letters, digits, dots "
                         f"and hyphens, starting and ending with a letter or digit)")
    prefix = str(value.get("prefix", "provision")).strip().strip("/")
    if not _PREFIX.match(prefix):
        raise ValueError(f"prefix: {prefix!r} is not a key prefix of letters, digits, '.', '_', '-' and '/'")
    encrypt = value.get("encrypt", False)
    if not isinstance(encrypt, bool):
        raise ValueError(f"encrypt: {encrypt!r} is not true or false")
    try:
        every = parse_duration(value.get("every", "60s"))
    except ValueError as exc:
        raise ValueError(f"every: {exc}") from None
    if every < 5:
        raise ValueError(f"every: {value.get('every')!r} is too short (at least 5s between two copies)")
    region, image = str(value.get("region", "us-east-1")).strip(), str(value.get("image", DEFAULT_OFFSITE_IMAGE))
    if not region or not image.strip():
        raise ValueError("region and image must not be empty")
    ca_cert = value.get("ca_cert")
    ca_pem = None
    if ca_cert is not None:
        if not isinstance(ca_cert, str) or not ca_cert.strip():
            raise ValueError(f"ca_cert: {ca_cert!r} is not a path to a PEM file (relative to the repository)")
        ca_cert = ca_cert.strip()
        if not endpoint.startswith("https://"):
            raise ValueError(f"ca_cert: {ca_cert} is for TLS, but endpoint {endpoint!r} is plain HTTP: use an "
                             f"https:// endpoint or drop ca_cert")
        ca_pem = read_ca_cert(ca_cert, root or Path.cwd())
    return OffsiteSettings(endpoint=endpoint, bucket=bucket, prefix=prefix, region=region, encrypt=encrypt,
                           every=every, image=image.strip(), ca_cert=ca_cert, ca_pem=ca_pem)


def read_ca_cert(name: str, root: Path) -> str:
    """The PEM text of the CA file `name` (relative to `root`, or absolute): one or more certificates and nothing
    secret; ValueError (`ca_cert: <name>: why`) when it is missing, too large, not PEM, or holds a private key."""
    path = root / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"ca_cert: {name}: no such file (paths are relative to {root})") from None
    except OSError as exc:
        raise ValueError(f"ca_cert: {name}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > CA_CERT_LIMIT:
        raise ValueError(f"ca_cert: {name}: {len(data)} bytes is more than a CA certificate ({CA_CERT_LIMIT} at "
                         f"most): give the store's CA alone, not a whole bundle")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"ca_cert: {name}: not a PEM certificate (binary: a DER file? convert it with "
                         f"`openssl x509 -inform der -in {name} -out ca.pem`)") from None
    if "PRIVATE KEY-----" in text:
        raise ValueError(f"ca_cert: {name}: holds a private key: give the CA's certificate alone (it is not a "
                         f"secret, and reaches the offsite service's environment; the key must not)")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"ca_cert: {name}: not a PEM certificate (no -----BEGIN CERTIFICATE----- block)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(f"ca_cert: {name}: not a PEM certificate ({getattr(exc, 'reason', None) or exc})") from None
    return text


OFFSITE_LINEAGE = "offsite-"  # + a system identifier: a copy pulled from the store, in the repository volume


@dataclass(frozen=True)
class OffsiteCopy:
    """One database cluster's copy in the store: its system identifier and the latest moment it recovers to (as
    its last copied status.json says; None when it says nothing)."""

    system_identifier: str
    latest: str | None


def offsite_missing(settings: BackupSettings, available: Mapping[str, object]) -> list[str]:
    """The env secrets continuous archiving with an offsite copy needs and `available` lacks."""
    if not settings.continuous or settings.offsite is None:
        return []
    return [name for name in settings.offsite.secret_names if not available.get(name)]


# --- time -------------------------------------------------------------------------------------------------------
_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)(s|m|h|d|w)$")


def parse_time(spec: str, now: datetime) -> datetime | None:
    """The moment `--to-time` names, in UTC: an ISO time with a zone (`2026-12-08T14:03:00Z`, `+02:00`), a time
    before `now` (`-10m`, `-90s`, `-2h`), or None for `latest`. ValueError saying what is accepted otherwise."""
    text = spec.strip()
    if text == "latest":
        return None
    relative = _RELATIVE.match(text)
    if relative:
        return now - timedelta(seconds=float(relative.group(1)) * _UNITS[relative.group(2)])
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(f"{spec!r} is not a time: give an ISO time with its zone (2026-12-08T14:03:00Z), a time "
                         f"ago (-10m, -90s, -2h), or latest")
    return moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    """`moment` in UTC as ISO text with microseconds (what recovery_target_time and the JSON output carry)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z") if moment else None


def pg_time(moment: datetime | None) -> str:
    """`moment` as recovery_target_time takes it (`2026-12-08 14:03:00.000000+00`); empty for None."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00") if moment else ""


def _moment(value: object) -> datetime | None:
    if not value:
        return None
    try:
        found = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


# --- what the repository holds ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaseBackup:
    """One complete base backup of the repository (`base/<name>/` with its backup_info)."""

    name: str
    start: datetime
    end: datetime  # the database is consistent from here on: the earliest moment it restores to
    start_lsn: str
    end_lsn: str
    start_wal: str
    timeline: int

    @classmethod
    def parse(cls, name: str, text: str) -> BaseBackup | None:
        """A backup_info's `key=value` lines; None for an incomplete or unreadable one (a base that died
        midway never wrote `end_time`)."""
        found = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        start, end = _moment(found.get("start_time")), _moment(found.get("end_time"))
        if start is None or end is None or not found.get("start_wal"):
            return None
        return cls(name=name, start=start, end=end, start_lsn=found.get("start_lsn", ""),
                   end_lsn=found.get("end_lsn", ""), start_wal=found["start_wal"],
                   timeline=int(found.get("timeline", "1") or 1))


@dataclass(frozen=True)
class ArchiveFacts:
    """What a backend read of a project's archive: the archiver's status.json (text, None when absent), each
    base backup's backup_info text by name, whether the archiver container runs, and the lineage (the data
    volume's compose key) the archive belongs to."""

    lineage: str
    running: bool
    status_text: str | None
    infos: Mapping[str, str] = field(default_factory=dict)
    offsite_running: bool = False  # the offsite service's container runs (backup.offsite)
    offsite_text: str | None = None  # its offsite.json
    # the replication slot as the database tells it, read when the archiver is not running: its wal_status (None: no
    # slot) and the bytes of WAL it holds back on the db's disk
    slot_status: str | None = None
    slot_held_bytes: int | None = None
    # the repository's filesystem (df): bytes free and its size, None where the backend cannot tell
    repository_free_bytes: int | None = None
    repository_size_bytes: int | None = None


@dataclass(frozen=True)
class Window:
    earliest: datetime
    latest: datetime


@dataclass(frozen=True)
class OffsiteStatus:
    """The offsite copy as its service last wrote it (offsite.json): a health with its reason, the last copy that
    succeeded, the current error, and the newest WAL segment and base backup copied."""

    health: str
    reason: str
    where: str
    last_success: datetime | None
    error: str | None
    newest_wal: str | None
    newest_base: str | None
    system_identifier: str | None = None  # the cluster's: the copy lives under <where>/<env>/<project>/<lineage>/<it>
    # the store's retention: when it last pruned, how many files it deleted then, the oldest base it keeps, and why
    # it deleted nothing when it refused (a listing it could not read, a kept base whose start segment is missing)
    pruned_at: datetime | None = None
    pruned_files: int | None = None
    oldest_base: str | None = None
    prune_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"health": self.health, "reason": self.reason, "where": self.where,
                "last_success": iso(self.last_success), "error": self.error, "newest_wal": self.newest_wal,
                "newest_base": self.newest_base, "system_identifier": self.system_identifier,
                "pruned_at": iso(self.pruned_at), "pruned_files": self.pruned_files, "oldest_base": self.oldest_base,
                "prune_error": self.prune_error}


def offsite_status(facts: ArchiveFacts, settings: OffsiteSettings, now: datetime, max_lag: float) -> OffsiteStatus:
    """The offsite copy's health, never a false ok: failed when its service does not run, has written no status, its
    last copy failed, or its retention refused to prune (something in the store is not as it should be: nothing
    was deleted); stale when its last success is older than three copy periods or `max_lag`, whichever is longer
    (the store holds less than the archive)."""
    status: dict[str, Any] = {}
    if facts.offsite_text:
        with contextlib.suppress(ValueError):
            loaded = json.loads(facts.offsite_text)
            status = loaded if isinstance(loaded, dict) else {}
    success, error = _moment(status.get("last_success")), str(status.get("last_error") or "") or None
    prune_error = str(status.get("prune_error") or "") or None
    limit = max(3 * settings.every, max_lag)
    age = (now - success).total_seconds() if success else None
    health, reason = "ok", f"copied {age:.0f} s ago" if age is not None else "copying"
    if not facts.offsite_running:
        health, reason = "failed", "the offsite service's container is not running"
    elif not status:
        health, reason = "failed", "the offsite service has written no status yet"
    elif error:
        health, reason = "failed", f"copying to {settings.shown()} fails: {error}"
    elif age is None:
        health, reason = "failed", "no copy has succeeded yet"
    elif age > limit:
        health, reason = "stale", f"the last copy that succeeded is {age:.0f} s old (limit {limit:.0f} s)"
    elif prune_error:
        health, reason = "failed", f"retention in {settings.shown()} deleted nothing: {prune_error}"
    pruned = _number(status.get("pruned_files"))
    return OffsiteStatus(health=health, reason=reason, where=settings.shown(), last_success=success, error=error,
                         newest_wal=str(status.get("newest_wal") or "") or None,
                         newest_base=str(status.get("newest_base") or "") or None,
                         system_identifier=str(status.get("system_identifier") or "") or None,
                         pruned_at=_moment(status.get("pruned_at")), pruned_files=int(pruned) if pruned is not None
                         else None, oldest_base=str(status.get("oldest_base") or "") or None,
                         prune_error=prune_error)


@dataclass(frozen=True)
class ArchiveStatus:
    """A project's archive as `backups` shows it: window, last base, lag, size, error, and a health (ok, stale,
    failed, off) with its reason."""

    lineage: str
    health: str
    reason: str
    window: Window | None
    bases: tuple[BaseBackup, ...]
    lag_bytes: int | None
    lag_seconds: float | None
    size_bytes: int | None
    error: str | None
    updated: datetime | None
    last_error: str | None = None  # the last error, even when it has passed (a restart of the db, say)
    last_error_at: datetime | None = None
    offsite: OffsiteStatus | None = None  # backup.offsite's copy
    slot_held_bytes: int | None = None  # WAL the replication slot holds back on the db's disk (None: not known)
    repository_free_bytes: int | None = None  # free space where the repository is (None: not known)

    @property
    def last_base(self) -> BaseBackup | None:
        return self.bases[-1] if self.bases else None

    def to_dict(self) -> dict[str, Any]:
        base = self.last_base
        return {"lineage": self.lineage, "health": self.health, "reason": self.reason,
                "earliest": iso(self.window.earliest) if self.window else None,
                "latest": iso(self.window.latest) if self.window else None,
                "last_base": {"name": base.name, "start": iso(base.start), "end": iso(base.end)} if base else None,
                "bases": len(self.bases), "lag_bytes": self.lag_bytes, "lag_seconds": self.lag_seconds,
                "size_bytes": self.size_bytes, "error": self.error, "last_error": self.last_error,
                "last_error_at": iso(self.last_error_at), "updated": iso(self.updated),
                "offsite": self.offsite.to_dict() if self.offsite else None,
                "slot_held_bytes": self.slot_held_bytes, "repository_free_bytes": self.repository_free_bytes}


FULL_BELOW = 2 * 16 * 1024**2  # bytes free in the repository under which the next WAL segments cannot be written


def parse_df(text: str) -> tuple[int | None, int | None]:
    """Bytes free and the size of a filesystem from `df -Pk`'s line for it ((None, None) when unreadable)."""
    fields = text.split()
    if len(fields) < 4 or not fields[1].isdigit() or not fields[3].isdigit():
        return None, None
    return int(fields[3]) * 1024, int(fields[1]) * 1024


SLOT_WARNING = 0.5  # of max_slot_wal_keep_size held back by the slot: the health says so before the slot is lost


def slot_note(held: int | None, status: str | None, limit: int) -> str | None:
    """What the replication slot's hold on the db's disk means, for a reason; None when it holds nothing known."""
    if status == "lost":
        return (f"its replication slot was lost: it held more than max_slot_wal_keep_size ({_mib(limit)}), so "
                f"the archive has a gap and starts a new window when the archiver runs again")
    if held is None or held < 0:
        return None
    left = max(0, limit - held)
    return (f"its replication slot holds {_mib(held)} of WAL on the db's disk, {_mib(left)} before "
            f"max_slot_wal_keep_size ({_mib(limit)}) drops it and the archive gets a gap")


def _mib(size: int) -> str:
    return f"{size / 1024**2:.0f} MiB"


def read_status(facts: ArchiveFacts, settings: BackupSettings, now: datetime) -> ArchiveStatus:
    """The archive's window and health, never a false ok: failed when the archiver does not run, reports an error
    while not streaming, its last base backup failed, or it has no complete base backup; stale when its status.json is older than STALE_AFTER seconds or the
    archive lags more than `max_lag`; ok otherwise."""
    bases = tuple(sorted((b for n, t in facts.infos.items() if (b := BaseBackup.parse(n, t)) is not None),
                         key=lambda b: b.end))
    status: dict[str, Any] = {}
    if facts.status_text:
        try:
            loaded = json.loads(facts.status_text)
            status = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            status = {}
    latest = _moment(status.get("latest_recoverable"))
    updated = _moment(status.get("updated"))
    error = str(status.get("error") or "") or None
    last_error = str(status.get("last_error") or "") or None
    lag_bytes = _number(status.get("lag_bytes"))
    lag_seconds = _number(status.get("lag_seconds"))
    window = Window(bases[0].end, latest) if bases and latest is not None and latest >= bases[0].end else None
    health, reason = "ok", "archiving"
    age = (now - updated).total_seconds() if updated else None
    if not facts.running:
        health, reason = "failed", NOT_RUNNING
    elif facts.repository_free_bytes is not None and facts.repository_free_bytes < FULL_BELOW:
        health, reason = "failed", (f"the repository is full: {_mib(facts.repository_free_bytes)} free of "
                                    f"{_mib(facts.repository_size_bytes or 0)}, too little for the next WAL "
                                    f"segments (free space, or shorten backup.retention)")
    elif facts.status_text is None or updated is None:
        health, reason = "failed", "the archiver has written no status yet"
    elif error:
        health, reason = "failed", f"the archiver reports: {error}"
    elif status.get("streaming") is not True:
        health, reason = "failed", "the archiver is not streaming WAL (its replication slot is inactive)"
    elif age is not None and age > STALE_AFTER:
        health, reason = "stale", f"the archiver's status is {age:.0f} s old (it writes it every {POLL_SECONDS} s)"
    elif status.get("wal_gap"):
        health, reason = "failed", (f"a WAL segment is missing from the archive ({status['wal_gap']}): restores "
                                    f"past it would stop there")
    elif status.get("wal_damaged"):
        health, reason = "failed", (f"a WAL segment in the archive is damaged ({status['wal_damaged']}): restores "
                                    f"past it would stop there")
    elif status.get("base_error"):
        health, reason = "failed", f"the last base backup failed: {status['base_error']}"
    elif not bases:
        health, reason = "failed", "no complete base backup yet"
    elif lag_seconds is not None and lag_seconds > settings.max_lag:
        health, reason = "stale", (f"the archive lags {lag_seconds:.0f} s behind the database "
                                   f"(max_lag {show_duration(settings.max_lag)})")
    elif window is None:
        health, reason = "stale", "the archive has not yet reached the newest base backup's end"
    held = facts.slot_held_bytes if facts.slot_held_bytes is not None else (
        int(lag_bytes) if lag_bytes is not None and lag_bytes >= 0 else None)
    note = slot_note(held, facts.slot_status, settings.max_slot_wal_keep_size)
    if note is not None and (facts.slot_held_bytes is not None or facts.slot_status == "lost"
                             or (held or 0) >= SLOT_WARNING * settings.max_slot_wal_keep_size):
        if health == "ok":
            health, reason = "stale", note
        else:
            reason = f"{reason}; {note}"
    offsite = (offsite_status(facts, settings.offsite, now, settings.max_lag)
               if settings.offsite is not None and settings.continuous else None)
    if offsite is not None and offsite.health != "ok" and health == "ok":
        health, reason = offsite.health, f"offsite copy: {offsite.reason}"
    return ArchiveStatus(lineage=facts.lineage, health=health, reason=reason, window=window, bases=bases,
                         lag_bytes=int(lag_bytes) if lag_bytes is not None else None, lag_seconds=lag_seconds,
                         size_bytes=int(s) if (s := _number(status.get("size_bytes"))) is not None else None,
                         error=error, updated=updated, last_error=last_error,
                         last_error_at=_moment(status.get("last_error_at")), offsite=offsite, slot_held_bytes=held,
                         repository_free_bytes=facts.repository_free_bytes)


def _number(value: object) -> float | None:
    try:
        return float(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


# --- planning a restore -----------------------------------------------------------------------------------------
def refusal(target: datetime | None, status: ArchiveStatus) -> str | None:
    """Why a restore to `target` (None: latest) cannot be done from this archive, naming the window; None when it
    can."""
    if status.window is None:
        return (f"the archive has no recoverable window yet ({status.reason}); nothing was changed")
    earliest, latest = iso(status.window.earliest), iso(status.window.latest)
    if target is not None and not status.window.earliest <= target <= status.window.latest:
        when = "before" if target < status.window.earliest else "after"
        return (f"{iso(target)} is {when} the recoverable window {earliest} .. {latest}; nothing was changed")
    return None


def base_for(target: datetime | None, bases: Sequence[BaseBackup]) -> BaseBackup | None:
    """The newest base backup that ends at or before `target` (None: the newest of all): where its restore
    starts, with the least WAL to replay."""
    usable = [b for b in bases if target is None or b.end <= target]
    return max(usable, key=lambda b: b.end) if usable else None


def retained(bases: Sequence[BaseBackup], retention: float, now: datetime) -> list[BaseBackup]:
    """The base backups retention keeps (what the archiver's sh loop applies to the repository, and the offsite
    service's to the store: in Python for their tests): every
    base that ended within the window, plus the newest one before it (which the window's start needs); always
    the newest base."""
    ordered = sorted(bases, key=lambda b: b.end)
    cutoff = now - timedelta(seconds=retention)
    inside = [b for b in ordered if b.end >= cutoff]
    before = [b for b in ordered if b.end < cutoff]
    kept = ([before[-1]] if before else []) + inside
    return kept or ordered[-1:]


@dataclass(frozen=True)
class RestoreRequest:
    """A point-in-time restore into a new data volume: from `base` of `lineage`, replaying the archive up to
    `target` (None: all of it), or up to and including the commit of transaction `target_xid` when given (a restore
    drill's marker: `target` then only chose the base); on `image`; `admin` and `dbname` to check it with,
    `mark_sql` to mark the database with its new volume (roles.VOLUME_MARK), within `timeout` seconds of recovery."""

    lineage: str
    base: str
    target: datetime | None
    image: str
    admin: str
    dbname: str
    mark_sql: str
    timeout: float = 600.0
    target_xid: int | None = None


@dataclass(frozen=True)
class Restored:
    """What a restore made: the volume, how recovery ended (`target`: stopped at the target; `end`: replayed the
    whole archive, which holds no commit after the target), the restored row counts, recovery's own log lines."""

    volume: str
    reached: str
    row_counts: Mapping[str, int]
    log: tuple[str, ...] = ()
    duration: float = 0.0
