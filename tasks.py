"""Invoke tasks of this checkout (`invoke provision --env=dev`): the collection of the `provision` command,
defined once in provision/cli/, so both have the same tasks, flags and help. Hints then name `invoke`
(as typed: `invoke`, `inv`, `python -m invoke`), the program that works here."""

import os
import sys

from provision.cli import namespace as ns
from provision.infra import hints

if os.path.basename(sys.argv[0]) in ("invoke", "inv") or sys.orig_argv[1:3] == ["-m", "invoke"]:
    hints.use_program(hints.invoked_as())

__all__ = ["ns"]
