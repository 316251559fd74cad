from __future__ import annotations

import pytest

from provision.core import names
from provision.core.errors import InvalidName

BAD_NAMES = ["../x", "a b", "Shop", "x;rm -rf /", "a" * 200, "", "-shop", "shop-", "sh--op", "shop_1", "shöp", "a/b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_project_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName) as info:
        names.validate_name(name)
    message = str(info.value)
    assert "project name" in message
    if len(name) > 60:
        assert "200 characters" in message and "limit is 40" in message


@pytest.mark.parametrize("name", ["shop", "a", "shop-2", "x" * 40, "my-long-project-name", "263c2adc01b9", "1shop"])
def test_good_project_names_pass(name: str) -> None:
    assert names.validate_name(name) == name


def test_bad_name_message_suggests_the_normalised_form() -> None:
    with pytest.raises(InvalidName, match="did you mean 'my-shop'"):
        names.validate_name("My_Shop")


def test_env_names_have_their_own_limit() -> None:
    assert names.validate_env_name("staging") == "staging"
    with pytest.raises(InvalidName, match="env name"):
        names.validate_env_name("x" * 21)


def test_collisions_after_normalisation() -> None:
    assert names.find_collisions(["shop", "blog", "Shop", "my-app", "my_app"]) == [("shop", "Shop"), ("my-app", "my_app")]


def test_compose_project_names_cannot_collide_across_env_and_project() -> None:
    # hyphens are allowed in both names, so the separator must be a character neither may hold
    assert names.compose_project_name("dev", "a-b") != names.compose_project_name("b-dev", "a")
