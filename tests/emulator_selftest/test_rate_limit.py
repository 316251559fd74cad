"""The API rate limit as Coolify 4.3.11 applies it.

`routes/api.php` lists the `api` group's `throttle:api` before `auth:sanctum`, but Laravel sorts route middleware
by `$middlewarePriority` (laravel/framework `Foundation/Http/Kernel.php`; Coolify's `app/Http/Kernel.php` keeps
the default), where `AuthenticatesRequests` comes before `ThrottleRequests`. So the limiter
(`app/Providers/RouteServiceProvider.php:47-53`, `$request->user()?->id ?: $request->ip()`) sees the token's user:
one bucket per user, whatever token or address; only routes without auth count per address.
"""

from __future__ import annotations

import httpx

from tests.coolify_emulator import CoolifyEmulator

from .conftest import TOKEN, make_client


def test_one_bucket_per_user_whatever_the_token_or_address(emu: CoolifyEmulator) -> None:
    emu.rate_limit = 3
    emu.add_token("same-user", ("root",), user_id=emu.core.store.tokens[TOKEN].user_id)
    emu.add_token("other-user", ("root",))
    with make_client(emu) as first, make_client(emu, "same-user") as second, make_client(emu, "other-user") as other:
        assert first.get("/projects").headers["X-RateLimit-Remaining"] == "2"
        # another token of the same user, from "another machine" behind a proxy: the same bucket
        assert second.get("/projects", headers={"X-Forwarded-For": "10.9.8.7"}).headers[
            "X-RateLimit-Remaining"] == "1"
        assert first.get("/projects").status_code == 200
        throttled = second.get("/projects")
        assert throttled.status_code == 429 and throttled.json() == {"message": "Too Many Attempts."}
        assert int(throttled.headers["Retry-After"]) >= 1
        assert other.get("/projects").headers["X-RateLimit-Remaining"] == "2"  # another user: its own bucket


def test_unauthenticated_requests_are_refused_before_the_limiter(emu: CoolifyEmulator) -> None:
    emu.rate_limit = 2
    with httpx.Client(base_url=emu.base_url, headers={"Accept": "application/json",
                                                      "Authorization": "Bearer 9|wrong"}) as wrong:
        for _ in range(5):
            resp = wrong.get("/projects")
            assert (resp.status_code, resp.json()) == (401, {"message": "Unauthenticated."})
            assert "X-RateLimit-Remaining" not in resp.headers
    with make_client(emu) as client:  # nothing was counted for the address these came from
        assert client.get("/projects").headers["X-RateLimit-Remaining"] == "1"


def test_a_throttled_create_does_nothing(emu: CoolifyEmulator, client: httpx.Client) -> None:
    emu.rate_limit = 1
    assert client.post("/projects", json={"name": "first"}).status_code == 201
    resp = client.post("/projects", json={"name": "second"})
    assert resp.status_code == 429
    assert [p["name"] for p in emu.find_projects()] == ["first"]


def test_routes_without_auth_count_per_address(emu: CoolifyEmulator) -> None:
    """The 404 fallback (routes/api.php, last lines) has only the `api` group: no user, so `$request->ip()`,
    which trusts the calling proxy's X-Forwarded-For (app/Http/Middleware/TrustProxies.php:15)."""
    emu.rate_limit = 2
    with httpx.Client(base_url=emu.base_url, headers={"Accept": "application/json"}) as anonymous:
        assert anonymous.get("/nope").headers["X-RateLimit-Remaining"] == "1"
        assert anonymous.get("/nope").status_code == 404
        assert anonymous.get("/nope").status_code == 429
        behind = anonymous.get("/nope", headers={"X-Forwarded-For": "203.0.113.5, 10.0.0.9"})
        assert behind.status_code == 404 and behind.headers["X-RateLimit-Remaining"] == "1"  # 10.0.0.9's bucket
        assert anonymous.get("/nope", headers={"X-Forwarded-For": "10.0.0.9"}).headers[
            "X-RateLimit-Remaining"] == "0"
    with make_client(emu) as client:  # the user's bucket is another one
        assert client.get("/projects").status_code == 200


def test_allowed_ips_see_the_forwarded_address(emu: CoolifyEmulator, client: httpx.Client) -> None:
    """ApiAllowed checks `$request->ip()` (app/Http/Middleware/ApiAllowed.php:31), the same address."""
    emu.core.settings.allowed_ips = ["10.1.2.3"]
    assert client.get("/projects").status_code == 403
    assert client.get("/projects", headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 200
