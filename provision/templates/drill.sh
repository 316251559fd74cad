# A restore drill inside the archiver container (Coolify's verify: service/drills.py, backends/coolify/archives.py),
# started in the background by one short task: restore.sh restores base $B of lineage $L up to the marker's
# transaction $X (or to the time $G, recovery given $W seconds) into a scratch directory in the repository volume, with a socket directory of its
# own (never the db's, which the archiver mounts), runs the drill's checks ($DRILL_CHECKS: the marker, the sample,
# amcheck) and stops; the output and exit code are left as /repo/.provision/drill-$T.{log,rc}, and the scratch
# directory is ALWAYS removed. Scratch directories of drills whose process is gone (an archiver restarted
# meanwhile) are removed first. Runs as root (the task's user), PostgreSQL as postgres.
set -u
exec </dev/null >/dev/null 2>&1
R=/repo/.provision; D="$R/drill-$T"
mkdir -p "$R"
for old in "$R"/drill-*; do
  [ -d "$old" ] || continue
  pid=$(cat "$old/pid" 2>/dev/null || true)
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then rm -rf "$old"; fi
done
find "$R" -maxdepth 1 -name 'drill-*.*' -mtime +1 -exec rm -f {} + 2>/dev/null || true
rm -f "$R/drill-$T.rc" "$R/drill-$T.log"
mkdir -p "$D/data" && echo $$ >"$D/pid" && printf '%s\n' "$DRILL_CHECKS" >"$D/checks.sql" || {
  echo "the scratch directory $D could not be made" >"$R/drill-$T.log"; rm -rf "$D"; echo 8 >"$R/drill-$T.rc"; exit 8; }
LINEAGE="$L" BASE="$B" XID="${X:-}" TARGET="${G:-}" WAIT="$W" DATA_DIR="$D/data" SOCKET_DIR="$D/s" PG_LOG="$D/pg.log" CHECKS_FILE="$D/checks.sql" TOKEN="$T" \
  MARK="SET client_min_messages = warning" SERVER_OPTS="-c shared_buffers=16MB -c archive_mode=off" \
  sh -c "$RESTORE_SCRIPT" >"$R/drill-$T.log" 2>&1
rc=$?
if [ -f "$D/data/postmaster.pid" ]; then  # it failed with the server running: stopped before its directory goes
  if command -v gosu >/dev/null 2>&1; then as="gosu postgres"
  elif command -v su-exec >/dev/null 2>&1; then as="su-exec postgres"
  else as="setpriv --reuid=postgres --regid=postgres --init-groups"; fi
  $as pg_ctl -D "$D/data" stop -m immediate -w -t 60 >/dev/null 2>&1 || kill -9 "$(head -n 1 "$D/data/postmaster.pid")" 2>/dev/null
  sleep 1
fi
rm -rf "$D"
if [ -e "$D" ]; then echo "the scratch directory $D could not be removed" >>"$R/drill-$T.log"; [ "$rc" -ne 0 ] || rc=7; fi
echo "$rc" >"$R/drill-$T.rc"
