"""A service's variables: the secrets provision generated, read back and written, and the roles script."""

from __future__ import annotations

from ...core import roles
from ...core.errors import CoolifyAuthError, StateError
from ...core.model import Prepared
from ...core.secrets import GENERATED_SECRETS, Secret
from .client import CoolifyClient
from .models import Refs, Variable
from .tasks import ROLES_ENV, roles_env_payload


def read_secrets(client: CoolifyClient, service_uuid: str) -> dict[str, Secret]:
    """The generated secrets among a service's variables; an error naming the fix when Coolify hides one."""
    envs = client.request_list("GET", f"/services/{service_uuid}/envs", keys=("key",))
    found: dict[str, Secret] = {}
    for item in map(Variable.parse, envs):
        key = item.key
        if key is None or key not in GENERATED_SECRETS:
            continue
        if item.shown_once and not item.value:
            # hidden from every token, read:sensitive and root too (ServicesController.php:74-76): no ability
            # helps, only un-marking it (PATCH .../envs takes is_shown_once, ServicesController.php:1469-1500)
            raise StateError(
                f"the value of {key} of Coolify service {service_uuid} could not be read back because it is "
                f"marked 'shown once': Coolify hides such a value from every API token, read:sensitive and root "
                f"included, so no token ability helps, and provision will not give an existing database a new "
                f"password. Set it again without "
                f"'shown once', holding the value the stack was made with: PATCH "
                f"/api/v1/services/{service_uuid}/envs with {{\"key\": \"{key}\", \"value\": \"<it>\", "
                f"\"is_shown_once\": false}}, or delete and re-add it in Coolify's UI without 'shown once'; "
                f"then run provision again")
        if not item.readable:
            raise CoolifyAuthError(
                "GET", f"{client.http.base_url}services/{service_uuid}/envs", 200,
                f"the value of {key} is hidden from this token",
                hint="the token needs the read:sensitive ability (or root) so that the existing database "
                     "password can be read back; provision will not generate a new one for an existing database",
            )
        if item.value:
            found[key] = Secret(item.value)
    return found

def set_secrets(client: CoolifyClient, refs: Refs, prepared: Prepared) -> None:
    """Write the secrets (and the roles script, when prepared) as the service's variables in one request."""
    data = [
        {"key": key, "value": value.reveal(), "is_literal": True}
        for key, value in sorted(prepared.secrets.items())
    ]
    if prepared.roles_sql is not None:
        data.append({"key": ROLES_ENV, "value": roles_env_payload(prepared.roles_sql.reveal(), roles.ADMIN),
                     "is_literal": True})
    client.request("PATCH", f"/services/{refs.service_uuid}/envs/bulk", body={"data": data})
