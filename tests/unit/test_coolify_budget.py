"""The request budget shared by a run's workers: at most N requests in any window, a 429's Retry-After honoured
for every method and shared by every worker, all waiting capped by the call's wait limit (fake clock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest

from provision.backends.coolify.client import CoolifyClient, RequestBudget, shared_budget
from provision.core.errors import BackendUnavailable, CoolifyAPIError
from provision.core.secrets import Secret
from tests.coolify_emulator import max_in_window


class FakeClock:
    """A clock that only the sleeps move; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_no_window_of_the_budget_holds_more_than_its_limit() -> None:
    clock = FakeClock()
    budget = RequestBudget(150, clock=clock, sleep=clock.sleep)
    sent = []
    for i in range(600):
        budget.acquire()
        sent.append(clock.now)
        budget.release()
        clock.now += 0.05 if i % 7 else 0.0  # bursts and gaps
    assert max_in_window(sent, 60.0) == 150
    assert sent[149] - sent[0] < 60 and sent[150] >= sent[0] + 60  # the 151st waited for the 1st to age out
    assert budget.sent_within(60.0) == 150


def test_threads_sharing_a_budget_stay_within_it() -> None:
    budget = RequestBudget(10, window=0.5)
    sent: list[float] = []
    guard = threading.Lock()

    def worker() -> None:
        for _ in range(8):
            budget.acquire()
            time.sleep(0.01)  # the request travels: it reaches Coolify some time after it took its slot
            with guard:
                sent.append(time.monotonic())
            budget.release()

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(sent) == 40
    assert max_in_window(sent, 0.5) <= 10
    assert max(sent) - min(sent) >= 1.5  # 40 requests at 10 per half second took at least three more windows


def test_a_slot_past_the_deadline_is_refused_without_being_taken() -> None:
    clock = FakeClock()
    budget = RequestBudget(2, clock=clock, sleep=clock.sleep)
    for _ in range(2):
        budget.acquire()
        budget.release()
    with pytest.raises(BackendUnavailable, match=r"request budget \(2 requests per 60 s.*next slot in 60 s"):
        budget.acquire(deadline=clock.now + 30)
    assert clock.sleeps == [] and budget.sent_within(60) == 2
    assert budget.acquire(deadline=clock.now + 61) == 60.0


def test_a_request_counts_from_its_slot_until_a_window_after_it_ended() -> None:
    """Coolify counts a request when it arrives, some time between taking its slot and its answer: a slow one
    still counts a whole window after it ended, and requests in flight count too."""
    clock = FakeClock()
    budget = RequestBudget(2, clock=clock, sleep=clock.sleep)
    budget.acquire()  # in flight for 30 s
    budget.acquire()
    clock.now += 30
    budget.release()
    with pytest.raises(BackendUnavailable):
        budget.acquire(deadline=clock.now + 0.5)  # both still count: one in flight, one ended just now
    budget.release()
    assert budget.acquire() == 60.0  # a window after the first one *ended*, not after it took its slot


def test_a_process_has_one_budget_per_coolify_and_keeps_the_lower_limit() -> None:
    first = shared_budget("https://coolify.budget-test.example/api/v1", 150)
    assert shared_budget("https://COOLIFY.budget-test.example/api/v1/", 180) is first and first.limit == 150
    assert shared_budget("https://coolify.budget-test.example", 100) is first and first.limit == 100
    assert shared_budget("https://other.budget-test.example/api/v1", 150) is not first


def api(handler: Callable[[httpx.Request], httpx.Response], clock: FakeClock, *, limit: int = 150,
        budget: RequestBudget | None = None) -> CoolifyClient:
    client = CoolifyClient.connect("https://coolify.test/api/v1", Secret("1|t"), transport=httpx.MockTransport(handler),
                                   budget=budget or RequestBudget(limit, clock=clock, sleep=clock.sleep))
    client.sleep = clock.sleep
    return client


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
def test_a_429_is_retried_after_its_retry_after_for_every_method(method: str) -> None:
    clock = FakeClock()
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(clock.now)
        if len(seen) <= 5:  # more 429s than `attempts`: a 429 did nothing, so only time bounds its retries
            return httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "Too Many Attempts."})
        return httpx.Response(201, json={"uuid": "s1"})

    client = api(handler, clock)
    assert client.request(method, "/services", body={"name": "x"} if method != "GET" else None) == {"uuid": "s1"}
    assert [b - a for a, b in zip(seen, seen[1:], strict=False)] == [7.0] * 5
    assert clock.sleeps == [7.0] * 5


def test_a_429_pauses_every_worker_of_the_budget() -> None:
    clock = FakeClock()
    budget = RequestBudget(150, clock=clock, sleep=clock.sleep)
    answers = iter([httpx.Response(429, headers={"Retry-After": "20"}, json={"message": "Too Many Attempts."}),
                    httpx.Response(200, json={"ok": 1}), httpx.Response(200, json={"ok": 2})])
    seen: list[tuple[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, clock.now))
        return next(answers)

    first, second = api(handler, clock, budget=budget), api(handler, clock, budget=budget)
    budget.defer(0)
    with pytest.raises(CoolifyAPIError, match="429"):
        first.request("GET", "/one", wait=5)  # Retry-After 20 does not fit in 5 s: the 429 is raised at once
    assert clock.sleeps == []
    assert second.request("GET", "/two") == {"ok": 1}  # the other worker waited for the Retry-After too
    assert seen[1] == ("/api/v1/two", seen[0][1] + 20.0)


def test_all_waiting_is_capped_by_the_calls_wait_limit() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(clock.now)
        return httpx.Response(429, headers={"Retry-After": "10"}, json={"message": "Too Many Attempts."})

    client = api(handler, clock)
    with pytest.raises(CoolifyAPIError, match="rate-limited") as info:
        client.request("POST", "/projects", body={"name": "shop"}, wait=35)
    assert info.value.status == 429  # not AmbiguousResult: a 429 did nothing
    assert len(calls) == 4 and calls[-1] - calls[0] == 30.0  # 3 retries fit in 35 s, a 4th would not


def test_a_full_budget_paces_the_requests_instead_of_meeting_coolifys_limit() -> None:
    clock = FakeClock()
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(clock.now)
        return httpx.Response(200, json=[])

    client = api(handler, clock, limit=20)
    for _ in range(60):
        client.request("GET", "/projects")
    assert len(sent) == 60 and max_in_window(sent, 60.0) == 20 and sent[-1] - sent[0] == 120.0
    with pytest.raises(BackendUnavailable, match="request budget"):
        client.request("GET", "/projects", wait=1)  # the next slot is further away than the call may wait
    assert len(sent) == 60
