"""Pure: which of the local engine's stacks belong to this checkout.

Everything the local backend creates carries the env's owner id (`io.provision.owner`); a project's owners are
the owner labels of its containers (or, without containers, of its volumes), "" for one carrying none. A stack
is this checkout's when every owner is accepted: this env's owner id; "" (no label) when this checkout holds
the project's record (an earlier version made it here) or when the env has no owner id; and any owner `adopt`
took it over from.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from ...core import names
from ...infra import hints

UNLABELLED = ""  # the owner of a container or volume without an owner label


def owners_of(labels: Iterable[Mapping[str, str]]) -> frozenset[str]:
    """The owner ids these resources' labels carry ("" for each without one)."""
    return frozenset(found.get(names.LABEL_OWNER, UNLABELLED) for found in labels)


def accepted_owners(me: str | None, *, recorded: bool, adopted: Collection[str] = ()) -> frozenset[str]:
    """The owners whose resources are this checkout's for one project: its own id (none: unlabelled ones), the
    unlabelled ones when it holds the project's record, and those it adopted."""
    accepted = {me or UNLABELLED, *adopted}
    if recorded:
        accepted.add(UNLABELLED)
    return frozenset(accepted)


def foreign_owner(owners: Collection[str], accepted: Collection[str]) -> str | None:
    """The owner of `owners` that is not accepted (a labelled one before ""), or None when the stack is ours."""
    foreign = sorted(set(owners) - set(accepted), key=lambda owner: (owner == UNLABELLED, owner))
    return foreign[0] if foreign else None


def legacy(owners: Collection[str], me: str | None) -> bool:
    """Ours, but made by an earlier version without the owner label that this env's id now gives it."""
    return bool(me) and UNLABELLED in owners


def refusal(env: str, project: str, what: str, owner: str, me: str | None) -> str:
    """Why provision will not act on a project's stack of another owner, and what to do."""
    whose = (f"belongs to another checkout (owner {owner}; this env's owner is {me or 'not set'})" if owner else
             "carries no owner id and this checkout has no record of it (another checkout, an earlier version "
             "elsewhere, or made by hand)")
    return (f"{project!r} in env {env!r}: {what} on this Docker Engine {whose}: provision will not change or "
            f"delete it. Choose another project name, or take it over with "
            f"{hints.command('adopt', '--yes', env=env, project=project)}")
