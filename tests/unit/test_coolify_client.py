"""The Coolify API client against httpx.MockTransport: retries, error translation, no token leaks."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from provision.backends.coolify.client import CoolifyClient, RequestBudget
from provision.core.errors import (
    AmbiguousResult,
    BackendUnavailable,
    CoolifyAPIError,
    CoolifyAuthError,
    CoolifyNotFound,
    CoolifyValidationError,
)
from provision.core.secrets import Secret

TOKEN = "3|super-secret-token-value"


def client(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[CoolifyClient, list[float]]:
    """A client whose every pause (backoff, the request budget's, a 429's) is recorded, not slept, on a fake
    clock that the pauses move."""
    sleeps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    budget = RequestBudget(150, clock=lambda: now[0], sleep=sleep)
    api = CoolifyClient.connect("https://coolify.test/api/v1", Secret(TOKEN), transport=httpx.MockTransport(handler),
                                budget=budget)
    api.sleep = sleep
    return api, sleeps


def answers(*responses: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    queue = list(responses)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


def test_sends_bearer_token_and_json_headers() -> None:
    handler = answers(httpx.Response(200, json=[{"uuid": "p1"}]))
    api, _ = client(handler)
    assert api.request("GET", "/projects") == [{"uuid": "p1"}]
    [request] = handler.seen  # type: ignore[attr-defined]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/json"
    assert str(request.url) == "https://coolify.test/api/v1/projects"


def test_get_is_retried_on_5xx_with_backoff() -> None:
    api, sleeps = client(answers(httpx.Response(502), httpx.Response(503), httpx.Response(200, json={"ok": 1})))
    assert api.request("GET", "/servers") == {"ok": 1}
    assert sleeps == [0.5, 1.0]


def test_429_honours_retry_after_even_for_a_create() -> None:
    handler = answers(httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "Too Many Attempts."}),
                      httpx.Response(201, json={"uuid": "s1"}))
    api, sleeps = client(handler)
    assert api.request("POST", "/services", body={"name": "x"}) == {"uuid": "s1"}
    assert sleeps == [7.0]


def test_retries_are_bounded() -> None:
    api, sleeps = client(answers(*[httpx.Response(500, json={"message": "Server Error"})] * 4))
    with pytest.raises(CoolifyAPIError, match="500") as info:
        api.request("GET", "/projects")
    assert len(sleeps) == 3 and info.value.status == 500


def test_a_create_is_never_repeated_blindly() -> None:
    for failure in (httpx.Response(500), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("dropped")):
        handler = answers(failure)
        api, _ = client(handler)
        with pytest.raises(AmbiguousResult, match="may or may not have been applied"):
            api.request("POST", "/projects", body={"name": "shop"})
        assert len(handler.seen) == 1  # type: ignore[attr-defined]


def test_timeouts_and_resets_on_reads_are_retried_then_reported() -> None:
    api, _ = client(answers(*[httpx.ConnectError("refused")] * 4))
    with pytest.raises(BackendUnavailable, match="connection failed"):
        api.request("GET", "/projects")


def test_non_json_body_is_an_error_with_a_snippet() -> None:
    api, _ = client(answers(*[httpx.Response(200, text="<html>Login</html>")] * 4))
    with pytest.raises(CoolifyAPIError, match="not JSON: <html>Login</html>"):
        api.request("GET", "/projects")


@pytest.mark.parametrize(
    ("status", "body", "cls", "expected"),
    [
        (401, {"message": "Unauthenticated."}, CoolifyAuthError, "invalid or expired"),
        (403, {"success": True, "message": "API is disabled."}, CoolifyAuthError, "Settings → Advanced → API access"),
        (403, {"success": True, "message": "You are not allowed to access the API."}, CoolifyAuthError, "Allowed API IPs"),
        (403, {"message": "Missing required permissions: deploy"}, CoolifyAuthError, "lacks the 'deploy' ability"),
        (404, {"message": "Service not found."}, CoolifyNotFound, "Service not found."),
        (422, {"message": "Validation failed.", "errors": {"name": ["This field is not allowed."]}},
         CoolifyValidationError, "name: This field is not allowed."),
    ],
)
def test_errors_carry_method_url_status_message_and_advice(status: int, body: dict, cls: type, expected: str) -> None:  # type: ignore[type-arg]
    api, _ = client(answers(httpx.Response(status, json=body)))
    with pytest.raises(cls) as info:
        api.request("PATCH" if status == 422 else "GET", "/services/abc")
    text = str(info.value)
    assert expected in text and str(status) in text and "https://coolify.test/api/v1/services/abc" in text
    assert TOKEN not in text and TOKEN not in repr(info.value)


def test_the_token_is_in_no_repr_and_no_error() -> None:
    handler = answers(httpx.Response(500, text=f"echo {TOKEN}"))
    api, _ = client(handler)
    assert TOKEN not in repr(api)
    with pytest.raises(AmbiguousResult) as info:
        api.request("POST", "/projects", body={})
    assert TOKEN not in str(info.value)
    assert json.dumps([r.__dict__ for r in api.log]).find(TOKEN) == -1
