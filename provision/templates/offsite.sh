# provision's offsite copier (docs/architecture.md, continuous archiving): runs in the project's stack on an
# rclone image, as a POSIX sh loop, and copies the archive's finished files to an S3-compatible store.
#   The copy lives under $PREFIX/<system identifier>/: the database cluster's id, read from a WAL segment's
#     long page header (8 bytes at offset 24), so that a cluster made anew under the same name (a lost host,
#     re-provisioned) never mixes its WAL into an older cluster's copy.
#   Every $EVERY seconds: `rclone copy --immutable` of the WAL segments pg_receivewal finished (never the
#     .partial one) and the base backups the archiver finished (never its tmp-* ones), then status.json. Copy
#     never deletes, so a lost or wiped local repository can never wipe the offsite one; --immutable refuses
#     to change a file the store has already (reported, never overwritten).
#   Retention in the store, from the store's own listing (never the local repository's, which may be wiped): after
#     a copy that succeeded, at start and then every tenth of $RETENTION (between $EVERY and an hour), the base
#     backups that ended before the window (now - $RETENTION) are deleted except the newest of them (the window's
#     first second restores from it), and so are the WAL segments before that base's start segment. A listing or
#     backup_info that cannot be read, or a kept base whose start segment the store lacks, deletes nothing and is
#     reported (prune_error). Only this cluster's copy is pruned: an older cluster's (a lost host's) is left alone.
#     What it deleted is not copied again while the archiver's own retention (every 5 minutes) has yet to delete it.
#   With $ENCRYPTION_KEY, files are encrypted before they leave (rclone's crypt remote; names too).
#   With $CA_CERT_BASE64 (backup.offsite.ca_cert's PEM), the store's TLS certificate is verified against it alone.
#   $ARCHIVE_DIR/offsite.json, atomically, after every round: the last success, the last error, what the offsite
#     copy holds (newest WAL segment and base), and the last pruning (when, files deleted, oldest base kept, error).
# The store's keys come in as RCLONE_CONFIG_OFFSITE_ACCESS_KEY_ID/SECRET_ACCESS_KEY (this service's environment
# only, never argv).
set -u
D="$ARCHIVE_DIR"
if [ -n "${CA_CERT_BASE64:-}" ]; then
  RCLONE_CA_CERT=$(mktemp) && printf %s "$CA_CERT_BASE64" | base64 -d > "$RCLONE_CA_CERT" \
    || { echo "offsite: cannot write the CA certificate (backup.offsite.ca_cert) to a file" >&2; exit 1; }
  export RCLONE_CA_CERT
fi
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
ok=""; err=""; wal=""; base=""; pruned_at=""; pruned=""; kept=""; kept_wal=""; perr=""; last_prune=0; infos=""
trap 'exit 0' TERM INT
note() { err=$(printf '%s' "$*" | tr -d '"\\' | tr '\n\t' '  ' | cut -c1-300); echo "offsite: $err" >&2; }
why() {  # $1: an rclone log: its last error with the cause rclone gives on the next lines; a TLS one named as such
  e=$(awk '/ ERROR : |[0-9] Failed to / { last = $0; next } /^caused by:/ && last != "" { last = last " " $0 }
    { any = $0 } END { print (last != "" ? last : any) }' "$1" | sed 's#^[0-9/]* [0-9:]* ##')
  case $e in
    *x509:*) x=$(printf '%s' "$e" | sed 's/.*\(x509: \)/\1/')
      e="the store's TLS certificate is not accepted: $x (a private CA? backup.offsite.ca_cert names its PEM file)" ;;
  esac
  printf '%s' "$e" | tr -d '"\\' | tr '\n\t' '  ' | cut -c1-300
}
status() {
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ); pe=$(printf '%s' "$perr" | tr -d '"\\' | tr '\n\t' '  ' | cut -c1-300)
  printf '{"updated": "%s", "last_success": "%s", "last_error": "%s", "newest_wal": "%s", "newest_base": "%s", "system_identifier": "%s", "pruned_at": "%s", "pruned_files": "%s", "oldest_base": "%s", "prune_error": "%s"}\n' \
    "$now" "$ok" "$err" "$wal" "$base" "$sysid" "$pruned_at" "$pruned" "$kept" "$pe" > "$D/offsite.json.tmp" \
    && mv "$D/offsite.json.tmp" "$D/offsite.json"
}
system_id() {  # the cluster's system identifier, from the first finished WAL segment's long page header
  f=$(ls "$D/wal" 2>/dev/null | grep -E '^[0-9A-F]{24}$' | head -n 1)
  [ -n "$f" ] || return 1
  le=$(od -A n -t x1 -j 24 -N 8 "$D/wal/$f" | tr -d ' \n')
  [ ${#le} -eq 16 ] || return 1
  printf '%u' "0x$(printf '%s\n' "$le" | sed 's/../& /g' | awk '{for (i = NF; i > 0; i--) printf "%s", $i}')"
}
prune() {  # retention in the store (see above); non-zero with $perr saying why when it deleted nothing
  r="$remote$sysid"
  # shellcheck disable=SC2086
  list=$(rclone lsf -R --files-only $flags "$r" 2>"$log") || { perr="listing the store: $(why "$log")"; return 1; }
  cutoff=$(( $(date +%s) - RETENTION )); keep=""; keep_wal=""
  for b in $(printf '%s\n' "$list" | sed -n 's#^base/\([0-9]\{8\}T[0-9]\{6\}Z\)/backup_info$#\1#p' | sort); do
    line=$(printf '%s\n' "$infos" | grep "^$b ")  # a base's backup_info never changes in the store: read once
    if [ -z "$line" ]; then
      # shellcheck disable=SC2086
      text=$(rclone cat $flags "$r/base/$b/backup_info" 2>"$log") \
        || { perr="reading base/$b/backup_info: $(why "$log")"; return 1; }
      e=$(printf '%s\n' "$text" | sed -n 's/^end_epoch=\([0-9][0-9]*\)$/\1/p')
      w=$(printf '%s\n' "$text" | sed -n 's/^start_wal=\([0-9A-F]\{24\}\)$/\1/p')
      [ -n "$e" ] && [ -n "$w" ] || { perr="base/$b/backup_info in the store has no end_epoch or start_wal"; return 1; }
      line="$b $e $w"; infos="$infos
$line"
    fi
    set -- $line
    if [ "$2" -lt "$cutoff" ]; then keep=$1; keep_wal=$3; else [ -n "$keep" ] || { keep=$1; keep_wal=$3; }; break; fi
  done
  if [ -z "$keep" ]; then pruned=0; kept=""; return 0; fi  # no complete base in the store yet: nothing goes
  printf '%s\n' "$list" | grep -qx "wal/$keep_wal" \
    || { perr="base $keep's start segment $keep_wal is not in the store: nothing deleted"; return 1; }
  printf '%s\n' "$list" | awk -v keep="$keep" -v w="$keep_wal" '
    substr($0, 1, 5) == "base/" { split($0, p, "/"); if (p[2] ~ /^[0-9]+T[0-9]+Z$/ && (p[2] "") < (keep "")) print; next }
    substr($0, 1, 4) == "wal/" { n = substr($0, 5)
      if (length(n) == 24 && n !~ /[^0-9A-F]/ && (substr(n, 9) "") < (substr(w, 9) "")) print }' > "$gone"
  pruned=$(wc -l < "$gone" | tr -d ' ')
  if [ "$pruned" -gt 0 ]; then
    # shellcheck disable=SC2086
    rclone delete $flags "$r" --files-from-raw "$gone" 2>"$log" || { perr="deleting: $(why "$log")"; return 1; }
  fi
  kept=$keep; kept_wal=$keep_wal; pruned_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
}
rules() {  # what is copied: finished WAL segments and base backups, but not what the store's retention deleted
  # (the archiver's own retention may delete it here a few minutes later: it is not copied again meanwhile)
  { if [ -n "$kept" ]; then
      ls "$D/base" 2>/dev/null | awk -v keep="$kept" '/^[0-9]+T[0-9]+Z$/ && ($0 "") < (keep "") { print "- /base/" $0 "/**" }'
      ls "$D/wal" 2>/dev/null | awk -v w="$kept_wal" 'length($0) >= 24 && (substr($0, 9, 16) "") < (substr(w, 9) "") { print "- /wal/" $0 }'
    fi
    printf '%s\n' '- /wal/*.partial' '- /wal/.*' '+ /wal/*' '- /base/tmp-*/**' '+ /base/*/**' '- *'
  } > "$filters"
}
sysid=""
flags="--retries 1 --low-level-retries 2 --contimeout 10s --timeout 60s"
prune_every=$(( RETENTION / 10 )); [ "$prune_every" -le 3600 ] || prune_every=3600; [ "$prune_every" -ge "$EVERY" ] || prune_every=$EVERY
log=$(mktemp); gone=$(mktemp); filters=$(mktemp)
while :; do
  [ -n "$sysid" ] || sysid=$(system_id) || sysid=""
  if [ -z "$sysid" ]; then sleep "$EVERY" & wait $!; continue; fi  # no finished WAL segment in the archive yet
  # shellcheck disable=SC2086
  if rules && rclone copy "$D" "$remote$sysid" --immutable --no-traverse $flags --filter-from "$filters" \
      2>"$D/.offsite.log" && rclone copyto "$D/status.json" "$remote$sysid/status.json" $flags 2>>"$D/.offsite.log"
  then
    ok=$(date -u +%Y-%m-%dT%H:%M:%SZ); err=""
    wal=$(ls "$D/wal" 2>/dev/null | grep -v '\.partial$' | grep -v '^\.' | sort | tail -n 1)
    base=$(ls "$D/base" 2>/dev/null | grep -v '^tmp-' | grep -v '^\.' | sort | tail -n 1)
    if [ $(( $(date +%s) - last_prune )) -ge "$prune_every" ]; then
      if prune; then perr=""; last_prune=$(date +%s); else echo "offsite: pruning: $perr" >&2; fi
    fi
  else
    note "copying to the store: $(why "$D/.offsite.log")"
  fi
  status
  sleep "$EVERY" & wait $!
done
