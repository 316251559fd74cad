"""The roles' SQL and names (roles.py), and password checks against stored SCRAM verifiers (database.py)."""

from __future__ import annotations

import pytest

from provision.core import roles
from provision.core.config import load_env
from provision.core.errors import ConfigError
from provision.core.secrets import Secret
from provision.infra.database import password_matches, scram_verifier
from tests.conftest import write_env

SECRETS = {name: Secret(f"{name.lower()}-value") for name in
           (roles.OWNER_SECRET, roles.AUTHENTICATOR_SECRET, roles.ADMIN_SECRET)}


def test_ensure_sql_hands_out_no_superuser_and_no_plaintext() -> None:
    sql = roles.ensure_sql(roles.Roles(owner="app"), "app", SECRETS)
    assert 'ALTER ROLE "app" NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS LOGIN' in sql
    assert 'ALTER ROLE "authenticator" NOSUPERUSER' in sql and "LOGIN NOINHERIT" in sql
    assert 'ALTER ROLE "anon" NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOLOGIN' in sql
    assert 'GRANT "anon", "authenticated" TO "authenticator"' in sql
    assert 'REVOKE "app", "provision_admin" FROM "authenticator"' in sql
    assert "ON TABLES TO \"anon\"" not in sql and "ON ALL TABLES IN SCHEMA %I TO \"anon\"" not in sql
    assert all(secret.reveal() not in sql for secret in SECRETS.values())  # verifiers only
    assert sql.count("SCRAM-SHA-256$") == 3
    assert sql.startswith("BEGIN;") and sql.rstrip().endswith("COMMIT;")


def test_migration_renames_the_bootstrap_superuser_through_a_temporary_one() -> None:
    sql = roles.migration_sql(roles.Roles(owner="shop_owner"), "shop", SECRETS)
    lines = sql.splitlines()
    assert lines[1] == "\\connect - provision_migrator"
    assert 'ALTER ROLE "shop_owner" RENAME TO "provision_admin";' in lines
    assert lines.index("\\connect - provision_admin") < lines.index('DROP ROLE "provision_migrator";')
    assert roles.ensure_sql(roles.Roles(owner="shop_owner"), "shop", SECRETS).splitlines()[0] in lines


def test_roles_follow_the_variables() -> None:
    found = roles.Roles.of({"db_user": "shop", "api_anon_role": "web_anon", "api_schemas": "api, public"})
    assert (found.owner, found.anon, found.schemas) == ("shop", "web_anon", ("api", "public"))
    assert roles.Roles.of({"db_user": "app"}).anon == "anon"


@pytest.mark.parametrize(("variables", "message"), [
    ("db_user: provision_admin", "db_user 'provision_admin' is a role provision reserves"),
    ("api_anon_role: app", "api_anon_role 'app' is the owner role db_user"),
    ("api_anon_role: authenticator", "api_anon_role 'authenticator' is a role provision reserves"),
])
def test_unsafe_role_names_are_refused(project_root, variables: str, message: str) -> None:  # type: ignore[no-untyped-def]
    write_env(project_root, "dev", f"backend: local\nimages: {{db: 'postgres:16', api: 'postgrest/postgrest:v12'}}\n"
                                   f"variables:\n  {variables}\nprojects:\n  - name: shop\n")
    with pytest.raises(ConfigError, match=message):
        load_env("dev", project_root)


def test_a_password_is_checked_against_a_stored_verifier() -> None:
    verifier = scram_verifier(Secret("right"), iterations=4096)
    assert password_matches(verifier, Secret("right"))
    assert not password_matches(verifier, Secret("wrong"))
    assert not password_matches("md5abcdef", Secret("right"))
    assert not password_matches("", Secret("right"))
