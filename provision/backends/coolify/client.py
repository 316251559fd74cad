"""A small client for Coolify's HTTP API v1: JSON in and out, errors translated once, bounded retries.

Only safe or idempotent requests are retried (GET, DELETE, PATCH, and stop); a create, a start
or a restart is never repeated blindly: `CoolifyClient.request` raises `AmbiguousResult` when it
may or may not have happened (`answered` tells whether Coolify's answer ended it), and the caller
looks for the resource or the job before trying again.
The token is sent in a header only; it never appears in an error, a log line or a repr.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception

from ...core.errors import (
    AmbiguousResult,
    BackendUnavailable,
    CoolifyAPIError,
    CoolifyAuthError,
    CoolifyConflict,
    CoolifyNotFound,
    CoolifyResponseError,
    CoolifyValidationError,
    ProvisionError,
    redact,
)
from ...core.secrets import Secret
from ...infra import interrupts

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 60.0
# Coolify allows 200 requests a minute (API_RATE_LIMIT; app/Providers/RouteServiceProvider.php:47-53, the `api`
# group's ThrottleRequests in app/Http/Kernel.php:83-87); a run keeps below it with room for other clients
DEFAULT_REQUESTS_PER_MINUTE = 150
DEFAULT_MAX_WAIT = 120.0  # seconds one call may wait for the budget and on 429s, all told


class _Retryable(Exception):
    """Internal: one attempt failed in a way worth retrying."""

    def __init__(self, error: Exception, retry_after: float | None = None, *, always: bool = False,
                 throttled: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.always = always  # safe to retry even for a create: the request never reached the controller
        self.throttled = throttled  # a 429: bounded by the call's wait limit, not by `attempts`


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    status: int | None


class RequestBudget:
    """At most `limit` requests in any `window` seconds, shared by every thread that holds it; a 429's
    Retry-After pauses all of them, since Coolify refuses every request of the bucket until then.

    A request counts from the moment it takes its slot (`acquire`) until `window` seconds after it ended
    (`release`): Coolify counts it when it arrives, some time between the two, so no window of Coolify's
    (`Limit::perMinute`, fixed one-minute windows) nor any other 60 s holds more than `limit` of them.
    Thread-safe; `clock` and `sleep` are injected."""

    def __init__(self, limit: int = DEFAULT_REQUESTS_PER_MINUTE, window: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = interrupts.sleep) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a request budget needs a limit of at least 1 and a positive window")
        self.limit = limit
        self.window = window
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._ended: deque[float] = deque()  # when requests of the last `window` seconds ended (in order)
        self._in_flight = 0
        self._paused_until = 0.0

    def acquire(self, deadline: float | None = None, *, what: str = "a request") -> float:
        """Wait for a slot and take it (the request is in flight until `release`); the seconds waited.
        BackendUnavailable, taking nothing, when the slot would come after `deadline` (this budget's clock)."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                while self._ended and self._ended[0] <= now - self.window:
                    self._ended.popleft()
                busy = len(self._ended) + self._in_flight
                free_at = self._paused_until
                if busy >= self.limit:
                    excess = busy - self.limit  # this many ended requests, and one more, must age out first
                    # only requests in flight: one of them ends first, when is not known (look again soon)
                    free_at = max(free_at, self._ended[excess] + self.window if excess < len(self._ended)
                                  else now + min(1.0, self.window))
                if free_at <= now:
                    self._in_flight += 1
                    return waited
            if deadline is not None and free_at > deadline:
                raise BackendUnavailable(
                    f"{what}: this run's Coolify request budget ({self.limit} requests per {self.window:g} s, "
                    f"coolify.requests_per_minute) has no room for it within its wait limit (next slot in "
                    f"{free_at - now:.0f} s); Coolify allows 200 requests a minute by default (API_RATE_LIMIT)")
            pause = min(free_at - now, self.window)
            self.sleep(pause)
            waited += pause

    def release(self) -> None:
        """The request that took a slot ended (answered, or failed): it counts for `window` seconds more."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._ended.append(self.clock())

    def defer(self, seconds: float) -> None:
        """No request of this budget goes out for `seconds` (Coolify answered 429 with this Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock() + max(0.0, seconds))

    def sent_within(self, seconds: float) -> int:
        """How many requests are in flight or ended in the last `seconds` (at most `window`)."""
        with self._lock:
            now = self.clock()
            return self._in_flight + sum(1 for t in self._ended if t > now - seconds)


_BUDGETS: dict[str, RequestBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def shared_budget(api_url: str, limit: int = DEFAULT_REQUESTS_PER_MINUTE) -> RequestBudget:
    """The process's one budget for the Coolify at `api_url` (by host and port: Coolify throttles per user or
    address, not per path), shared by every client, env and worker thread of this process that talks to it;
    asked with a lower `limit`, the budget keeps the lower one."""
    parts = urlsplit(api_url)
    key = f"{parts.scheme}://{parts.netloc}".lower()
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get(key)
        if budget is None:
            budget = _BUDGETS[key] = RequestBudget(limit)
        elif limit < budget.limit:
            budget.limit = limit
        return budget


def forget_budgets() -> None:
    """Drop every shared budget: the next run in this process starts with full ones, as a new process would."""
    with _BUDGETS_LOCK:
        _BUDGETS.clear()


class CoolifyClient:
    """One httpx.Client per run (keep-alive, explicit timeouts); JSON results or ProvisionErrors."""

    def __init__(
        self,
        http: httpx.Client,
        token: Secret,
        *,
        attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        sleep: Callable[[float], None] = interrupts.sleep,
        budget: RequestBudget | None = None,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        self.http = http
        self._token = token
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        # every request, retries included, takes a slot of the budget first (one per process: `shared_budget`)
        self.budget = budget or RequestBudget()
        self.max_wait = max_wait
        # called before each attempt of a request that changes something (all but GET), unless the call says
        # `guarded=False`: the backend stops a run whose shared lock may have expired (LockLost) here
        self.guard: Callable[[], None] | None = None
        self.log: list[RequestRecord] = []

    @classmethod
    def connect(cls, api_url: str, token: Secret, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                transport: httpx.BaseTransport | None = None, budget: RequestBudget | None = None,
                max_wait: float = DEFAULT_MAX_WAIT,
                sleep: Callable[[float], None] = interrupts.sleep) -> CoolifyClient:
        http = httpx.Client(
            base_url=api_url.rstrip("/") + "/",
            headers={
                "Authorization": f"Bearer {token.reveal()}",
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": "provision",
            },
            timeout=timeout,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            transport=transport,
        )
        return cls(http, token, budget=budget, max_wait=max_wait, sleep=sleep)

    @classmethod
    def offline(cls, refusal: ProvisionError) -> CoolifyClient:
        """A client without a server: every request raises `refusal` and nothing leaves the machine."""
        def refuse(request: httpx.Request) -> httpx.Response:
            raise refusal

        return cls.connect("http://offline.invalid/api/v1", Secret("offline"), transport=httpx.MockTransport(refuse))

    def __repr__(self) -> str:
        return f"CoolifyClient(base_url={str(self.http.base_url)!r}, token=***)"

    def close(self) -> None:
        self.http.close()

    # --- the one request method --------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
        ok: tuple[int, ...] = (200, 201),
        text: bool = False,
        wait: float | None = None,
        guarded: bool = True,
    ) -> Any:
        """Send one API call and return its JSON body (with `text`: the body as text, e.g. GET /version);
        statuses outside `ok` raise CoolifyAPIError.

        `idempotent` defaults to True for GET, PATCH and DELETE. Idempotent calls are retried
        (bounded, with backoff) on 5xx, timeouts and dropped connections; other calls raise
        AmbiguousResult where the outcome is unknown. Every call, a create too, is repeated after a 429
        once its Retry-After has passed (Coolify throttles before any controller runs: nothing was done),
        and waits for a slot of the request budget before each attempt; all that waiting is capped at
        `wait` seconds (default `max_wait`), after which the 429 (or the budget's refusal) is raised.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in ("GET", "PATCH", "DELETE")
        relative = path.lstrip("/")
        deadline = self.budget.clock() + (self.max_wait if wait is None else wait)
        failures: list[int] = []  # attempts that failed other than by a 429: at most `attempts`

        def attempt() -> Any:
            if guarded and method != "GET" and self.guard is not None:
                self.guard()  # before every attempt: a retry, too, is a new change
            self.budget.acquire(deadline, what=f"Coolify API {method} /{relative}")
            try:
                return self._once(method, relative, body, params, ok, idempotent, text)
            finally:
                self.budget.release()

        def stop(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Retryable) and exc.throttled:
                # Retry-After (or a short backoff without one) must still fit in the call's wait limit
                return self.budget.clock() + self._throttle_pause(exc, state) > deadline
            failures.append(state.attempt_number)
            return len(failures) >= self.attempts

        retrying = Retrying(
            stop=stop,
            retry=retry_if_exception(lambda exc: isinstance(exc, _Retryable) and (idempotent or exc.always)),
            wait=self._wait,
            sleep=lambda seconds: self.sleep(seconds) if seconds > 0 else None,  # a 429's pause is the budget's
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retryable as exc:
            if not (idempotent or exc.always):
                raise AmbiguousResult(f"{exc.error} (the change may or may not have been applied)") from exc.error
            raise exc.error from exc

    def request_object(self, method: str, path: str, *, keys: tuple[str, ...] = (), **options: Any) -> dict[str, Any]:
        """`request` for an answer that must be a JSON object holding `keys`; anything else raises
        CoolifyResponseError naming the call and what was wrong."""
        data = self.request(method, path, **options)
        return self._checked_object(data, method, path, keys)

    def request_list(self, method: str, path: str, *, keys: tuple[str, ...] = ("uuid",),
                     **options: Any) -> list[dict[str, Any]]:
        """`request` for an answer that must be a JSON array of objects, each holding `keys` (null: empty)."""
        data = self.request(method, path, **options)
        if data is None:
            return []
        if not isinstance(data, list):
            raise self._shape(method, path, f"expected a JSON array, got {_kind(data)}")
        return [self._checked_object(item, method, path, keys) for item in data]

    def _checked_object(self, data: Any, method: str, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self._shape(method, path, f"expected a JSON object, got {_kind(data)}")
        missing = [k for k in keys if not isinstance(data.get(k), str) or not data.get(k)]
        if missing:
            raise self._shape(method, path, f"an object without {', '.join(missing)}")
        return data

    def _shape(self, method: str, path: str, what: str) -> CoolifyResponseError:
        return CoolifyResponseError(
            method, f"{self.http.base_url}{path.lstrip('/')}", 200, f"unexpected answer: {what}",
            hint="this Coolify version answers in a shape provision does not know: check COOLIFY_API_URL points at "
                 "Coolify's /api/v1 and that the server runs Coolify 4",
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.throttled:
            # Coolify refuses the whole bucket until then: every worker of the budget pauses, and this call's
            # next attempt waits for the budget like any other
            self.budget.defer(self._throttle_pause(exc, state))
            return 0.0
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, MAX_RETRY_AFTER)
        return float(min(self.backoff * 2 ** (state.attempt_number - 1), self.max_backoff))

    def _throttle_pause(self, exc: _Retryable, state: RetryCallState) -> float:
        """How long a 429 asks to wait: its Retry-After, else a backoff of at least a second."""
        if exc.retry_after is not None:
            return min(exc.retry_after, MAX_RETRY_AFTER)
        return float(min(max(1.0, self.backoff * 2 ** (state.attempt_number - 1)), MAX_RETRY_AFTER))

    def _once(self, method: str, path: str, body: Mapping[str, Any] | None, params: Mapping[str, Any] | None,
              ok: tuple[int, ...], idempotent: bool, text: bool = False) -> Any:
        url = f"{self.http.base_url}{path}"
        shown = "/" + path
        error: ProvisionError
        try:
            response = self.http.request(method, path, json=body, params=params)
        except httpx.TimeoutException as exc:
            error = BackendUnavailable(f"Coolify API {method} {shown} timed out ({type(exc).__name__}) at {url}")
            self.log.append(RequestRecord(method, shown, None))
            raise self._unknown(error, idempotent) from exc
        except httpx.TransportError as exc:
            reason = self._clean(str(exc)) or type(exc).__name__
            error = BackendUnavailable(f"Coolify API {method} {shown}: connection failed ({reason}) at {url}")
            self.log.append(RequestRecord(method, shown, None))
            raise self._unknown(error, idempotent) from exc
        self.log.append(RequestRecord(method, shown, response.status_code))
        status = response.status_code
        if status in ok:
            if text:
                return response.text
            try:
                return response.json() if response.content else None
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                error = CoolifyAPIError(method, url, status,
                                        f"answered with a body that is not JSON: {self._snippet(response)}",
                                        hint="a proxy in front of Coolify may be interfering; check COOLIFY_API_URL")
                raise self._unknown(error, idempotent) from exc
        error = self._error(method, url, response)
        if status == 429:  # throttled before any controller ran: nothing happened, always safe to repeat
            raise _Retryable(error, _retry_after(response), always=True, throttled=True)
        if status in RETRY_STATUSES:
            if idempotent:
                raise _Retryable(error)
            raise AmbiguousResult(f"{error} (the change may or may not have been applied)") from error
        raise error

    def _unknown(self, error: Exception, idempotent: bool) -> Exception:
        if idempotent:
            return _Retryable(error)
        return AmbiguousResult(f"{error} (the change may or may not have been applied)")


    def _clean(self, text: str) -> str:
        return redact(text, [self._token.reveal()])

    def _snippet(self, response: httpx.Response) -> str:
        text = " ".join(response.text.split())
        return self._clean(text[:120] + ("..." if len(text) > 120 else "")) or "(empty)"

    def _error(self, method: str, url: str, response: httpx.Response) -> CoolifyAPIError:
        status = response.status_code
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        message = ""
        errors: Any = None
        if isinstance(payload, dict):
            message = str(payload.get("message") or payload.get("error") or "")
            errors = payload.get("errors")
            if payload.get("conflicts"):
                errors = {"conflicts": [c.get("message", c) if isinstance(c, dict) else c for c in payload["conflicts"]]}
        if not message:
            message = f"HTTP {status}: {self._snippet(response)}"
        message = self._clean(message)
        cls: type[CoolifyAPIError] = CoolifyAPIError
        hint = ""
        if status == 401:
            cls = CoolifyAuthError
            hint = ("the API token is invalid or expired: create one under Keys & Tokens → API tokens "
                    "(abilities root, or read + write + deploy + read:sensitive) and set COOLIFY_API_TOKEN")
        elif status == 403:
            cls = CoolifyAuthError
            hint = _forbidden_hint(message)
        elif status == 404:
            cls = CoolifyNotFound
        elif status == 409:
            cls = CoolifyConflict
        elif status == 422:
            cls = CoolifyValidationError
        elif status == 429:
            hint = "Coolify rate-limited this client (API_RATE_LIMIT, 200/min by default); retried and gave up"
        elif status >= 500:
            hint = "Coolify failed internally; check its logs (Settings → Logs) and retry"
        return cls(method, url, status, message, errors=errors if isinstance(errors, (dict, list)) else None, hint=hint)


def _forbidden_hint(message: str) -> str:
    lowered = message.lower()
    if "api is disabled" in lowered:
        return "enable it in Coolify: Settings → Advanced → API access (or POST /api/v1/enable with a root token)"
    if "not allowed to access the api" in lowered:
        return "this machine's IP address is not in Coolify's Allowed API IPs (Settings → Advanced)"
    if "missing required permissions" in lowered:
        ability = lowered.rsplit(":", 1)[-1].strip() or "?"
        return f"the token lacks the '{ability}' ability: use a token with root, or read + write + deploy (+ read:sensitive)"
    if "team role" in lowered or "exceed your current role" in lowered:
        return "the token's user is not an admin/owner of the team, which this token's abilities require"
    return "the token is not allowed to do this"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def answered(exc: AmbiguousResult) -> bool:
    """Whether Coolify itself answered the call whose outcome `exc` leaves unknown: a 500 (its controller failed,
    so the request has ended) or a success whose body was cut short. Then whatever it made exists now; without
    an answer (a timeout, a lost connection, a gateway's 502/503/504) it may still be under way."""
    cause = exc.__cause__
    if isinstance(cause, CoolifyAPIError):
        return cause.status == 500
    return isinstance(cause, (json.JSONDecodeError, UnicodeDecodeError))


def _kind(data: Any) -> str:
    if data is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(data), type(data).__name__)
