"""backup.offsite on the local engine: the copies of a project's archive in the S3-compatible store (one per
database cluster, named by its system identifier), and pulling one into the repository volume, where restore
--to-time reads it as a lineage of its own (`offsite-<system identifier>`). A one-off container of the offsite
image (rclone) does it on the project's network, the store's keys in its environment only (never in its argv),
labelled like every helper and removed when it ends."""

from __future__ import annotations

import os

from ...core import names
from ...core.archiving import ENCRYPTION_KEY as PASSPHRASE
from ...core.archiving import (
    OFFSITE_LINEAGE,
    REPOSITORY_PATH,
    REPOSITORY_VOLUME,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    OffsiteCopy,
    OffsiteSettings,
)
from ...core.errors import CommandFailed, ProvisionError
from ...core.model import Target
from .engine import HELPER_LABEL, Engine
from .volumes import DataVolumes

PULL_TIMEOUT = 3600.0

# the remote `$R`: the store's path of this project's lineage, through rclone's crypt with a passphrase; the store's
# certificate verified against backup.offsite.ca_cert when it has one
_REMOTE = r"""set -eu
if [ -n "${CA_CERT_BASE64:-}" ]; then
  RCLONE_CA_CERT=$(mktemp) && printf %s "$CA_CERT_BASE64" | base64 -d > "$RCLONE_CA_CERT" && export RCLONE_CA_CERT
fi
R="offsite:$BUCKET/$PREFIX/"
if [ -n "${ENCRYPTION_KEY:-}" ]; then
  RCLONE_CONFIG_SAFE_TYPE=crypt RCLONE_CONFIG_SAFE_REMOTE="offsite:$BUCKET/$PREFIX"
  RCLONE_CONFIG_SAFE_PASSWORD=$(printf %s "$ENCRYPTION_KEY" | rclone obscure -)
  export RCLONE_CONFIG_SAFE_TYPE RCLONE_CONFIG_SAFE_REMOTE RCLONE_CONFIG_SAFE_PASSWORD
  R="safe:"
fi
"""
# each copy: its system identifier and the latest moment its status.json says it recovers to
_LIST = _REMOTE + r"""dirs=$(rclone lsf --dirs-only "$R" 2>/tmp/err) || { grep -qi 'not found' /tmp/err && exit 0; cat /tmp/err >&2; exit 1; }
for d in $dirs; do
  id=${d%/}
  latest=$(rclone cat "$R$id/status.json" 2>/dev/null | sed -n 's/.*"latest_recoverable": "\([^"]*\)".*/\1/p')
  echo "COPY $id ${latest:--}"
done"""
# the chosen copy into the repository volume (what is there already is kept: copy compares, never deletes)
_PULL = _REMOTE + r"""rclone copy "$R$SYSID" "$DEST" --retries 3 --transfers 4
echo "FILES $(find "$DEST" -type f | wc -l)"
"""


def settings_of(target: Target) -> OffsiteSettings:
    """The project's backup.offsite; ProvisionError when it has none."""
    settings = target.spec.backup.offsite
    if settings is None or not target.spec.backup.continuous:
        raise ProvisionError(f"{target.project!r} in env {target.env!r} has no backup.offsite store")
    return settings


def _run(engine: Engine, data: DataVolumes, target: Target, lineage: str, script: str, *extra: str,
         timeout: float, mount: str = "ro") -> str:
    settings = settings_of(target)
    secrets = target.config.backup_secrets
    env = {"RCLONE_CONFIG_OFFSITE_ACCESS_KEY_ID": secrets[S3_ACCESS_KEY].reveal(),
           "RCLONE_CONFIG_OFFSITE_SECRET_ACCESS_KEY": secrets[S3_SECRET_KEY].reveal()}
    if settings.encrypt:
        env["ENCRYPTION_KEY"] = secrets[PASSPHRASE].reveal()
    if settings.ca_base64:  # not a secret, but long: by name too
        env["CA_CERT_BASE64"] = settings.ca_base64
    repository = data.find(REPOSITORY_VOLUME)
    if repository is None:
        raise ProvisionError(f"{target.project!r} in env {target.env!r} has no archive volume ({REPOSITORY_VOLUME}): "
                             f"provision it with backup.continuous on first")
    argv = ["docker", "run", "--rm", "--network", f"{data.project_name}_default", "--user", "0:0",
            "--entrypoint", "sh", "--label", f"{names.LABEL_MANAGED}=true",
            "--label", f"{HELPER_LABEL}={target.env}/{target.project}",
            *(["--label", f"{names.LABEL_OWNER}={target.config.owner}"] if target.config.owner else []),
            "--volume", f"{repository}:{REPOSITORY_PATH}:{mount}",
            "-e", "RCLONE_CONFIG_OFFSITE_TYPE=s3", "-e", "RCLONE_CONFIG_OFFSITE_PROVIDER=Other",
            "-e", f"RCLONE_CONFIG_OFFSITE_ENDPOINT={settings.endpoint}",
            "-e", f"RCLONE_CONFIG_OFFSITE_REGION={settings.region}",
            *(arg for name in env for arg in ("-e", name)),  # names only: the values come from the environment
            "-e", f"BUCKET={settings.bucket}", "-e", f"PREFIX={settings.location(target.env, target.project, lineage)}",
            *extra, settings.image, "-c", script]
    result = engine.compose.runner.run(argv, timeout=timeout, env={**os.environ, **env})
    if result.returncode != 0:
        raise CommandFailed(argv[:3] + ["...", settings.image], result.returncode, result.stderr[-3000:],
                            hint=f"read the offsite copy at {settings.shown()}")
    return result.stdout


def copies(engine: Engine, data: DataVolumes, target: Target, lineage: str) -> list[OffsiteCopy]:
    """The store's copies of `lineage` (a data volume's compose key), one per database cluster."""
    found = []
    for line in _run(engine, data, target, lineage, _LIST, timeout=300).splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "COPY" and rest:
            ident, _, latest = rest.partition(" ")
            found.append(OffsiteCopy(ident, None if latest in ("", "-") else latest))
    return found


def pull(engine: Engine, data: DataVolumes, target: Target, lineage: str, system_identifier: str) -> str:
    """Copy the store's copy of `lineage` made by cluster `system_identifier` into the repository volume, as the
    lineage `offsite-<system identifier>` (returned) that restore --to-time can read."""
    if not system_identifier.isdigit():
        raise ProvisionError(f"{system_identifier!r} is not a database system identifier (digits)")
    pulled = f"{OFFSITE_LINEAGE}{system_identifier}"
    _run(engine, data, target, lineage, _PULL, "-e", f"SYSID={system_identifier}",
         "-e", f"DEST={REPOSITORY_PATH}/{pulled}", timeout=PULL_TIMEOUT, mount="rw")
    return pulled
