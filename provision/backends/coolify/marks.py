"""The marks provision keeps in Coolify descriptions: written and read here, nowhere else.

What provision writes (whitespace-separated `key=value` marks, then text for people):

    service       provision=<stack hash> compose=<hash> owner=<id> [mem=<bytes>] [placed=<server>]
                  [branch-of=<project> expires=<YYYYMMDDTHHMMSSZ|never>] [aside-of=<project>]
                  managed by provision, edits to the compose in Coolify are reported as drift
    project       provision=project owner=<id> managed by provision
    lock project  provision=locks owner=<id> [server=<uuid>] locks of provision runs (...)

Coolify 4.3.11 validates project and environment descriptions with `ValidationPatterns::descriptionRules()`
(app/Support/ValidationPatterns.php:18, 438-453; app/Http/Controllers/Api/ProjectController.php:250, 369):
nullable, at most 255 characters, all of them letters, marks, numbers, whitespace or `- _ . , ! ? ( ) ' " + = * @ / &`.
Its API takes any service description (ServicesController.php:384, 1181) but its UI's service form applies the
same rule (app/Livewire/Project/Service/StackForm.php:41, 161-166). So every description written here passes it:
no `:`, no `—`, at most 255 characters (`render` guarantees it or raises).

Earlier versions wrote `provision:<hash> compose:<hash> owner:<id> mem:<bytes> placed:<url-quoted> — text`,
`provision: owner:<id> — managed by provision`, `server:<uuid>`, `aside-of:<project>`, and before owner ids
"Managed by provision" (LEGACY_PROJECT) on projects. `parse` reads both forms, so stacks made earlier keep their
owner and hashes; the first write that happens anyway turns a description into the new form.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

from ...core.branches import BranchMark
from ...core.errors import ConfigError, ProvisionError
from ...core.names import PROJECT_MAX

MAX_LENGTH = 255  # descriptionRules(): max:255 (ValidationPatterns.php:438, 449)
#: room a service's marks leave for the ` aside-of=<project>` a move adds later (set_aside)
ASIDE_RESERVE = len(" aside-of=") + PROJECT_MAX

#: the value of the `provision` mark of what is not a stack
PROJECT = "project"
LOCKS = "locks"
ADOPTED = "adopted"  # a service adopted without a stack hash (made by hand): its next provision updates it

SERVICE_TEXT = "managed by provision, edits to the compose in Coolify are reported as drift"
PROJECT_TEXT = "managed by provision"
LOCKS_TEXT = "locks of provision runs (a project variable per running change)"
LOCKS_SERVER_TEXT = ", new services go to that server"
LEGACY_PROJECT = "Managed by provision"  # the description of projects made before owner ids

#: the characters DESCRIPTION_PATTERN allows besides letters, marks, numbers and whitespace
_PUNCTUATION = "-_.,!?()'\"+=*@/&"
#: PCRE's `\s` under PCRE2_UCP (PHP's /u): \p{Z}, \h and \v (pcre2pattern(3), "Generic character types")
_SPACES = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u180e\u2028\u2029\u202f\u205f\u3000"
                    + "".join(chr(c) for c in range(0x2000, 0x200B)))
#: what a `placed` value keeps as it is; anything else is written `*XX` per UTF-8 byte
_PLACED_SAFE = "-_.@/&()+,"

#: each mark's key and the values it takes (one whitespace-separated word: `key=value`, or `key:value` of old)
_VALUES: dict[str, re.Pattern[str]] = {
    "provision": re.compile(r"[0-9a-z]*"),
    "compose": re.compile(r"[0-9a-f]{16}"),
    "owner": re.compile(r"[a-z0-9-]+"),
    "mem": re.compile(r"[0-9]+"),
    "placed": re.compile(r"\S+"),
    "server": re.compile(r"[a-z0-9]+"),
    "aside-of": re.compile(r"[a-z0-9-]+"),
    "branch-of": re.compile(r"[a-z0-9-]+"),
    "expires": re.compile(r"[0-9]{8}T[0-9]{6}Z|never"),
}
_WORD = re.compile(r"(provision|compose|owner|mem|placed|server|aside-of|branch-of|expires)([:=])(\S*)")
_STACK_HASH = re.compile(r"[0-9a-f]{16}")
_ESCAPE = re.compile(r"\*([0-9A-F]{2})")


def _allowed(ch: str) -> bool:
    return ch in _PUNCTUATION or ch in _SPACES or unicodedata.category(ch)[0] in ("L", "M", "N", "Z")


def acceptable(description: str) -> bool:
    """Whether Coolify's descriptionRules() take `description`: 1-255 characters of DESCRIPTION_PATTERN
    `/^[\\p{L}\\p{M}\\p{N}\\s\\-_.,!?()'"+=*@\\/&]+$/u` (app/Support/ValidationPatterns.php:18)."""
    return 0 < len(description) <= MAX_LENGTH and all(_allowed(ch) for ch in description)


def clean_text(text: str) -> str:
    """`text` in characters the pattern allows: `;` becomes `,`, dashes `-`, anything else it refuses a space;
    whitespace runs become one space."""
    out = []
    for ch in text:
        if _allowed(ch):
            out.append(ch)
        elif ch == ";":
            out.append(",")
        elif unicodedata.category(ch) == "Pd":
            out.append("-")
        else:
            out.append(" ")
    return " ".join("".join(out).split())


def encode_placed(name: str) -> str:
    """A server name as one word of allowed characters: letters, digits and `-_.@/&()+,` stay, anything else
    (`*` too) is `*XX` per UTF-8 byte."""
    out = []
    for ch in name:
        if ch in _PLACED_SAFE or (ch.isalnum() and ch.isascii()):
            out.append(ch)
        else:
            out.extend(f"*{byte:02X}" for byte in ch.encode("utf-8"))
    return "".join(out)


def decode_placed(word: str) -> str:
    """The inverse of encode_placed."""
    data = bytearray()
    i = 0
    while i < len(word):
        found = _ESCAPE.match(word, i)
        if found:
            data.append(int(found.group(1), 16))
            i = found.end()
        else:
            data.extend(word[i].encode("utf-8"))
            i += 1
    return data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Marks:
    """What a description says. `provision`: the marker's value (a stack hash, PROJECT, LOCKS, ADOPTED, or ""
    for an old `provision:` without one), None without the marker; `owner`: the one owner id (None when there
    is none, or several); `text`: the rest, in allowed characters."""

    provision: str | None = None
    compose: str | None = None
    owner: str | None = None
    memory: int = 0
    placed: str | None = None
    server: str | None = None
    aside_of: str | None = None
    branch_of: str | None = None  # the parent of a branch (issue 23) and its expiry, compact (no `:` allowed)
    expires: str | None = None
    text: str = ""

    @property
    def marked(self) -> bool:
        """Made (or adopted) by provision: the description carries its marker."""
        return self.provision is not None

    @property
    def config_hash(self) -> str | None:
        """The stack hash provision last pushed, when the marker holds one."""
        return self.provision if self.provision and _STACK_HASH.fullmatch(self.provision) else None

    def render(self, *, reserve: int = 0) -> str:
        """The description in the form Coolify accepts (module docstring): the marks, then as much of `text` as
        fits in MAX_LENGTH, whole words. ConfigError when the marks alone (plus `reserve` characters kept free
        for marks added later) do not fit: a coolify.servers name too long to record; ProvisionError for a value
        no mark can hold."""
        values = [("provision", self.provision or ADOPTED), ("compose", self.compose), ("owner", self.owner),
                  ("mem", str(self.memory) if self.memory else None),
                  ("placed", encode_placed(self.placed) if self.placed else None), ("server", self.server),
                  ("branch-of", self.branch_of), ("expires", self.expires if self.branch_of else None),
                  ("aside-of", self.aside_of)]
        words = []
        for key, value in values:
            if value is None:
                continue
            if not _VALUES[key].fullmatch(value) or (key == "provision" and not value):
                raise ProvisionError(f"{value!r} cannot be written as the {key} mark of a Coolify description")
            words.append(f"{key}={value}")
        marks = " ".join(words)
        if len(marks) + reserve > MAX_LENGTH:
            hint = (f"; the server name {self.placed!r} (coolify.servers) is too long to record: shorten it"
                    if self.placed else "")
            raise ConfigError(f"a Coolify description holds at most {MAX_LENGTH} characters (descriptionRules), and "
                              f"provision's marks would take {len(marks) + reserve}: {marks[:80]}...{hint}")
        description = marks
        for word in clean_text(self.text).split():
            if len(description) + 1 + len(word) > MAX_LENGTH:
                break
            description += " " + word
        if not acceptable(description):  # every part was checked above: a bug if this fires
            raise ProvisionError(f"provision built a Coolify description that Coolify would refuse: {description!r}")
        return description


def parse(description: str | None) -> Marks:
    """The marks of a description in either form (`key=value`, or the `key:value` and ` — ` of earlier versions).
    A word that is no mark (or a mark with a value it never takes) is text; the old ` — ` before the text goes."""
    found: dict[str, list[tuple[str, str]]] = {}
    text: list[str] = []
    for word in (description or "").split():
        mark = _WORD.fullmatch(word)
        if mark is not None and _VALUES[mark.group(1)].fullmatch(mark.group(3)) and (
                mark.group(3) or (mark.group(1) == "provision" and mark.group(2) == ":")):
            found.setdefault(mark.group(1), []).append((mark.group(2), mark.group(3)))
        elif word == "\u2014" and not text:
            continue  # the old separator between the marks and the text
        else:
            text.append(word)

    def value(key: str) -> str | None:
        return found[key][0][1] if key in found else None

    owners = found.get("owner", [])
    placed = found["placed"][0] if "placed" in found else None
    memory = value("mem")
    return Marks(
        provision=value("provision"),
        compose=value("compose"),
        owner=owners[0][1] if len(owners) == 1 else None,
        memory=int(memory) if memory else 0,
        placed=(unquote(placed[1]) if placed[0] == ":" else decode_placed(placed[1])) if placed else None,
        server=value("server"),
        aside_of=value("aside-of"),
        branch_of=value("branch-of"),
        expires=value("expires"),
        text=clean_text(" ".join(text)),
    )


def is_legacy_project(description: str | None) -> bool:
    """A project description of the versions before owner ids (no marker at all)."""
    return (description or "").strip() == LEGACY_PROJECT


def service_description(config_hash: str, compose: str, owner: str, *, memory: int = 0,
                        placed: str | None = None, branch: BranchMark | None = None) -> str:
    """A service's description: the stack hash (secrets included), the compose's own hash (drift), the owner id,
    the stack's memory limits (what placement counts), with coolify.servers the listed server it was placed
    on (what status shows), and for a branch its parent and expiry (what every checkout reads)."""
    return Marks(provision=config_hash, compose=compose, owner=owner, memory=memory, placed=placed,
                 branch_of=branch.parent if branch else None, expires=compact_time(branch.expires_at) if branch else None,
                 text=SERVICE_TEXT).render(reserve=ASIDE_RESERVE)


def compact_time(stamp: str | None) -> str:
    """2026-12-11T00:00:00Z as 20261211T000000Z (a description takes no `:`); None as `never`."""
    return stamp.replace("-", "").replace(":", "") if stamp else "never"


def branch_mark(found: Marks) -> BranchMark | None:
    """The branch a service's marks say it is (its parent's env is the service's own), or None."""
    if not found.branch_of:
        return None
    expires = found.expires
    stamp = (f"{expires[:4]}-{expires[4:6]}-{expires[6:8]}T{expires[9:11]}:{expires[11:13]}:{expires[13:15]}Z"
             if expires and expires != "never" else None)
    return BranchMark(parent=found.branch_of, parent_env="", taken_at="", expires_at=stamp)


def project_description(owner: str) -> str:
    """The description of a project provision made for a project of this owner."""
    return Marks(provision=PROJECT, owner=owner, text=PROJECT_TEXT).render()


def lock_project_description(owner: str, server: str | None = None) -> str:
    """The lock project's description: this owner's marker and, once chosen, the server for new services."""
    return Marks(provision=LOCKS, owner=owner, server=server,
                 text=LOCKS_TEXT + (LOCKS_SERVER_TEXT if server else "")).render()
