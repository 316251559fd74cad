# provision's offsite copier (docs/architecture.md, continuous archiving): runs in the project's stack on an
# rclone image, as a POSIX sh loop, and copies the archive's finished files to an S3-compatible store.
#   Every $EVERY seconds: `rclone copy` of the WAL segments pg_receivewal finished (never the .partial one),
#     the base backups the archiver finished (never its tmp-* ones) and status.json; copy never deletes, so a
#     lost or wiped local repository can never wipe the offsite one.
#   Retention there: a base older than $KEEP seconds (retention + two base periods) is deleted once a newer
#     base is offsite, and WAL older than that base's start WAL with it (rclone's own filters).
#   With $ENCRYPTION_KEY, files are encrypted before they leave (rclone's crypt remote; names too).
#   $ARCHIVE_DIR/offsite.json, atomically, after every round: the last success, the last error, and what
#     the offsite copy holds (newest WAL segment and base).
# The store's keys come in as RCLONE_CONFIG_OFFSITE_ACCESS_KEY_ID/SECRET_ACCESS_KEY (this service's environment
# only, never argv).
set -u
D="$ARCHIVE_DIR"
remote="offsite:$BUCKET/$PREFIX"
if [ -n "${ENCRYPTION_KEY:-}" ]; then
  RCLONE_CONFIG_SAFE_TYPE=crypt RCLONE_CONFIG_SAFE_REMOTE="$remote"
  RCLONE_CONFIG_SAFE_PASSWORD=$(rclone obscure - <<KEY
$ENCRYPTION_KEY
KEY
)
  export RCLONE_CONFIG_SAFE_TYPE RCLONE_CONFIG_SAFE_REMOTE RCLONE_CONFIG_SAFE_PASSWORD
  remote="safe:"
fi
unset ENCRYPTION_KEY
ok=""; err=""; wal=""; base=""
trap 'exit 0' TERM INT
note() { err=$(printf '%s' "$*" | tr -d '"\\' | tr '\n\t' '  ' | cut -c1-300); echo "offsite: $err" >&2; }
status() {
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  printf '{"updated": "%s", "last_success": "%s", "last_error": "%s", "newest_wal": "%s", "newest_base": "%s"}\n' \
    "$now" "$ok" "$err" "$wal" "$base" > "$D/offsite.json.tmp" && mv "$D/offsite.json.tmp" "$D/offsite.json"
}
while :; do
  if [ ! -d "$D/wal" ]; then sleep "$EVERY" & wait $!; continue; fi  # the archiver has not made the archive yet
  if rclone copy "$D" "$remote" --no-traverse --retries 1 --low-level-retries 2 --contimeout 10s --timeout 60s \
      --filter '- /wal/*.partial' --filter '- /wal/.*' --filter '+ /wal/*' --filter '- /base/tmp-*/**' \
      --filter '+ /base/*/**' --filter '+ /status.json' --filter '- *' 2>"$D/.offsite.log"; then
    ok=$(date -u +%Y-%m-%dT%H:%M:%SZ); err=""
    wal=$(ls "$D/wal" 2>/dev/null | grep -v '\.partial$' | grep -v '^\.' | sort | tail -n 1)
    base=$(ls "$D/base" 2>/dev/null | grep -v '^tmp-' | grep -v '^\.' | sort | tail -n 1)
  else
    note "copying to the store: $(grep -i error "$D/.offsite.log" | tail -n 1)"
  fi
  status
  sleep "$EVERY" & wait $!
done
