# A point-in-time restore into the empty data volume mounted at $P (core/archiving.py RESTORE_SCRIPT): the base
# backup $BASE of $LINEAGE untarred, recovery.signal, restore_command copying from the archive, recovery_target_time
# $TARGET (or recovery_target_xid $XID), promotion, row counts ($COUNTS), the volume's mark ($MARK), a clean stop. Prints REACHED, COUNT and LOG
# lines. Run as root by the local backend's one-off container and by the Coolify stack's one-shot `restore` service.
set -eu
# a drill (templates/drill.sh) restores into a scratch directory with a socket directory and log of its own
P=${DATA_DIR:-/var/lib/postgresql/data}; S=${SOCKET_DIR:-/var/run/postgresql}; L=${PG_LOG:-/tmp/pg.log}
W="/repo/$LINEAGE/wal"
[ -z "$(ls -A "$P" 2>/dev/null)" ] || { echo "the new data volume is not empty" >&2; exit 3; }
tar -xzf "/repo/$LINEAGE/base/$BASE/base.tar.gz" -C "$P"
rm -f "$P/postmaster.pid"; touch "$P/recovery.signal"
mkdir -p "$S"
chown -R postgres:postgres "$P" "$S"; chmod 700 "$P"
if command -v gosu >/dev/null 2>&1; then as="gosu postgres"
elif command -v su-exec >/dev/null 2>&1; then as="su-exec postgres"
else as="setpriv --reuid=postgres --regid=postgres --init-groups"; fi
rc="if [ -f $W/%f ]; then cp $W/%f %p; elif [ -f $W/%f.partial ]; then cp $W/%f.partial %p; else exit 1; fi"
run() {
  $as postgres -D "$P" -c listen_addresses= -c hot_standby=off -c "restore_command=$rc" ${SOCKET_DIR:+-c unix_socket_directories=$S} ${SERVER_OPTS:-} "$@" >"$L" 2>&1 &
  pid=$!; i=0
  while :; do
    if ! kill -0 $pid 2>/dev/null; then return 1; fi
    s=$($as psql -X -A -t -h "$S" -U "$ADMIN" -d "$DB" -c 'SELECT pg_is_in_recovery()' 2>/dev/null || true)
    [ "$s" = f ] && return 0
    i=$((i + 1)); [ $i -gt $((WAIT * 4)) ] && { echo "recovery did not end in $WAIT s" >&2; tail -n 20 "$L" >&2; exit 4; }
    sleep 0.25
  done
}
reached=target
if [ -n "${XID:-}" ]; then goal="recovery_target_xid=$XID"; else goal="recovery_target_time=$TARGET"; fi
if [ -n "$TARGET${XID:-}" ]; then
  if ! run -c "$goal" -c recovery_target_action=promote; then
    if grep -q 'recovery ended before configured recovery target was reached' "$L"; then
      reached=end  # no commit after the target in the archive: all of it is the state at the target
      run || { tail -n 20 "$L" >&2; exit 5; }
    else tail -n 20 "$L" >&2; exit 5; fi
  fi
else
  reached=end; run || { tail -n 20 "$L" >&2; exit 5; }
fi
if [ "$reached" = end ]; then  # all of the archive was replayed: it must have reached the archive's newest segment
  redo=$(sed -n 's/.*redo done at \([0-9A-F]*\)\/\([0-9A-F]*\).*/\1 \2/p' "$L" | tail -n 1)
  newest=$(ls "$W" | sed -n 's/^[0-9A-F]\{8\}\([0-9A-F]\{16\}\).*/\1/p' | sort | tail -n 1)
  if [ -n "$redo" ] && [ -n "$newest" ]; then
    set -- $redo
    seg=$(( (0x$1 * 4294967296 + 0x$2) / 16777216 ))
    last=$(( 0x$(echo "$newest" | cut -c1-8) * 256 + 0x$(echo "$newest" | cut -c9-16) ))
    if [ "$seg" -lt "$last" ]; then
      echo "recovery stopped at $1/$2, before the archive's newest WAL segment: a segment is missing or damaged" >&2
      tail -n 20 "$L" >&2; exit 6
    fi
  fi
fi
echo "REACHED $reached"
# the checkpoint that makes the restored data durable (its writes and fsyncs, the untarred files' too) runs beside
# the row counts and the mark, whose reads it overlaps: the clean stop after them has next to nothing left to write
# (a drill's copy is thrown away: it takes none)
ckpt=""
if [ -z "${CHECKS_FILE:-}" ]; then
  $as psql -X -q -v ON_ERROR_STOP=1 -h "$S" -U "$ADMIN" -d "$DB" -c CHECKPOINT >"$L.checkpoint" 2>&1 &
  ckpt=$!
fi
$as psql -X -A -t -F ' ' -v ON_ERROR_STOP=1 -h "$S" -U "$ADMIN" -d "$DB" -c "$COUNTS" | sed 's/^/COUNT /'
$as psql -X -q -v ON_ERROR_STOP=1 -h "$S" -U "$ADMIN" -d "$DB" -c "$MARK"
[ -z "${CHECKS_FILE:-}" ] || $as psql -X -A -t -v ON_ERROR_STOP=1 -h "$S" -U "$ADMIN" -d "$DB" -v "token=$TOKEN" \
  -v "owner=$OWNER" -f "$CHECKS_FILE"  # a drill's checks (drill.sh): they print their own prefixed lines
[ -z "$ckpt" ] || wait "$ckpt" || { echo "the checkpoint failed: $(tail -n 3 "$L.checkpoint")" >&2; exit 7; }
$as pg_ctl -D "$P" stop -m fast -w -t 120 >/dev/null
grep -E 'redo starts|recovery stopping|last completed transaction|redo done|selected new timeline|ready to accept|checkpoint starting|checkpoint complete|system is shut down' "$L" | sed 's/^/LOG /' || true
