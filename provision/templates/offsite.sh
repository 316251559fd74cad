# provision's offsite copier (docs/architecture.md, continuous archiving): runs in the project's stack on an
# rclone image, as a POSIX sh loop, and copies the archive's finished files to an S3-compatible store.
#   The copy lives under $PREFIX/<system identifier>/: the database cluster's id, read from a WAL segment's
#     long page header (8 bytes at offset 24), so that a cluster made anew under the same name (a lost host,
#     re-provisioned) never mixes its WAL into an older cluster's copy.
#   Every $EVERY seconds: `rclone copy --immutable` of the WAL segments pg_receivewal finished (never the
#     .partial one) and the base backups the archiver finished (never its tmp-* ones), then status.json. Copy
#     never deletes, so a lost or wiped local repository can never wipe the offsite one; --immutable refuses
#     to change a file the store has already (reported, never overwritten). Nothing is deleted there yet.
#   With $ENCRYPTION_KEY, files are encrypted before they leave (rclone's crypt remote; names too).
#   $ARCHIVE_DIR/offsite.json, atomically, after every round: the last success, the last error, and what
#     the offsite copy holds (newest WAL segment and base).
# The store's keys come in as RCLONE_CONFIG_OFFSITE_ACCESS_KEY_ID/SECRET_ACCESS_KEY (this service's environment
# only, never argv).
set -u
D="$ARCHIVE_DIR"
remote="offsite:$BUCKET/$PREFIX/"
if [ -n "${ENCRYPTION_KEY:-}" ]; then
  RCLONE_CONFIG_SAFE_TYPE=crypt RCLONE_CONFIG_SAFE_REMOTE="offsite:$BUCKET/$PREFIX"
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
  printf '{"updated": "%s", "last_success": "%s", "last_error": "%s", "newest_wal": "%s", "newest_base": "%s", "system_identifier": "%s"}\n' \
    "$now" "$ok" "$err" "$wal" "$base" "$sysid" > "$D/offsite.json.tmp" && mv "$D/offsite.json.tmp" "$D/offsite.json"
}
system_id() {  # the cluster's system identifier, from the first finished WAL segment's long page header
  f=$(ls "$D/wal" 2>/dev/null | grep -E '^[0-9A-F]{24}$' | head -n 1)
  [ -n "$f" ] || return 1
  le=$(od -A n -t x1 -j 24 -N 8 "$D/wal/$f" | tr -d ' \n')
  [ ${#le} -eq 16 ] || return 1
  printf '%u' "0x$(printf '%s\n' "$le" | sed 's/../& /g' | awk '{for (i = NF; i > 0; i--) printf "%s", $i}')"
}
sysid=""
flags="--retries 1 --low-level-retries 2 --contimeout 10s --timeout 60s"
while :; do
  [ -n "$sysid" ] || sysid=$(system_id) || sysid=""
  if [ -z "$sysid" ]; then sleep "$EVERY" & wait $!; continue; fi  # no finished WAL segment in the archive yet
  # shellcheck disable=SC2086
  if rclone copy "$D" "$remote$sysid" --immutable --no-traverse $flags --filter '- /wal/*.partial' \
      --filter '- /wal/.*' --filter '+ /wal/*' --filter '- /base/tmp-*/**' --filter '+ /base/*/**' --filter '- *' \
      2>"$D/.offsite.log" && rclone copyto "$D/status.json" "$remote$sysid/status.json" $flags 2>>"$D/.offsite.log"
  then
    ok=$(date -u +%Y-%m-%dT%H:%M:%SZ); err=""
    wal=$(ls "$D/wal" 2>/dev/null | grep -v '\.partial$' | grep -v '^\.' | sort | tail -n 1)
    base=$(ls "$D/base" 2>/dev/null | grep -v '^tmp-' | grep -v '^\.' | sort | tail -n 1)
  else
    note "copying to the store: $(grep -i error "$D/.offsite.log" | tail -n 1)"
  fi
  status
  sleep "$EVERY" & wait $!
done
