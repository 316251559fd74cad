#!/usr/bin/env bash
# Entrypoint with the interface of the official postgres image's, trimmed down: on an empty $PGDATA run
# initdb, append the host rule to pg_hba.conf, create POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sql|
# *.sql.gz|*.sh on a server that does not listen on TCP, stop it, then exec postgres (PID 1).
#
# What the official image does, read in docker-library/postgres at commit
# 6edb0a8c4def40c371514b34aef9037ec82d9110, 15/bookworm/docker-entrypoint.sh (the 14, 16, 17 and 18
# bookworm/trixie/alpine variants are the same file), and reproduced here in effect:
# - docker_init_database_dir: `initdb --username=$POSTGRES_USER --pwfile=<password + "\n">` followed by
#   $POSTGRES_INITDB_ARGS, which goes through `eval` (so shell quoting inside it works), then
#   `--waldir $POSTGRES_INITDB_WALDIR` when set. No --auth options: initdb's own defaults apply, so
#   pg_hba.conf starts with `local all all trust`, `host all all 127.0.0.1/32 trust`,
#   `host all all ::1/128 trust` and the same three for `replication` (the pg_hba.conf.sample of
#   PostgreSQL; checked with Debian's initdb 15 and 17 in these images). Inside the container, TCP to
#   127.0.0.1 is therefore trusted, as is the unix socket.
# - pg_setup_hba_conf: METHOD = $POSTGRES_HOST_AUTH_METHOD, default `postgres -C password_encryption`
#   with the server's command-line options (scram-sha-256 from PostgreSQL 14 on, md5 before); appends a
#   blank line, two comment lines when METHOD is trust, and `host all all all METHOD`.
# - docker_verify_minimum_env: no POSTGRES_PASSWORD and METHOD not trust -> error; trust -> a warning.
# - docker_setup_env: POSTGRES_PASSWORD, POSTGRES_USER (postgres), POSTGRES_DB ($POSTGRES_USER) and
#   POSTGRES_INITDB_ARGS each also from a *_FILE.
# - while the socket-only temporary server runs, PGPASSWORD=$POSTGRES_PASSWORD (for --auth-local=...
#   in POSTGRES_INITDB_ARGS) and PGUSER=$POSTGRES_USER.
# Not reproduced: nss_wrapper for arbitrary --user uids, *.sql.xz / *.sql.zst init files, the 18+ layout.
set -Eeuo pipefail
shopt -s nullglob

# VAR, or VAR_FILE (docker secrets), else the default.
file_env() {
  local var=$1 fvar=${1}_FILE val=${2:-}
  if [ -n "${!var:-}" ] && [ -n "${!fvar:-}" ]; then
    echo >&2 "error: both $var and $fvar are set (but are exclusive)"; exit 1
  fi
  if [ -n "${!var:-}" ]; then val=${!var}; elif [ -n "${!fvar:-}" ]; then val=$(<"${!fvar}"); fi
  export "$var=$val"
  unset "$fvar"
}

if [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi

# As root: fix ownership (fresh volumes, bind mounts), then re-run as postgres.
if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
  chmod 700 "$PGDATA"
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
    mkdir -p "$POSTGRES_INITDB_WALDIR"
    find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres '{}' +
    chmod 700 "$POSTGRES_INITDB_WALDIR"
  fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  method=${POSTGRES_HOST_AUTH_METHOD:-}
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$method" != trust ]; then
    cat >&2 <<'MSG'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
       (Or set POSTGRES_HOST_AUTH_METHOD=trust to allow all connections
       without a password; not recommended.)
MSG
    exit 1
  fi
  if [ "$method" = trust ]; then
    echo >&2 "WARNING: POSTGRES_HOST_AUTH_METHOD=trust: every host may connect as any role without a password."
  fi

  # The options a shell would make of POSTGRES_INITDB_ARGS (quotes honoured), as the official `eval` does.
  eval "initdb_extra=($POSTGRES_INITDB_ARGS)"
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then initdb_extra+=(--waldir "$POSTGRES_INITDB_WALDIR"); fi
  # initdb without --auth: its defaults (trust for the socket and for 127.0.0.1/::1), as the official.
  # --pwfile needs a non-empty file, hence the newline even for an empty password.
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") "${initdb_extra[@]}"

  # The rule for every other host: the configured method, else the server's password_encryption
  # (options given on the command line, `postgres -c ...`, count).
  if [ -z "$method" ]; then method=$(postgres -C password_encryption "${@:2}"); fi
  {
    printf '\n'
    if [ "$method" = trust ]; then
      printf '# POSTGRES_HOST_AUTH_METHOD=trust: any host may connect without a password\n'
      printf '# (https://www.postgresql.org/docs/current/auth-trust.html)\n'
    fi
    printf 'host all all all %s\n' "$method"
  } >>"$PGDATA/pg_hba.conf"

  # Temporary server on the unix socket only: pg_isready -h 127.0.0.1 fails until the real one runs.
  export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
  PGUSER=${PGUSER:-$POSTGRES_USER} pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
  psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
  PGHOST='' PGHOSTADDR='' "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
  for f in /docker-entrypoint-initdb.d/*; do
    case $f in
      *.sh) if [ -x "$f" ]; then echo "$0: running $f"; "$f"; else echo "$0: sourcing $f"; . "$f"; fi ;;
      *.sql) echo "$0: running $f"; PGHOST='' PGHOSTADDR='' "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) echo "$0: running $f"; gunzip -c "$f" | PGHOST='' PGHOSTADDR='' "${psql[@]}" --dbname "$POSTGRES_DB" ;;
      *) echo "$0: ignoring $f" ;;
    esac
  done
  PGUSER=${PGUSER:-postgres} pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGPASSWORD
  echo "PostgreSQL init process complete; ready for start up."
elif [ "$1" = postgres ]; then
  echo "PostgreSQL Database directory appears to contain a database; Skipping initialization"
fi

exec "$@"
