"""move: a project, data included, to another server of coolify.servers, and --finalize (what a move set
aside on the old server is deleted). The dump and the checked restore are data.py's."""

from __future__ import annotations

import contextlib

from ..backends.base import Moving, Placing, refusal
from ..core.errors import ConfigError, ConfirmationRequired, ProvisionError, with_note
from ..core.model import Target
from ..core.results import ProjectResult
from ..infra import hints
from ..infra.clock import utc_stamp
from .data import DataVerbs
from .engine import Engine, Operation


class Moves:
    """move for one env on `engine`, with the dump and restore of `data`."""

    def __init__(self, engine: Engine, data: DataVerbs) -> None:
        self.engine = engine
        self.data = data

    def move(self, project: str, to_server: str, *, yes: bool = False) -> ProjectResult:
        """Move the project, data included, to `to_server` (one of coolify.servers): back up, set the old stack
        aside (stopped, renamed, its volume kept), create the project on the new server with the same secrets,
        restore, verify the row counts. The old stack stays until `move_finalize`. Any failure removes the new
        stack and puts the old one back, started."""
        engine = self.engine
        if not yes:
            raise ConfirmationRequired(f"move stops {project!r} in env {engine.env!r} while its data is copied to "
                                       f"{to_server!r}: add --yes to confirm")
        backend = engine.backend
        listed = list(backend.listed_servers(engine.config)) if isinstance(backend, Placing) else []
        if not listed:
            raise refusal(backend, Placing, engine.config, project)
        if to_server not in listed:
            raise ConfigError(f"--to-server {to_server!r} is not listed in coolify.servers of "
                              f"{engine.config.relpath}: one of {', '.join(listed)}")
        target = engine.known_target(project)
        with engine.operation(target, "move", shared=True) as op:
            observed, _, access = self.data.running_db(target)
            if observed.server == to_server:
                return self.engine.result(target, "move", "running", op, [f"already on server {to_server}"],
                                    {"server": to_server})
            origin = observed.server or "its old server"
            made = self.data.dump(target, access, label=f"move-to-{to_server}")
            aside, secrets = engine.capability(Moving, target).set_aside(target, observed, utc_stamp().lower())
            op.changed = True
            engine.store.write_secrets(target.env, project, secrets)  # the new stack is made with the same ones
            try:
                moved = engine.target(project, server=to_server)
                engine.converge(moved, op)
                new_observed, new_prepared, new_access = self.data.running_db(moved)
                self.data.restore_checked(moved, new_observed, new_prepared, new_access, made, op, safety=False)
            except KeyboardInterrupt:
                self._undo_move(target, aside, op)
                raise
            except ProvisionError as exc:
                try:
                    self._undo_move(target, aside, op)
                except ProvisionError as undo:
                    raise with_note(exc, f"Putting the old stack back failed too ({undo}): it is set aside as "
                                         f"{aside!r} in Coolify with its data; the backup {made.path} stays") from exc
                raise with_note(exc, f"{project!r} is back where it was ({origin}), "
                                     f"with its data; the backup {made.path} stays") from exc
        return self.engine.result(target, "move", "moved", op, [
            f"moved from {origin} to {to_server}: {sum((made.row_counts or {}).values())} "
            f"rows in {len(made.row_counts or {})} tables verified",
            f"the old stack stays stopped on {origin} as {aside!r} with its data: "
            f"{hints.command('move', '--finalize', '--yes', env=target.env, project=project)} deletes it"],
            {"from_server": observed.server, "to_server": to_server, "set_aside": aside, "backup": str(made.path),
             "row_counts": made.row_counts})

    def _undo_move(self, target: Target, aside: str, op: Operation) -> None:
        """Remove a half-made moved stack and put the one set aside back (best effort: each step is tried)."""
        engine = self.engine
        with contextlib.suppress(ProvisionError):
            half = engine.observe(target, None)
            if half.exists:
                engine.backend.destroy(target, half, delete_data=True)
        engine.capability(Moving, target).put_back(target, aside)
        with contextlib.suppress(ProvisionError):
            engine.converge(engine.target(target.project), op)  # waits until it answers, records it again

    def move_finalize(self, project: str, *, yes: bool = False) -> ProjectResult:
        """Delete, with its data, what a move left stopped on the old server."""
        engine = self.engine
        if not yes:
            raise ConfirmationRequired(f"move --finalize deletes the stack a move left behind for {project!r}, with "
                                       f"its data: add --yes to confirm")
        target = engine.known_target(project)
        with engine.operation(target, "move --finalize", shared=True) as op:
            backend = engine.backend
            dropped = backend.drop_set_aside(target) if isinstance(backend, Moving) else []
            op.changed = bool(dropped)
        messages = [f"deleted {name!r} and its volumes" for name in dropped] or ["nothing was left behind by a move"]
        return self.engine.result(target, "move --finalize", "finalized", op, messages, {"deleted": dropped})

