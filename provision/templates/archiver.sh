# provision's archiver (docs/architecture.md, continuous archiving): runs in the project's stack on the db image,
# as a POSIX sh loop. It connects over the db's unix socket (a volume both mount) as a LOGIN REPLICATION role.
#   pg_receivewal --synchronous through a physical slot streams WAL into $ARCHIVE_DIR/wal (restarted when it dies,
#     its error recorded); the db's max_slot_wal_keep_size bounds what the slot holds back when this is down.
#   pg_basebackup -Ft -z -X none (WAL comes from the archive) into $ARCHIVE_DIR/base/<UTC stamp>/ at first start and
#     whenever the newest base is older than $BASE_EVERY seconds; backup_info is written once its end is archived.
#   each finished WAL segment is read through with pg_waldump once (and every day): a damaged one is reported.
#   retention: every base that ended within $RETENTION seconds plus the newest one before, and the WAL from the
#     oldest kept base's start WAL on (pg_archivecleanup).
#   $ARCHIVE_DIR/status.json, atomically, every $POLL seconds: latest_recoverable is the now() of the last poll
#     whose pg_current_wal_lsn() the slot's flushed position has reached.
set -u
D="$ARCHIVE_DIR"
mkdir -p "$D/wal" "$D/base" || exit 1
rm -rf "$D/base/".tmp-* 2>/dev/null
rpid=""; bpid=""; spid=""; wal_gap=""; wal_bad=""; verified=""; verified_at=""; err=""; last_err=""; last_err_at=""; prev_t=""; prev_lsn=""; size=""; n=0; streaming=false
# what the archive reached before a restart is still in it
latest=$(sed -n 's/.*"latest_recoverable": "\([^"]*\)".*/\1/p' "$D/status.json" 2>/dev/null)
latest_epoch=$(sed -n 's/.*"latest_epoch": "\([0-9]*\)".*/\1/p' "$D/status.json" 2>/dev/null)
trap 'kill $rpid $bpid $spid 2>/dev/null; exit 0' TERM INT
trap '' PIPE  # a write to a psql session that died fails (and the session is started again) instead of killing us
note() {  # the current error (cleared once streaming again) and the last one, with its time
  err=$(printf '%s' "$*" | tr -d '"\\' | tr '\n\t' '  ' | cut -c1-300); last_err=$err; last_err_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  echo "archiver: $err" >&2
}
q() { psql -X -A -t -q -v ON_ERROR_STOP=1 "$@"; }
newest_base() { ls "$D/base" 2>/dev/null | grep -v '^\.' | grep -v '^tmp-' | sort | tail -n 1; }
info() { sed -n "s/^$2=//p" "$D/base/$1/backup_info" 2>/dev/null; }

start_receiver() {
  # a slot that is missing (archiving was off, or it was dropped) or lost (past max_slot_wal_keep_size) means a gap
  # in the WAL: the archive so far is set aside (kept, not offered) and a new window starts with a new base backup
  slot=$(q -c "SELECT coalesce((SELECT CASE WHEN wal_status = 'lost' THEN 'lost' ELSE 'ok' END FROM pg_replication_slots
    WHERE slot_name = '$SLOT'), 'none')" 2>"$D/.receiver.log") || { note "reading the slot: $(tail -n 1 "$D/.receiver.log")"; return 1; }
  [ "$slot" = lost ] && q -c "SELECT pg_drop_replication_slot('$SLOT')" >/dev/null
  if [ "$slot" != ok ] && [ -n "$(ls "$D/wal")" ]; then
    aside="$D.gap-$(date -u +%Y%m%dT%H%M%SZ)"; mkdir -p "$aside" && mv "$D/wal" "$D/base" "$aside/" && mkdir -p "$D/wal" "$D/base"
    rm -f "$D/status.json"; latest=""; latest_epoch=""; verified=""; wal_bad=""; prev_t=""; prev_lsn=""; last=""; last_end=""; base_due=0
    note "the replication slot was $( [ "$slot" = lost ] && echo lost || echo missing): a gap in the WAL; the archive before it is kept in $aside and a new window starts"
  fi
  if ! pg_receivewal --create-slot --if-not-exists -S "$SLOT" 2>"$D/.receiver.log"; then
    note "creating slot $SLOT: $(tail -n 1 "$D/.receiver.log")"; return 1
  fi
  pg_receivewal --synchronous -n -S "$SLOT" -D "$D/wal" 2>>"$D/.receiver.log" &
  rpid=$!
}

take_base() {
  name=$(date -u +%Y%m%dT%H%M%SZ); tmp="$D/base/tmp-$name"; log="$D/.base.log"
  start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  pg_basebackup -D "$tmp" -Ft -z -X none -c fast -v 2>"$log"; rc=$?
  if [ $rc -ne 0 ]; then  # killed midway, it may say nothing: its exit status is the reason then
    why=$(grep -i error "$log" | tail -n 1 | tr -d '"\\'); [ -n "$why" ] || why="pg_basebackup exited with status $rc"
    echo "base_error=$why" > "$D/.base_error"; rm -rf "$tmp"; return 1
  fi
  # backup_label is the base tar's first member (PostgreSQL sends it first): only the archive's first 64 KiB are
  # unpacked to read it, not the whole base again (at 1 GB that was seconds of gunzip per base)
  label=$( { gzip -dc "$tmp/base.tar.gz" | head -c 65536 | tar -xOf - backup_label; } 2>/dev/null)
  slsn=$(printf '%s\n' "$label" | sed -n 's/^START WAL LOCATION: \([0-9A-F/]*\) (file \([0-9A-F]*\)).*/\1/p')
  swal=$(printf '%s\n' "$label" | sed -n 's/^START WAL LOCATION: [0-9A-F/]* (file \([0-9A-F]*\)).*/\1/p')
  tli=$(printf '%s\n' "$label" | sed -n 's/^START TIMELINE: \([0-9]*\).*/\1/p')
  elsn=$(tr -d ' \n' < "$tmp/backup_manifest" | sed -n 's/.*"End-LSN":"\([0-9A-F/]*\)".*/\1/p')
  if [ -z "$slsn" ] || [ -z "$swal" ] || [ -z "$elsn" ]; then
    echo "base_error=no WAL range in backup_label/backup_manifest" > "$D/.base_error"; rm -rf "$tmp"; return 1
  fi
  i=0  # complete once its end is in the archive: the slot's flushed position has passed it
  until [ "$(q -c "SELECT restart_lsn >= '$elsn'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$SLOT'")" = t ]; do
    i=$((i + 1)); [ $i -gt 120 ] && { echo "base_error=end $elsn never archived" > "$D/.base_error"; rm -rf "$tmp"; return 1; }
    sleep 1
  done
  e=$(( $(date +%s) + 1 ))  # rounded up: the earliest second the base restores to is after its end
  printf 'start_time=%s\nend_time=%s\nend_epoch=%s\nstart_lsn=%s\nend_lsn=%s\nstart_wal=%s\ntimeline=%s\n' \
    "$start" "$(date -u -d "@$e" +%Y-%m-%dT%H:%M:%SZ)" "$e" "$slsn" "$elsn" "$swal" "$tli" > "$tmp/backup_info"
  rm -f "$D/.base_error"
  mv "$tmp" "$D/base/$name"
}

retention() {
  cutoff=$(( $(date +%s) - RETENTION )); keep=""
  for b in $(ls "$D/base" | grep -v '^tmp-' | sort); do
    e=$(info "$b" end_epoch); [ -n "$e" ] || continue
    if [ "$e" -lt "$cutoff" ]; then keep="$b"; else [ -n "$keep" ] || keep="$b"; break; fi
  done
  [ -n "$keep" ] || return 0
  for b in $(ls "$D/base" | grep -v '^tmp-' | sort); do
    [ "$b" = "$keep" ] && break
    rm -rf "$D/base/$b"
  done
  w=$(info "$keep" start_wal); [ -n "$w" ] && pg_archivecleanup "$D/wal" "$w" 2>/dev/null
  return 0
}

# one psql session for the polls (a process and a server backend per poll would cost more than the rest): the
# queries go in through a FIFO on fd 3, the rows come back on fd 4, each answer ended by a marker line
session() {
  [ -n "$spid" ] && kill "$spid" 2>/dev/null; exec 3>&- 4<&-
  rm -f /tmp/archiver.in /tmp/archiver.out && mkfifo /tmp/archiver.in /tmp/archiver.out || return 1
  psql -X -A -t -q -F ' ' </tmp/archiver.in >/tmp/archiver.out 2>"$D/.poll.log" &
  spid=$!
  exec 3>/tmp/archiver.in 4</tmp/archiver.out
}

ask() {  # $1: one statement; the last row it printed in $row; non-zero when the session is gone or printed nothing
  row=""
  kill -0 "$spid" 2>/dev/null || return 1
  printf '%s\n\\echo __end__\n' "$1" >&3 || return 1
  while IFS= read -r line <&4; do [ "$line" = __end__ ] && break; row=$line; done
  [ "$line" = __end__ ] && [ -n "$row" ]
}

verify_wal() {  # finished segments read through once with pg_waldump, at most 64 (1 GiB) a round so that a poll is
  # never held up long (from the oldest base's start after a start, and again each day): a damaged one is named in
  # $wal_bad. The newest finished one waits for the next round: a record crossing into the segment being written
  # is never mistaken for damage.
  # nothing new in the WAL directory since the last round (a segment finishing creates and renames files there,
  # writing into the .partial one does not): no process is started at all, so an idle archiver stays cheap
  # (the mark strictly newer: a change in the very second of the mark, as -nt compares in seconds, is read again)
  if [ -n "$verified" ] && [ -z "$wal_bad" ] && [ "$D/.verify_mark" -nt "$D/wal" ] \
      && [ $(( ${epoch:-0} - ${verified_at:-0} )) -lt 86400 ]; then return 0; fi
  touch "$D/.verify_mark"
  now_s=${epoch:-$(date +%s)}
  if [ $(( now_s - ${verified_at:-0} )) -ge 86400 ]; then verified=""; verified_at=$now_s; fi
  oldest=$(info "$(ls "$D/base" | grep -v '^tmp-' | sort | head -n 1)" start_wal)
  vfrom=${verified:-$oldest}
  [ -n "$oldest" ] && [ "$(printf '%s\n%s\n' "$vfrom" "$oldest" | sort | tail -n 1)" = "$oldest" ] && vfrom=$oldest
  vupto=$(ls "$D/wal" | grep -E '^[0-9A-F]{24}$' | sort | tail -n 1)
  [ -n "$vfrom" ] && [ -n "$vupto" ] || return 0
  vt=$(echo "$vfrom" | cut -c1-8)
  vfirst=$(( 0x$(echo "$vfrom" | cut -c9-16) * 256 + 0x$(echo "$vfrom" | cut -c17-24) ))
  vlast=$(( 0x$(echo "$vupto" | cut -c9-16) * 256 + 0x$(echo "$vupto" | cut -c17-24) ))
  [ "$vlast" -gt "$vfirst" ] || return 0
  [ "$vlast" -gt $((vfirst + 64)) ] && vlast=$((vfirst + 64))
  if pg_waldump -q -p "$D/wal" -t $((0x$vt)) -s "$(printf '%X/%X' $((vfirst / 256)) $((vfirst % 256 * 16777216)))" \
      -e "$(printf '%X/%X' $((vlast / 256)) $((vlast % 256 * 16777216)))" 2>"$D/.verify.log"; then
    verified=$(printf '%s%08X%08X' "$vt" $((vlast / 256)) $((vlast % 256))); wal_bad=""
  else
    wal_bad=$(grep -i error "$D/.verify.log" | tail -n 1 | sed 's/^pg_waldump: error: //' | tr -d '"\\' | cut -c1-200)
  fi
}

check_wal() {  # the archive's WAL must run without a hole from the oldest base's start WAL: else $wal_gap says where
  first=$(info "$(ls "$D/base" | grep -v '^tmp-' | sort | head -n 1)" start_wal)
  [ -n "$first" ] || { wal_gap=""; return 0; }
  wal_gap=$(ls "$D/wal" | sed -n 's/^\([0-9A-F]\{24\}\)\(\.partial\)\{0,1\}$/\1/p' | sort -u | awk -v first="$first" '
    function hex(s,  i, n) { n = 0; for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789ABCDEF", substr(s, i, 1)) - 1; return n }
    ($0 "") < (first "") { next }
    { seg = hex(substr($0, 9, 8)) * 256 + hex(substr($0, 17, 8))
      if (started && seg != last + 1) { print "after " prev; exit }
      if (!started && ($0 "") != (first "")) { print "before " $0; exit }
      started = 1; last = seg; prev = $0 }')
}

poll() {
  if ! ask "WITH c AS (SELECT pg_current_wal_lsn() AS lsn, now() AS t)
    SELECT to_char(c.t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), extract(epoch FROM c.t)::bigint,
      c.lsn, coalesce(s.active, false), coalesce(pg_wal_lsn_diff(c.lsn, s.restart_lsn)::bigint, -1),
      coalesce(s.restart_lsn >= c.lsn, false), coalesce(s.restart_lsn >= '${prev_lsn:-FFFFFFFF/FFFFFFFF}'::pg_lsn, false)
    FROM c LEFT JOIN pg_replication_slots s ON s.slot_name = '$SLOT';"; then
    note "reading the database: $(tail -n 1 "$D/.poll.log")"; streaming=false; session; return 1
  fi
  set -- $row
  t=$1; epoch=$2; lsn=$3; active=$4; lag=$5; caught=$6; reached=$7
  if [ "$caught" = t ]; then latest=$t; latest_epoch=$epoch
  elif [ "$reached" = t ] && [ -n "$prev_t" ]; then latest=$prev_t; latest_epoch=$prev_epoch; fi
  prev_t=$t; prev_epoch=$epoch; prev_lsn=$lsn
  if [ "$active" = t ]; then streaming=true; err=""; else streaming=false; fi
  if [ "$caught" = t ]; then lag_s=0; elif [ -n "$latest_epoch" ]; then lag_s=$((epoch - latest_epoch)); else lag_s=""; fi
  [ $((n % 12)) -eq 0 ] && size=$(( $(du -sk "$D" | cut -f1) * 1024 ))
  berr=""; [ -f "$D/.base_error" ] && berr=$(sed -n 's/^base_error=//p' "$D/.base_error")
  printf '{"updated": "%s", "streaming": %s, "latest_recoverable": "%s", "latest_epoch": "%s", "lag_bytes": "%s", "lag_seconds": "%s", "size_bytes": "%s", "last_base": "%s", "current_lsn": "%s", "error": "%s", "last_error": "%s", "last_error_at": "%s", "base_error": "%s", "wal_gap": "%s", "wal_damaged": "%s"}\n' \
    "$t" "$streaming" "$latest" "$latest_epoch" "$lag" "$lag_s" "$size" "$last" "$lsn" "$err" "$last_err" "$last_err_at" "$berr" "${wal_gap:-}" "${wal_bad:-}" > "$D/status.json.tmp" \
    && mv "$D/status.json.tmp" "$D/status.json"
}

until q -c 'SELECT 1' >/dev/null 2>"$D/.poll.log"; do note "waiting for the database: $(tail -n 1 "$D/.poll.log")"; sleep 1; done
session
last=$(newest_base); last_end=$(info "$last" end_epoch); base_due=0
while :; do
  if [ -z "$rpid" ] || ! kill -0 "$rpid" 2>/dev/null; then
    [ -n "$rpid" ] && note "pg_receivewal stopped: $(tail -n 1 "$D/.receiver.log")"
    rpid=""; start_receiver && sleep 1  # connected, so that this poll finds the slot active
  fi
  poll
  if [ -n "$bpid" ] && ! kill -0 "$bpid" 2>/dev/null; then  # a base backup ended (or failed)
    bpid=""; last=$(newest_base); last_end=$(info "$last" end_epoch); base_due=0
  fi
  if [ "$streaming" = true ] && [ -z "$bpid" ] && [ "${epoch:-0}" -ge "$base_due" ]; then
    if [ -z "$last" ] || [ $(( epoch - ${last_end:-0} )) -ge "$BASE_EVERY" ]; then
      if [ -f "$D/.base_error" ]; then base_due=$(( $(date -r "$D/.base_error" +%s) + 60 )); fi  # retried after a minute
      [ "$epoch" -ge "$base_due" ] && { take_base & bpid=$!; }
    else base_due=$(( last_end + BASE_EVERY )); fi
  fi
  [ -z "$bpid" ] && [ $((n % 60)) -eq 0 ] && retention && check_wal
  [ -z "$bpid" ] && [ $((n % 6)) -eq 1 ] && verify_wal
  n=$((n + 1))
  sleep "$POLL" & wait $!
done
