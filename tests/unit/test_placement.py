"""Placement over Coolify servers: pure decisions."""

from __future__ import annotations

import pytest

from provision.core.errors import ServersFull
from provision.core.placement import ServerLoad, place

MIB = 2**20


def test_stacks_spread_in_proportion_to_capacity_and_ties_go_to_the_first_listed() -> None:
    loads = [ServerLoad("a", 10), ServerLoad("b", 20), ServerLoad("c", 30)]
    where = place(loads, [(f"p{i}", 320 * MIB) for i in range(30)])
    counts = {name: list(where.values()).count(name) for name in "abc"}
    assert counts == {"a": 5, "b": 10, "c": 15}
    assert place([ServerLoad("a", 2), ServerLoad("b", 2)], [("p", 0)]) == {"p": "a"}


def test_existing_stacks_and_memory_count() -> None:
    # b holds fewer stacks, but its memory is nearly handed out: a is emptier by the larger of the two fills
    loads = [ServerLoad("a", 10, stacks=5), ServerLoad("b", 10, memory=1024 * MIB, stacks=1, memory_used=900 * MIB)]
    assert place(loads, [("p", 64 * MIB)]) == {"p": "a"}
    with pytest.raises(ServersFull, match=r"b: full: 900M of 1G memory handed out, a stack needs 320M"):
        place([loads[1]], [("p", 320 * MIB)])


def test_when_one_project_fits_nowhere_none_is_placed_and_every_server_says_why() -> None:
    loads = [ServerLoad("a", 1), ServerLoad("down", 5, unusable="unreachable (Coolify's last check)"),
             ServerLoad("b", 2, stacks=1)]
    with pytest.raises(ServersFull) as caught:
        place(loads, [("p1", 0), ("p2", 0), ("p3", 0)])
    message = str(caught.value)
    assert "no server can take 'p3' (2 other new project(s) would have fitted first)" in message
    assert "a: full: 1 of 1 stacks" in message and "b: full: 2 of 2 stacks" in message
    assert "down: unreachable" in message and "Nothing was created" in message
