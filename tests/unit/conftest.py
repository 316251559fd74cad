"""The unit tier's fixtures: `userland` runs the stack's shell scripts in Debian's and BusyBox's tools."""

from tests.unit.userland import userland

__all__ = ["userland"]
