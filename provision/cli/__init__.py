"""The command line: Invoke tasks that parse arguments, call the `provision` library and print.

One collection serves both `provision <task>` (the console script and `python -m provision`) and
`invoke <task>` in a checkout whose tasks.py imports it. Data goes to stdout, progress and banners to
stderr. Every failure exits with its documented code and the library's message, never a traceback.
The library is imported inside each task so listing the tasks stays fast.
"""

from __future__ import annotations

from invoke.collection import Collection
from invoke.tasks import Task

from . import data, lifecycle, reads, serve
from .flags import RESERVED_SHORT_FLAGS, SHORT_FLAGS
from .session import ROOT_VARIABLE, root, silence_stdout

__all__ = ["RESERVED_SHORT_FLAGS", "ROOT_VARIABLE", "SHORT_FLAGS", "namespace", "root", "silence_stdout"]

namespace = Collection("cli", *(value for module in (lifecycle, reads, data, serve) for value in vars(module).values()
                                if isinstance(value, Task)))
namespace.__doc__ = __doc__
