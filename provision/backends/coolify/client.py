"""A small client for Coolify's HTTP API v1: JSON in and out, errors translated once, bounded retries.

Only safe or idempotent requests are retried (GET, DELETE, PATCH, and start/stop/restart);
a create is never repeated blindly: `CoolifyClient.request` raises `AmbiguousResult` when a
create may or may not have happened, and the caller looks the resource up before trying again.
The token is sent in a header only; it never appears in an error, a log line or a repr.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from ... import interrupts
from ...errors import (
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
from ...secrets import Secret

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 60.0


class _Retryable(Exception):
    """Internal: one attempt failed in a way worth retrying."""

    def __init__(self, error: Exception, retry_after: float | None = None, *, always: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.always = always  # safe to retry even for a create: the request never reached the controller


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    status: int | None


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
    ) -> None:
        self.http = http
        self._token = token
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.log: list[RequestRecord] = []

    @classmethod
    def connect(cls, api_url: str, token: Secret, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                transport: httpx.BaseTransport | None = None) -> CoolifyClient:
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
        return cls(http, token)

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
    ) -> Any:
        """Send one API call and return its JSON body; statuses outside `ok` raise CoolifyAPIError.

        `idempotent` defaults to True for GET, PATCH and DELETE. Idempotent calls are retried
        (bounded, with backoff, honouring Retry-After) on 429, 5xx, timeouts and dropped
        connections; other calls raise AmbiguousResult where the outcome is unknown.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in ("GET", "PATCH", "DELETE")
        relative = path.lstrip("/")

        def attempt() -> Any:
            return self._once(method, relative, body, params, ok, idempotent)

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            retry=retry_if_exception(lambda exc: isinstance(exc, _Retryable) and (idempotent or exc.always)),
            wait=self._wait,
            sleep=self.sleep,
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
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, MAX_RETRY_AFTER)
        return float(min(self.backoff * 2 ** (state.attempt_number - 1), self.max_backoff))

    def _once(self, method: str, path: str, body: Mapping[str, Any] | None, params: Mapping[str, Any] | None,
              ok: tuple[int, ...], idempotent: bool) -> Any:
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
            try:
                return response.json() if response.content else None
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                error = CoolifyAPIError(method, url, status,
                                        f"answered with a body that is not JSON: {self._snippet(response)}",
                                        hint="a proxy in front of Coolify may be interfering; check COOLIFY_API_URL")
                raise self._unknown(error, idempotent) from exc
        error = self._error(method, url, response)
        if status == 429:  # throttled before any controller ran: nothing happened, always safe to repeat
            raise _Retryable(error, _retry_after(response), always=True)
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


def _kind(data: Any) -> str:
    if data is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(data), type(data).__name__)
