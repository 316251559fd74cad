"""The marks in Coolify descriptions (provision/backends/coolify/marks.py): what is written passes Coolify 4.3.11's
description rule at its longest, and both the current and the old `key:value — text` form are read."""

from __future__ import annotations

from dataclasses import replace

import pytest

from provision.backends.coolify import marks
from provision.backends.coolify.marks import Marks
from provision.core.errors import ConfigError, ProvisionError
from provision.core.names import PROJECT_MAX
from tests.coolify_emulator.validation import is_valid_description

H1, H2 = "0123456789abcdef", "fedcba9876543210"
OWNER = "team-abc123"
LONGEST_OWNER = "o" * 40  # envfile.OWNER_PATTERN: at most 40 characters
LONGEST_PROJECT = "p" * PROJECT_MAX
LONGEST_UUID = "u" * 40  # Coolify's uuids are shorter (cuid2); 40 is what _UUID accepts
LARGE_MEMORY = 2**53  # 8 PiB, 16 digits: more than any stack's limits add up to


def coolify_accepts(description: str) -> bool:
    """The emulator's port of descriptionRules() (max:255 and DESCRIPTION_PATTERN), the referee here."""
    return len(description) <= 255 and is_valid_description(description)


# --- both forms are read ---------------------------------------------------------------------------------------
OLD_SERVICE = (f"provision:{H1} compose:{H2} owner:{OWNER} mem:335544320 placed:edge%3A%202 "
               f"— managed by provision; edits to the compose in Coolify are reported as drift")
NEW_SERVICE = (f"provision={H1} compose={H2} owner={OWNER} mem=335544320 placed=edge*3A*202 "
               f"managed by provision, edits to the compose in Coolify are reported as drift")


@pytest.mark.parametrize("description", [OLD_SERVICE, NEW_SERVICE])
def test_a_service_description_of_either_form_gives_its_marks(description: str) -> None:
    found = marks.parse(description)
    assert found == Marks(provision=H1, compose=H2, owner=OWNER, memory=335544320, placed="edge: 2",
                          text=marks.SERVICE_TEXT)
    assert found.marked and found.config_hash == H1


@pytest.mark.parametrize(("description", "expected"), [
    (f"provision: owner:{OWNER} — managed by provision", Marks(provision="", owner=OWNER, text="managed by provision")),
    (f"provision: owner:{OWNER} server:abc123 — locks of provision runs (a project variable per running change); "
     f"new services go to that server",
     Marks(provision="", owner=OWNER, server="abc123", text=marks.LOCKS_TEXT + marks.LOCKS_SERVER_TEXT)),
    (f"provision: owner:{OWNER} — locks", Marks(provision="", owner=OWNER, text="locks")),
    (f"provision=project owner={OWNER} managed by provision",
     Marks(provision="project", owner=OWNER, text="managed by provision")),
    (f"provision=locks owner={OWNER} server=abc123 x", Marks(provision="locks", owner=OWNER, server="abc123", text="x")),
    (f"provision:{H1} compose:{H2} owner:{OWNER} — managed by provision aside-of:shop",  # set aside by an old version
     Marks(provision=H1, compose=H2, owner=OWNER, aside_of="shop", text="managed by provision")),
    (f"provision={H1} owner={OWNER} aside-of=shop", Marks(provision=H1, owner=OWNER, aside_of="shop")),
])
def test_project_lock_and_set_aside_descriptions_of_either_form(description: str, expected: Marks) -> None:
    assert marks.parse(description) == expected


@pytest.mark.parametrize(("description", "marked", "owner"), [
    ("Managed by provision", False, None),  # LEGACY_PROJECT: a project made before owner ids
    ("", False, None),
    ("my database", False, None),
    (f"provision:{H1} — managed by provision", True, None),  # made before owner ids
    (f"provision:{H1} owner:a1 owner:b2 — x", True, None),  # two owners: nobody's
    (f"provision={H1} owner=a1 owner:b2", True, None),
    (f"provision={H1} owner=A-B", True, None),  # not an owner id: text
    (f"notes: provision: owner:{OWNER}-old", True, f"{OWNER}-old"),  # hand-made, mentions provision
    ("provision= owner=abc123", False, "abc123"),  # `provision=` needs a value; the old `provision:` did not
])
def test_marker_and_owner(description: str, marked: bool, owner: str | None) -> None:
    found = marks.parse(description)
    assert (found.marked, found.owner) == (marked, owner)


def test_the_legacy_project_description_is_recognised() -> None:
    assert marks.is_legacy_project(marks.LEGACY_PROJECT) and marks.is_legacy_project(" Managed by provision ")
    assert not marks.is_legacy_project(marks.project_description(OWNER)) and not marks.is_legacy_project(None)


def test_a_hash_is_only_a_hash_of_sixteen_hex_digits() -> None:
    assert marks.parse(f"provision:{H1}").config_hash == H1
    assert marks.parse("provision=adopted owner=abc").config_hash is None
    assert marks.parse(f"provision={H1}0").config_hash is None
    assert marks.parse(f"provision={H1} compose=xyz").compose is None


# --- what is written passes Coolify's rule ----------------------------------------------------------------------
def test_written_descriptions_pass_coolifys_rule() -> None:
    written = [
        marks.service_description(H1, H2, OWNER),
        marks.service_description(H1, H2, OWNER, memory=335544320, placed="edge-2"),
        marks.project_description(OWNER),
        marks.lock_project_description(OWNER),
        marks.lock_project_description(OWNER, "abc123"),
        replace(marks.parse(OLD_SERVICE), aside_of="shop").render(),
    ]
    for description in written:
        assert coolify_accepts(description), description
        assert ":" not in description and "\u2014" not in description
    assert marks.project_description(OWNER) == f"provision=project owner={OWNER} managed by provision"


def test_the_longest_descriptions_fit() -> None:
    """The longest each kind can be: 40-character owner ids, project names and server uuids, a 16-digit memory,
    and the longest server name a service records (with room left for the aside-of mark a move adds)."""
    longest_placed = ""
    while True:
        try:
            marks.service_description(H1, H2, LONGEST_OWNER, memory=LARGE_MEMORY, placed=longest_placed + "s")
        except ConfigError:
            break
        longest_placed += "s"
    assert len(longest_placed) >= 60  # room for any sensible server name
    service = marks.service_description(H1, H2, LONGEST_OWNER, memory=LARGE_MEMORY, placed=longest_placed)
    aside = replace(marks.parse(service), aside_of=LONGEST_PROJECT).render()
    locks = marks.lock_project_description(LONGEST_OWNER, LONGEST_UUID)
    for description in (service, aside, locks, marks.project_description(LONGEST_OWNER)):
        assert coolify_accepts(description), description
    assert marks.parse(aside) == replace(marks.parse(service), aside_of=LONGEST_PROJECT, text=marks.parse(aside).text)
    # the text is cut at a word (the marks come first; at the very longest none of it is left)
    assert marks.parse(service).text and marks.SERVICE_TEXT.startswith(marks.parse(service).text + " ")
    assert marks.SERVICE_TEXT.startswith(marks.parse(aside).text)
    assert locks.endswith(marks.LOCKS_SERVER_TEXT.lstrip(", "))  # the lock project's text always fits whole


def test_marks_that_cannot_fit_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(ConfigError, match="server name 'sss.*coolify.servers.*too long"):
        marks.service_description(H1, H2, LONGEST_OWNER, memory=LARGE_MEMORY, placed="s" * 200)
    with pytest.raises(ProvisionError, match="cannot be written as the owner mark"):
        marks.project_description("Not An Owner")
    with pytest.raises(ProvisionError, match="server mark"):
        marks.lock_project_description(OWNER, "UPPER:case")


def test_text_is_cut_at_a_word_to_fit() -> None:
    described = Marks(provision=H1, owner=OWNER, text="word " * 100).render()
    assert len(described) <= 255 and described.endswith(" word") and coolify_accepts(described)


# --- round trip --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("placed", ["edge-2", "Edge: #2", "hetzner fsn1 (primary)", "ünï*cödé 50%", "a=b*2A~c", "服务器"])
def test_a_server_name_round_trips_through_the_placed_mark(placed: str) -> None:
    described = marks.service_description(H1, H2, OWNER, memory=1, placed=placed)
    assert coolify_accepts(described)
    assert marks.parse(described).placed == placed
    assert marks.decode_placed(marks.encode_placed(placed)) == placed


@pytest.mark.parametrize("written", [
    Marks(provision=H1, compose=H2, owner=OWNER, memory=335544320, placed="edge 2", text=marks.SERVICE_TEXT),
    Marks(provision=H1, compose=H2, owner=OWNER, aside_of="shop-2", text="managed by provision"),
    Marks(provision=marks.PROJECT, owner=OWNER, text=marks.PROJECT_TEXT),
    Marks(provision=marks.LOCKS, owner=OWNER, server="abc123", text=marks.LOCKS_TEXT + marks.LOCKS_SERVER_TEXT),
    Marks(provision=marks.ADOPTED, owner=OWNER, text="my own notes (kept)"),
])
def test_parse_reads_back_what_render_wrote(written: Marks) -> None:
    assert marks.parse(written.render()) == written


def test_an_old_description_is_rewritten_in_the_new_form_with_its_marks() -> None:
    old = marks.parse(OLD_SERVICE)
    rewritten = old.render()
    assert coolify_accepts(rewritten) and marks.parse(rewritten) == old
    assert rewritten == NEW_SERVICE
    # a hand-made description adopted: the marker and owner are added, its text kept in allowed characters
    adopted = replace(marks.parse("DB for the shop: do not touch — ask ops; #42"), owner=OWNER).render()
    assert adopted == f"provision=adopted owner={OWNER} DB for the shop do not touch - ask ops, 42"
    assert coolify_accepts(adopted)


# --- provision's copy of the rule agrees with the emulator's -----------------------------------------------------
@pytest.mark.parametrize("text", [
    "plain words", "ünïcödé 名前", "a-b_c.d,e!f?g(h)i'j\"k+l=m*n@o/p&q", "tab\tand\nnewline", "no-break\u00a0space",
    "colon: no", "em — dash", "semi;colon", "hash #1", "<b>tag</b>", "50%", "tilde~", "back`tick", "dollar$",
    "pipe|", "brace{", "caret^", "\x1c file separator", "\u180e mongolian vowel separator", "",
])
def test_provisions_rule_agrees_with_the_emulators(text: str) -> None:
    assert marks.acceptable(text) == coolify_accepts(text) == (bool(text) and is_valid_description(text))
