"""The database roles every stack has, as PostgREST and Supabase use them, and the SQL that makes them.

- `provision_admin`: the image's bootstrap superuser (POSTGRES_USER). Only the tool uses it, over the db
  container's local socket, to make and repair these roles; it is never handed out.
- the owner (`variables.db_user`, default `app`): LOGIN, not a superuser; owns the database and its schemas
  and tables; what `db_url` carries; backups and restores run as it.
- `authenticator`: the API's login (PGRST_DB_URI). NOINHERIT: it can do nothing itself, only switch to
  the roles below for a request.
- the anonymous role (`variables.api_anon_role`, default `anon`): NOLOGIN, no privilege on any table by
  default; what a request without a token runs as.
- `authenticated`: NOLOGIN; what a request with a JWT whose `role` claim is `authenticated` (signed with
  the project's JWT_SECRET) runs as; it may read and write the owner's tables in the API's schemas.

Stacks made before these roles had the owner as their bootstrap superuser: `migration_sql` renames that
role to `provision_admin` and makes a new, non-superuser owner of the same name, which takes over every
object the old one owned outside the catalogs. Everything here is idempotent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from ..infra.database import WRONG_VOLUME, quote_identifier, scram_verifier
from .secrets import Secret

ADMIN = "provision_admin"
AUTHENTICATOR = "authenticator"
AUTHENTICATED = "authenticated"
DEFAULT_ANON = "anon"
# a superuser that exists only while a legacy stack's bootstrap role is renamed (a role cannot rename itself)
MIGRATOR = "provision_migrator"
# with continuous archiving: the archiver's login, LOGIN REPLICATION and nothing else, with no password (it connects
# over the db container's socket, which only the archiver's container shares; core/archiving.py)
ARCHIVER = "provision_archiver"
# names the owner and the anonymous role may not take
RESERVED = frozenset({ADMIN, AUTHENTICATOR, AUTHENTICATED, MIGRATOR, ARCHIVER, "postgres", "public"})
# secret names: the owner's password is DB_PASSWORD
ADMIN_SECRET = "DB_ADMIN_PASSWORD"
AUTHENTICATOR_SECRET = "AUTHENTICATOR_PASSWORD"
OWNER_SECRET = "DB_PASSWORD"


@dataclass(frozen=True)
class Roles:
    """The role names of one project's database."""

    owner: str
    anon: str = DEFAULT_ANON
    schemas: tuple[str, ...] = ("public",)
    admin: str = ADMIN
    authenticator: str = AUTHENTICATOR
    authenticated: str = AUTHENTICATED
    archiver: str | None = None  # the replication role, with continuous archiving only

    @classmethod
    def of(cls, variables: Mapping[str, object], *, archiving: bool = False) -> Roles:
        schemas = tuple(s.strip() for s in str(variables.get("api_schemas", "public")).split(",") if s.strip())
        return cls(owner=str(variables["db_user"]), anon=str(variables.get("api_anon_role") or DEFAULT_ANON),
                   schemas=schemas or ("public",), archiver=ARCHIVER if archiving else None)

    def to_context(self) -> dict[str, str]:
        return {"admin": self.admin, "owner": self.owner, "authenticator": self.authenticator,
                "anon": self.anon, "authenticated": self.authenticated}


def digest(roles: Roles, dbname: str, secrets: Mapping[str, Secret], data_volume: str) -> str:
    """What the roles made in one data volume depend on: when it changes, `ensure_sql` runs again."""
    values = [secrets[name].reveal() if name in secrets else "" for name in (OWNER_SECRET, AUTHENTICATOR_SECRET,
                                                                              ADMIN_SECRET)]
    named = {k: v for k, v in asdict(roles).items() if k != "archiver" or v is not None}
    body = json.dumps([named, dbname, data_volume, values])
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def check_names(variables: Mapping[str, object]) -> str | None:
    """Why these variables would give a stack unsafe roles (None when they are fine)."""
    owner = str(variables.get("db_user", ""))
    anon = str(variables.get("api_anon_role") or DEFAULT_ANON)
    if owner in RESERVED:
        return f"db_user {owner!r} is a role provision reserves ({', '.join(sorted(RESERVED))}): pick another name"
    if anon in RESERVED:
        return (f"api_anon_role {anon!r} is a role provision reserves ({', '.join(sorted(RESERVED))}): "
                f"leave it unset (anonymous requests run as {DEFAULT_ANON!r})")
    if anon == owner:
        return (f"api_anon_role {anon!r} is the owner role db_user: every request without a token would own "
                f"every table. Leave it unset and grant what anonymous callers may do to {DEFAULT_ANON!r} "
                f"(docs/security.md)")
    return None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _verifier(password: Secret, role: str, key: Secret) -> str:
    """The role's SCRAM verifier with a salt derived from the project's admin password and the role: the same
    SQL for the same inputs (a backend may hand it to the db container ahead of time, and compare), and a salt
    no other project shares."""
    salt = hmac.new(key.reveal().encode(), b"provision scram salt\0" + role.encode(), hashlib.sha256).digest()[:16]
    return scram_verifier(password, salt=salt)


VOLUME_MARK = "provision volume="


def ensure_sql(roles: Roles, dbname: str, secrets: Mapping[str, Secret], volume: str = "pgdata") -> str:
    """SQL, run as the admin in the project's database, that makes the roles exist with exactly the
    attributes above and the stored passwords (as SCRAM verifiers: no plaintext reaches the server). The
    grants to `authenticated` and the default privileges are made once, when that role is created, so a
    project's own later REVOKEs stay. The database's comment names the data volume (compose key `volume`)
    the roles were made in; a server whose comment names another one (the old container of a stack moving
    to a new volume, still answering) is refused with WRONG_VOLUME, to be asked again."""
    owner, anon, authn = (quote_identifier(n) for n in (roles.owner, roles.anon, roles.authenticated))
    authr, admin = quote_identifier(roles.authenticator), quote_identifier(roles.admin)
    schemas = ", ".join(_literal(s) for s in roles.schemas)
    never = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    mark = _literal(VOLUME_MARK + volume)
    key = secrets[ADMIN_SECRET]

    def verifier(secret: str, role: str) -> str:
        return _literal(_verifier(secrets[secret], role, key))

    lines = [
        "BEGIN;",
        "SELECT pg_advisory_xact_lock(20180322);",  # two runs never interleave their role changes
        "DO $provision$ DECLARE found text := coalesce(shobj_description((SELECT oid FROM pg_database "
        "WHERE datname = current_database()), 'pg_database'), ''); BEGIN "
        f"IF found LIKE {_literal(VOLUME_MARK + '%')} AND found <> {mark} THEN "
        f"RAISE EXCEPTION 'this server {WRONG_VOLUME} (%)', found; END IF; END $provision$;",
        f"SELECT (NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(roles.authenticated)})) AS first_time"
        " \\gset",
        "DO $provision$ BEGIN",
        *(f"  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(name)}) THEN "
          f"CREATE ROLE {quote_identifier(name)} NOLOGIN; END IF;"
          for name in (roles.owner, roles.authenticator, roles.anon, roles.authenticated)),
        "END $provision$;",
        f"ALTER ROLE {owner} {never} LOGIN INHERIT PASSWORD {verifier(OWNER_SECRET, roles.owner)};",
        f"ALTER ROLE {authr} {never} LOGIN NOINHERIT PASSWORD {verifier(AUTHENTICATOR_SECRET, roles.authenticator)};",
        f"ALTER ROLE {anon} {never} NOLOGIN;",
        f"ALTER ROLE {authn} {never} NOLOGIN;",
        f"ALTER ROLE {admin} PASSWORD {verifier(ADMIN_SECRET, roles.admin)};",
        *([f"DO $provision$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(roles.archiver)}) "
           f"THEN CREATE ROLE {quote_identifier(roles.archiver)} NOLOGIN; END IF; END $provision$;",
           f"ALTER ROLE {quote_identifier(roles.archiver)} NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS "
           f"NOINHERIT LOGIN REPLICATION PASSWORD NULL;"] if roles.archiver else
          # archiving switched off: its slot would hold WAL back for ever (the setting that bounds it goes too)
          [f"SELECT count(pg_drop_replication_slot(slot_name)) AS dropped FROM pg_replication_slots WHERE "
           f"slot_name = {_literal(ARCHIVER)} AND NOT active \\gset"]),
        # the authenticator may become the API roles and nothing else
        f"REVOKE {owner}, {admin} FROM {authr};",
        f"GRANT {anon}, {authn} TO {authr};",
        f"ALTER DATABASE {quote_identifier(dbname)} OWNER TO {owner};",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
        _REASSIGN.replace("__OWNER__", _literal(roles.owner)),
        f"DO $provision$ DECLARE s text; BEGIN FOREACH s IN ARRAY ARRAY[{schemas}]::text[] LOOP "
        "IF EXISTS (SELECT FROM pg_namespace WHERE nspname = s) THEN "
        f"EXECUTE format('GRANT USAGE ON SCHEMA %I TO {anon}, {authn}', s); END IF; END LOOP; END $provision$;",
        "\\if :first_time",
        f"DO $provision$ DECLARE s text; BEGIN FOREACH s IN ARRAY ARRAY[{schemas}]::text[] LOOP "
        "IF EXISTS (SELECT FROM pg_namespace WHERE nspname = s) THEN "
        f"EXECUTE format('GRANT ALL ON ALL TABLES IN SCHEMA %I TO {authn}', s); "
        f"EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO {authn}', s); "
        f"EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %I TO {authn}', s); END IF; "
        f"EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA %I GRANT ALL ON TABLES TO {authn}', s); "
        f"EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES "
        f"TO {authn}', s); "
        f"EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA %I GRANT EXECUTE ON FUNCTIONS "
        f"TO {authn}', s); "
        "END LOOP; END $provision$;",
        # functions are executable by PUBLIC unless revoked: an anonymous caller gets none by default
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;",
        "\\endif",
        f"COMMENT ON DATABASE {quote_identifier(dbname)} IS {mark};",
        "COMMIT;",
    ]
    return "\n".join(lines) + "\n"


# Every object outside the catalogs that the bootstrap superuser (oid 10) owns goes to the owner: what a
# legacy stack's superuser made. Extension members and sequences owned by a column follow their parents.
_REASSIGN = r"""DO $provision$
DECLARE r record; owner text := __OWNER__;
BEGIN
  FOR r IN SELECT n.nspname FROM pg_namespace n WHERE n.nspowner = 10 AND n.nspname <> 'information_schema'
           AND n.nspname !~ '^pg_' LOOP
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', r.nspname, owner);
  END LOOP;
  FOR r IN SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relowner = 10 AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
             AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
             AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                             AND d.deptype IN ('a', 'i', 'e')) LOOP
    EXECUTE format('ALTER %s %I.%I OWNER TO %I',
                   CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                  WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END,
                   r.nspname, r.relname, owner);
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS routine FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE p.proowner = 10 AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
             AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                             AND d.deptype = 'e') LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.routine, owner);
  END LOOP;
  FOR r IN SELECT n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE t.typowner = 10 AND t.typtype IN ('d', 'e', 'r') AND n.nspname <> 'information_schema'
             AND n.nspname !~ '^pg_'
             AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                             AND d.deptype = 'e') LOOP
    EXECUTE format('ALTER TYPE %I.%I OWNER TO %I', r.nspname, r.typname, owner);
  END LOOP;
END $provision$;"""


def migration_sql(roles: Roles, dbname: str, secrets: Mapping[str, Secret], volume: str = "pgdata") -> str:
    """For a stack whose bootstrap superuser is the owner (made before these roles), run as that owner: a
    temporary superuser renames it to the admin, then `ensure_sql` makes a new owner and hands it the data."""
    migrator, owner, admin = (quote_identifier(n) for n in (MIGRATOR, roles.owner, roles.admin))
    return "\n".join([
        f"DO $provision$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(MIGRATOR)}) THEN "
        f"CREATE ROLE {migrator} SUPERUSER LOGIN; END IF; END $provision$;",
        f"\\connect - {MIGRATOR}",
        f"ALTER ROLE {owner} RENAME TO {admin};",
        f"\\connect - {roles.admin}",
        f"DROP ROLE {migrator};",
        ensure_sql(roles, dbname, secrets, volume),
    ])
