"""Invoke tasks of this checkout (`invoke provision --env=dev`): the collection of the `provision` command,
defined once in provision/cli.py, so both have the same tasks, flags and help."""

from provision.cli import namespace as ns

__all__ = ["ns"]
