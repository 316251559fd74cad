#!/usr/bin/env python3
"""A small stand-in for PostgREST (postgrest/postgrest v12), for tests without a registry.

Env: PGRST_DB_URI (the authenticator's login), PGRST_DB_SCHEMAS (first of the comma list, default
"public"), PGRST_DB_EXTRA_SEARCH_PATH (default "public"), PGRST_DB_ANON_ROLE, PGRST_DB_CHANNEL (default
"pgrst"), PGRST_JWT_SECRET (also "@file", a JWK or a JWKS of "oct" keys), PGRST_JWT_SECRET_IS_BASE64,
PGRST_JWT_AUD, PGRST_JWT_ROLE_CLAIM_KEY (default ".role"), PGRST_SERVER_HOST (default all IPv4
interfaces), PGRST_SERVER_PORT (default 3000).

  GET /         OpenAPI-style root listing the schema's tables the request's role may use (503 if the db is down)
  GET /<table>  rows as JSON; ?select=a,b  ?col=eq.1 (eq neq gt gte lt lte like ilike
                is in, optionally not.)  ?order=a.desc,b  ?limit=  ?offset=
  POST /<table> insert a JSON object or array; 201, rows back with
                "Prefer: return=representation"

Roles, as PostgREST 12 does them: it logs in with PGRST_DB_URI (the "authenticator", which should have no
privileges itself) and runs each request's transaction as another role, chosen by the request:
`Authorization: Bearer <JWT>` signed with PGRST_JWT_SECRET (HS256/384/512) -> the JWT's role claim; no
token (or a JWT without that claim) -> PGRST_DB_ANON_ROLE; neither -> 401 PGRST302. A bad JWT is a 401
PGRST301, with `WWW-Authenticate: Bearer error="invalid_token", ...`; "permission denied" (42501) is a 401
for the anonymous role and a 403 for any other. See the port notes above `verify_jwt`.

Like PostgREST, it serves only once its connection worker has reached the database: at start and after
a request finds the connection lost, it retries with exponential backoff (1, 2, 4, ... 32 s), and until
then every request is a 503 PGRST000. So an api started before its db is ready answers only at the next
retry; a stack that starts both at once must expect that. Each request then opens its own connection.
Rows are turned into JSON by PostgreSQL (json_agg), as PostgREST does.

Like PostgREST, it serves only the tables in its schema cache: loaded when it first reaches the
database, and loaded again on `NOTIFY pgrst, 'reload schema'` (its db-channel, LISTENed on by a
thread that reconnects, reloading on every reconnect) or SIGUSR1. A table created since is a 404
(PGRST205) until then. The cache is read from pg_catalog as the authenticator, so it lists every table
of the schema whatever the authenticator's privileges (PostgREST's does the same).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg2
from psycopg2 import sql

VERSION = "12.2.3-standin"


def _setting(name: str, alias: str | None = None) -> str | None:
    """A PGRST_ setting; PostgREST reads an empty string as unset (Config.hs optString)."""
    value = os.environ.get(f"PGRST_{name}") or (os.environ.get(f"PGRST_{alias}") if alias else None)
    return value or None


def _bool(name: str) -> bool:
    return (_setting(name) or "false").strip().lower() in ("true", "on", "yes", "1")


DB_URI = _setting("DB_URI") or "postgresql://"
SCHEMA = (_setting("DB_SCHEMAS", "DB_SCHEMA") or "public").split(",")[0].strip()
EXTRA_SEARCH_PATH = [s.strip() for s in (_setting("DB_EXTRA_SEARCH_PATH") or "public").split(",") if s.strip()]
ANON_ROLE = _setting("DB_ANON_ROLE")
CHANNEL = _setting("DB_CHANNEL") or "pgrst"
JWT_AUD = _setting("JWT_AUD")
HOST = _setting("SERVER_HOST") or "!4"
PORT = int(_setting("SERVER_PORT") or "3000")
OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "like": "LIKE", "ilike": "ILIKE"}
# PostgreSQL error class/code -> HTTP status, as PostgREST v12.2.3 maps them (src/PostgREST/Error.hs,
# pgErrorStatus; the longest prefix wins). 42501 and 21000 depend on the request: see pg_status.
STATUS = {"08": 503, "09": 500, "0L": 403, "0P": 403, "23503": 409, "23505": 409, "25006": 405,
          "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500, "3B": 500, "40": 500, "53400": 500,
          "53": 503, "54": 500, "55": 500, "57P01": 503, "57": 500, "58": 500, "F0": 500, "HV": 500,
          "P0001": 400, "P0": 500, "XX": 500, "42883": 404, "42P01": 404, "42P17": 500}


class ApiError(Exception):
    def __init__(self, status: int, code: str | None, message: str, details: str | None = None,
                 hint: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, {"code": code, "details": details, "hint": hint, "message": message}
        self.headers = headers or {}


def bad_request(message: str, details: str | None = None) -> NoReturn:
    raise ApiError(400, "PGRST100", message, details)


def pg_status(code: str, message: str, authenticated: bool) -> int:
    """HTTP status of a PostgreSQL error, as PostgREST's pgErrorStatus."""
    if code == "42501":  # insufficient_privilege: "log in" for the anonymous role, "forbidden" for others
        return 403 if authenticated else 401
    if code == "21000":
        return 400 if message.endswith("requires a WHERE clause") else 500
    if code.startswith("PT") and code[2:].isdigit():  # RAISE ... USING ERRCODE = 'PT402'
        return int(code[2:])
    return next((STATUS[code[:n]] for n in (5, 2) if code[:n] in STATUS), 400)


# --- JWT authentication ----------------------------------------------------------------------------------
# Ported from PostgREST v12.2.3 (tag v12.2.3, commit 519615d5fbe3c19218baf0aeff8f5e3920d390e5; Auth.hs
# and Error.hs are the same in v12.0.2) and the jose library it verifies with (frasertweedale/hs-jose
# v0.10, src/Crypto/JWT.hs, src/Crypto/JOSE/JWS.hs, src/Crypto/JOSE/JWA/JWK.hs):
# - src/PostgREST/Auth.hs middleware: the token is `Authorization: Bearer <token>` (scheme in any case,
#   wai's extractBearerAuth); any other or no Authorization header, or an empty token, is "no token".
# - Auth.hs parseToken: no token -> empty claims; a token without a configured secret -> 500 PGRST300
#   "Server lacks JWT secret"; else jose's verifyClaimsAt with defaultJWTValidationSettings and
#   `allowedSkew 30`: all algorithms but "none" (a token whose alg is "none" has no signature to check:
#   JWSNoSignatures); an HMAC key shorter than the hash is never valid (signOct: KeySizeTooSmall); the
#   claims are decoded (exp/nbf/iat numbers, iss/sub strings, aud a string or a list of them) before the
#   signature is checked; then exp (valid while now < exp + 30), iat (not after now + 30), nbf (not
#   before now - 30), aud (when PGRST_JWT_AUD is set and the claim is present, it must name it; iss is
#   not checked). An expired token's message is "JWT expired"; every other failure's is jose's `show`.
# - Auth.hs parseClaims: the role is the claim at jwt-role-claim-key (a string as is, any other JSON
#   value as its JSON text), else db-anon-role, else 401 PGRST302 "Anonymous access is disabled"; the
#   claims passed on carry "role" set to that role.
# - Error.hs: JwtTokenInvalid -> 401 PGRST301 with `WWW-Authenticate: Bearer error="invalid_token",
#   error_description=<message as Haskell `show`s it>`; JwtTokenRequired -> 401 PGRST302 with
#   `WWW-Authenticate: Bearer`; any other 401 (42501 as the anonymous role) -> `WWW-Authenticate: Bearer`.
#   An expired token is PGRST301 "JWT expired" in every v12 release (PGRST303 is v13's JwtClaimsError).
# - App.hs: the auth result is checked before anything else (schema cache, connection, routing), and a
#   request counts as authenticated when its role is not db-anon-role (`Just authRole /= configDbAnonRole`).
# - Query.hs setPgLocals: one `select set_config(...)` per transaction, in this order: search_path (the
#   schema, then db-extra-search-path), role, request.jwt.claims (JSON), request.method, request.path,
#   request.headers (JSON, lower-case names, no cookie), request.cookies (JSON), all transaction-local.
# Not ported: RSA/EC/Ed keys in a JWK(S) (only "oct" keys are used), the JWT cache, db-pre-request,
# role settings, openapi-mode other than follow-privileges.
JWT_SKEW = 30
HMAC_ALGS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
JOSE_ALGS = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
             "PS256", "PS384", "PS512", "EdDSA", "ES256K", "none"}


class JwtError(Exception):
    """JwtTokenInvalid: the message PostgREST shows."""


def haskell_show(text: str) -> str:
    """`show` of a Haskell Text: quoted, escapes as Haskell writes them (non-ASCII as decimal codes)."""
    names = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", '"': '\\"'}
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch in names:
            out.append(names[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(f"\\{ord(ch)}" + ("\\&" if text[i + 1:i + 2].isdigit() else ""))
    return '"' + "".join(out) + '"'


def _b64url(part: str) -> bytes:
    return base64.b64decode(part.replace("-", "+").replace("_", "/") + "=" * (-len(part) % 4), validate=True)


def _oct_key(jwk: Any) -> bytes | None:
    if isinstance(jwk, dict) and jwk.get("kty") == "oct" and isinstance(jwk.get("k"), str):
        try:
            return _b64url(jwk["k"])
        except (binascii.Error, ValueError):
            return None
    return None


def load_keys() -> list[bytes] | None:
    """The JWT keys from PGRST_JWT_SECRET, as Config.hs readSecretFile, decodeSecret and parseSecret make
    them: "@path" reads the file (one trailing newline dropped); base64 when jwt-secret-is-base64; a JWKS
    or a JWK as JSON, else the text itself is the key. None without a secret."""
    secret = _setting("JWT_SECRET")
    if secret is None:
        return None
    raw = secret.encode()
    if secret.startswith("@"):
        with open(secret[1:], "rb") as f:
            raw = f.read().removesuffix(b"\n")
    if _bool("JWT_SECRET_IS_BASE64"):
        text = raw.decode().replace("-", "+").replace("_", "/").replace(".", "=").strip()
        raw = base64.b64decode(text)
    try:
        parsed = json.loads(raw)
    except ValueError:
        return [raw]
    if isinstance(parsed, dict) and isinstance(parsed.get("keys"), list):
        return [k for k in map(_oct_key, parsed["keys"]) if k is not None]
    key = _oct_key(parsed)
    return [key] if key is not None else [raw]


def parse_claim_key(text: str) -> list[str | int]:
    """jwt-role-claim-key, as Config/JSPath.hs parses it: `.key`, `."any key"`, `.key[0]`, ..."""
    path: list[str | int] = []
    i = 0
    while i < len(text):
        if text[i] != ".":
            raise ValueError(f"failed to parse role-claim-key value ({text})")
        i += 1
        if text[i:i + 1] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise ValueError(f"failed to parse role-claim-key value ({text})")
            path.append(text[i + 1:end])
            i = end + 1
        else:
            start = i
            while i < len(text) and (text[i].isalnum() or text[i] in "_$@"):
                i += 1
            if i == start:
                raise ValueError(f"failed to parse role-claim-key value ({text})")
            path.append(text[start:i])
        if text[i:i + 1] == "[":
            end = text.find("]", i)
            if end < 0 or not text[i + 1:end].isdigit():
                raise ValueError(f"failed to parse role-claim-key value ({text})")
            path.append(int(text[i + 1:end]))
            i = end + 1
    if not path:
        raise ValueError(f"failed to parse role-claim-key value ({text})")
    return path


KEYS = load_keys()
ROLE_CLAIM_KEY = parse_claim_key(_setting("JWT_ROLE_CLAIM_KEY", "ROLE_CLAIM_KEY") or ".role")


def _check_claim_types(claims: Any) -> None:
    """jose's ClaimsSet decoding (FromJSON): a JSON object with well-typed registered claims."""
    if not isinstance(claims, dict):
        raise JwtError('JWTClaimsSetDecodeError "Error in $: expected Object"')
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise JwtError(f'JWTClaimsSetDecodeError "Error in $[\'{name}\']: expected NumericDate"')
    for name in ("iss", "sub"):
        value = claims.get(name)
        if value is not None and not isinstance(value, str):
            raise JwtError(f'JWTClaimsSetDecodeError "Error in $[\'{name}\']: expected StringOrURI"')
    aud = claims.get("aud")
    if aud is not None and not isinstance(aud, str) and not (
            isinstance(aud, list) and all(isinstance(a, str) for a in aud)):
        raise JwtError("JWTClaimsSetDecodeError \"Error in $['aud']: expected Audience\"")


def verify_jwt(token: str, keys: list[bytes], now: float) -> dict[str, Any]:
    """The claims of a valid token; JwtError with PostgREST's message otherwise (see the notes above)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError(f"JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got {len(parts)})")
    try:
        header = json.loads(_b64url(parts[0]))
        payload = _b64url(parts[1])
        signature = _b64url(parts[2])
    except (binascii.Error, ValueError) as e:
        raise JwtError(f"JWSError (JSONDecodeError {haskell_show(str(e))})") from e
    if not isinstance(header, dict) or header.get("alg") not in JOSE_ALGS:
        raise JwtError('JWSError (JSONDecodeError "Error in $: unknown or missing \\"alg\\"")')
    try:
        claims = json.loads(payload)
    except ValueError as e:
        raise JwtError(f"JWTClaimsSetDecodeError {haskell_show(str(e))}") from e
    _check_claim_types(claims)
    alg = header["alg"]
    if alg == "none":  # not an accepted algorithm: no signature is left to validate
        raise JwtError("JWSError JWSNoSignatures")
    if not keys:
        raise JwtError("JWSError NoUsableKeys")
    digest = HMAC_ALGS.get(alg)  # RS*/ES*/PS*/EdDSA cannot be checked with an oct key: AlgorithmMismatch
    signing_input = f"{parts[0]}.{parts[1]}".encode()
    if digest is None or not any(len(key) >= digest().digest_size and hmac.compare_digest(
            hmac.new(key, signing_input, digest).digest(), signature) for key in keys):
        raise JwtError("JWSError JWSInvalidSignature")
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    if exp is not None and not now < exp + JWT_SKEW:
        raise JwtError("JWT expired")
    if iat is not None and iat > now + JWT_SKEW:
        raise JwtError("JWTIssuedAtFuture")
    if nbf is not None and not now >= nbf - JWT_SKEW:
        raise JwtError("JWTNotYetValid")
    aud = claims.get("aud")
    if JWT_AUD is not None and aud is not None and JWT_AUD not in ([aud] if isinstance(aud, str) else aud):
        raise JwtError("JWTNotInAudience")
    return claims


@dataclass
class Auth:
    """Who a request runs as: the role, the claims handed to SQL, and whether it is not the anonymous role."""

    role: str
    claims: dict[str, Any]
    authenticated: bool
    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)


def authenticate(authorization: str | None) -> Auth:
    """The request's role from its Authorization header, or the ApiError PostgREST answers."""
    token = ""
    if authorization is not None:
        scheme, _, rest = authorization.strip(" \t").partition(" ")
        if scheme.lower() == "bearer":
            token = rest.strip(" \t")
    claims: dict[str, Any] = {}
    if token:
        if KEYS is None:
            raise ApiError(500, "PGRST300", "Server lacks JWT secret")
        try:
            claims = verify_jwt(token, KEYS, time.time())
        except JwtError as e:
            message = str(e)
            raise ApiError(401, "PGRST301", message, headers={
                "WWW-Authenticate": f'Bearer error="invalid_token", error_description={haskell_show(message)}'}) from e
    value: Any = claims
    for step in ROLE_CLAIM_KEY:
        if isinstance(step, str) and isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(step, int) and isinstance(value, list) and step < len(value):
            value = value[step]
        else:
            value = None
            break
    else:
        value = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    role = value if value is not None else ANON_ROLE
    if role is None:
        raise ApiError(401, "PGRST302", "Anonymous access is disabled", headers={"WWW-Authenticate": "Bearer"})
    return Auth(role=role, claims={**claims, "role": role}, authenticated=role != ANON_ROLE)


def run(query: sql.Composable, params: Any, auth: Auth) -> tuple[Any, ...] | None:
    """Run one statement in its own transaction, as the request's role; return the first row."""
    try:
        conn = psycopg2.connect(DB_URI, connect_timeout=5, application_name="postgrest")
    except psycopg2.OperationalError as e:
        CONNECTION.recover()
        raise ApiError(503, "PGRST000", "Database connection error. Retrying the connection.", str(e).strip()) from e
    try:
        with conn, conn.cursor() as cur:
            search_path = ", ".join(sql.Identifier(s).as_string(cur) for s in [SCHEMA, *EXTRA_SEARCH_PATH])
            cur.execute("SELECT set_config('search_path', %s, true), set_config('role', %s, true),"
                        " set_config('request.jwt.claims', %s, true), set_config('request.method', %s, true),"
                        " set_config('request.path', %s, true), set_config('request.headers', %s, true),"
                        " set_config('request.cookies', %s, true)",
                        (search_path, auth.role, json.dumps(auth.claims), auth.method, auth.path,
                         json.dumps(auth.headers), json.dumps(auth.cookies)))
            cur.execute(query, params)
            return cur.fetchone() if cur.description else None
    except psycopg2.Error as e:
        code = e.pgcode
        if code is None:  # the connection broke: no SQLSTATE
            CONNECTION.recover()
            raise ApiError(503, "PGRST001", "Database client error. Retrying the connection.", str(e).strip()) from e
        diag = e.diag
        message = diag.message_primary or str(e)
        status = pg_status(code, message, auth.authenticated)
        raise ApiError(status, code, message, diag.message_detail, diag.message_hint,
                       headers={"WWW-Authenticate": "Bearer"} if status == 401 else None) from e
    finally:
        conn.close()


class Connection:
    """PostgREST's connection worker: `up` once the database was reached; one worker at a time retries
    with exponential backoff (1 s doubling to 32 s), as PostgREST's automatic connection recovery does."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.lock = threading.Lock()
        self.working = False

    def recover(self) -> None:
        with self.lock:
            self.up.clear()
            if self.working:
                return
            self.working = True
        threading.Thread(target=self._work, daemon=True, name="connection-worker").start()

    def _work(self) -> None:
        delay = 1
        while True:
            try:
                psycopg2.connect(DB_URI, connect_timeout=5, application_name="postgrest-worker").close()
                break
            except psycopg2.Error as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(f"{first}; Attempting to reconnect to the database in {delay} seconds...", flush=True)
                time.sleep(delay)
                delay = min(delay * 2, 32)
        print("Connection successful", flush=True)
        with self.lock:
            self.working = False
            self.up.set()

    def require(self) -> None:
        if not self.up.is_set():
            raise ApiError(503, "PGRST000", "Database connection error. Retrying the connection.")


CONNECTION = Connection()


class SchemaCache:
    """The tables PostgREST knows; None until the database was first reached."""

    def __init__(self) -> None:
        self.tables: frozenset[str] | None = None
        self.lock = threading.Lock()

    # From pg_catalog, as PostgREST's tablesSqlQuery (src/PostgREST/SchemaCache.hs, v12.2.3): tables, views,
    # materialized views, foreign and partitioned tables, no partitions, and no privilege filter, so the
    # authenticator (which has no privileges on the tables) sees them all. information_schema.tables would
    # list only the tables the current role has some privilege on.
    QUERY = """SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('v', 'r', 'm', 'f', 'p') AND n.nspname = %s AND NOT c.relispartition"""

    def load(self, cursor: Any = None) -> None:
        query = self.QUERY
        if cursor is not None:
            cursor.execute(query, (SCHEMA,))
            names = frozenset(r[0] for r in cursor.fetchall())
        else:
            conn = psycopg2.connect(DB_URI, connect_timeout=5, application_name="postgrest-schema")
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(query, (SCHEMA,))
                    names = frozenset(r[0] for r in cur.fetchall())
            finally:
                conn.close()
        with self.lock:
            self.tables = names

    def require(self, table: str) -> None:
        with self.lock:
            tables = self.tables
        if tables is None:
            try:
                self.load()
            except psycopg2.Error as e:
                raise ApiError(503, "PGRST002", "Could not query the database for the schema cache. Retrying.",
                               str(e).strip()) from e
            with self.lock:
                tables = self.tables
        if tables is not None and table not in tables:
            raise ApiError(404, "PGRST205", f"Could not find the table '{SCHEMA}.{table}' in the schema cache",
                           hint="Reload the schema cache: NOTIFY pgrst, 'reload schema'")

    def listen(self) -> None:
        """LISTEN on the db-channel (pgrst) forever: reload on 'reload schema' (or an empty payload) and on
        every reconnect."""
        while True:
            conn = None
            try:
                conn = psycopg2.connect(DB_URI, connect_timeout=5, application_name="postgrest-listener")
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self.load(cur)
                    while True:
                        if select.select([conn], [], [], 5) != ([], [], []):
                            conn.poll()
                            reload = False
                            while conn.notifies:
                                reload |= conn.notifies.pop(0).payload in ("", "reload schema")
                            if reload:
                                self.load(cur)
                                print("Schema cache reloaded", flush=True)
            except psycopg2.Error:
                if conn is not None:
                    conn.close()
                time.sleep(1)


CACHE = SchemaCache()


def openapi(host: str, auth: Auth) -> dict[str, Any]:
    """The tables and columns the request's role has some privilege on (information_schema filters by
    privilege), as PostgREST's default openapi-mode follow-privileges."""
    row = run(sql.SQL("""
        SELECT coalesce(json_object_agg(t.table_name, (
                 SELECT coalesce(json_object_agg(c.column_name, json_build_object('type', c.data_type)
                                 ORDER BY c.ordinal_position), '{}')
                 FROM information_schema.columns c
                 WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name)
               ORDER BY t.table_name), '{}')
        FROM information_schema.tables t WHERE t.table_schema = %s"""), (SCHEMA,), auth)
    tables: dict[str, dict[str, Any]] = row[0] if row else {}
    paths: dict[str, Any] = {"/": {"get": {"tags": ["Introspection"], "summary": "OpenAPI description"}}}
    for name in tables:
        paths[f"/{name}"] = {"get": {"tags": [name]}, "post": {"tags": [name]}}
    return {"swagger": "2.0",
            "info": {"title": "PostgREST API", "description": "standard public schema", "version": VERSION},
            "host": host, "basePath": "/", "schemes": ["http"],
            "consumes": ["application/json"], "produces": ["application/json"], "paths": paths,
            "definitions": {name: {"type": "object", "properties": cols} for name, cols in tables.items()}}


def filter_clause(column: str, expr: str) -> tuple[sql.Composable, list[Any]]:
    negate = expr.startswith("not.")
    op, _, value = expr[4:].partition(".") if negate else expr.partition(".")
    col = sql.Identifier(column)
    clause: sql.Composable
    params: list[Any] = []
    if op in OPERATORS:
        if op in ("like", "ilike"):
            value = value.replace("*", "%")
        clause = sql.SQL("{} {} %s").format(col, sql.SQL(OPERATORS[op]))
        params = [value]
    elif op == "is" and value.lower() in ("null", "true", "false", "unknown"):
        clause = sql.SQL("{} IS {}").format(col, sql.SQL(value.upper()))
    elif op == "in" and value.startswith("(") and value.endswith(")"):
        items = [v.strip().strip('"') for v in value[1:-1].split(",") if v.strip()]
        clause = sql.SQL("{} IN %s").format(col) if items else sql.SQL("false")
        params = [tuple(items)] if items else []
    else:
        bad_request(f'"failed to parse filter ({expr})" (line 1, column 1)', f"unknown operator in {column}={expr}")
    return (sql.SQL("NOT ({})").format(clause) if negate else clause), params


def select_query(table: str, query: str) -> tuple[sql.Composable, list[Any]]:
    columns: sql.Composable = sql.SQL("*")
    where: list[sql.Composable] = []
    order: list[sql.Composable] = []
    tail: list[sql.Composable] = []
    params: list[Any] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "select":
            names = [c.strip() for c in value.split(",") if c.strip()]
            if names and names != ["*"]:
                columns = sql.SQL(", ").join(
                    sql.SQL("{} AS {}").format(sql.Identifier(c.partition(":")[2]), sql.Identifier(c.partition(":")[0]))
                    if ":" in c else sql.Identifier(c) for c in names)
        elif key == "order":
            for term in filter(None, value.split(",")):
                col, *mods = term.split(".")
                if not set(mods) <= {"asc", "desc", "nullsfirst", "nullslast"}:
                    bad_request(f'"failed to parse order ({value})" (line 1, column 1)')
                words = [m.upper() for m in mods if m in ("asc", "desc")]
                words += ["NULLS " + m[5:].upper() for m in mods if m.startswith("nulls")]
                order.append(sql.SQL(" ").join([sql.Identifier(col), *map(sql.SQL, words)]))
        elif key in ("limit", "offset"):
            if not value.isdigit():
                bad_request(f'"failed to parse {key} ({value})" (line 1, column 1)')
            tail.append(sql.SQL(f"{key.upper()} {int(value)}"))
        else:
            clause, more = filter_clause(key, value)
            where.append(clause)
            params += more
    query_sql = sql.SQL("SELECT {} FROM {}").format(columns, sql.Identifier(SCHEMA, table))
    if where:
        query_sql += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
    if order:
        query_sql += sql.SQL(" ORDER BY ") + sql.SQL(", ").join(order)
    query_sql += sql.SQL(" ").join([sql.SQL(""), *tail])
    return sql.SQL("SELECT coalesce(json_agg(_t), '[]')::text, count(*) FROM ({}) _t").format(query_sql), params


def insert_query(table: str, rows: list[Any], returning: bool) -> sql.Composable:
    if not all(isinstance(r, dict) for r in rows):
        raise ApiError(400, "PGRST102", "Empty or invalid json")
    keys = list(rows[0]) if rows else []
    if any(set(r) != set(keys) for r in rows):
        raise ApiError(400, "PGRST102", "All object keys must match")
    target = sql.Identifier(SCHEMA, table)
    cols = sql.SQL(", ").join(map(sql.Identifier, keys))
    if keys:
        template = sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM json_populate_recordset(NULL::{t}, %(body)s::json)")
    else:  # {} or []: a row of defaults per object
        template = sql.SQL("INSERT INTO {t} SELECT FROM json_array_elements(%(body)s::json)")
    insert = template.format(t=target, c=cols)
    if returning:
        return sql.SQL("WITH _ins AS ({} RETURNING *) SELECT coalesce(json_agg(_ins), '[]')::text,"
                       " count(*) FROM _ins").format(insert)
    return sql.SQL("WITH _ins AS ({} RETURNING 1) SELECT NULL, count(*) FROM _ins").format(insert)


class Server(ThreadingHTTPServer):
    daemon_threads = True  # open keep-alive connections do not delay a shutdown


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return f"postgrest/{VERSION}"

    def send(self, status: int, body: str, content_type: str = "application/json; charset=utf-8",
             headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        for name, value in {"Content-Type": content_type, "Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_api(self, method: str) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path).strip("/")
        # read the whole body first: an error answered before it is read must not leave it on the connection
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
        try:
            # as PostgREST's App.hs: the JWT is checked before anything else (connection, schema cache, path)
            auth = authenticate(self.headers.get("Authorization"))
            auth.method, auth.path = self.command, url.path
            auth.headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "cookie"}
            auth.cookies = dict(part.strip().partition("=")[::2] for part in self.headers.get("Cookie", "").split(";")
                                if part.strip())
            CONNECTION.require()
            if method == "GET" and not path:
                host = self.headers.get("Host", f"{HOST}:{PORT}")
                self.send(200, json.dumps(openapi(host, auth)), "application/openapi+json; charset=utf-8")
                return
            if not path or "/" in path:
                raise ApiError(404, None, "Not Found")
            CACHE.require(path)
            if method == "GET":
                query, params = select_query(path, url.query)
                rows, count = run(query, params, auth) or ("[]", 0)
                self.send(200, rows, headers={"Content-Range": f"0-{count - 1}/*" if count else "*/*"})
                return
            try:
                body = json.loads(raw or b"null")
            except ValueError as e:
                raise ApiError(400, "PGRST102", "Empty or invalid json", str(e)) from e
            if not isinstance(body, (dict, list)):
                raise ApiError(400, "PGRST102", "Empty or invalid json")
            returning = "return=representation" in self.headers.get("Prefer", "")
            objects = body if isinstance(body, list) else [body]
            rows, _ = run(insert_query(path, objects, returning), {"body": json.dumps(objects)}, auth) or (None, 0)
            self.send(201, rows if returning else "", headers={"Content-Range": "*/*"})
        except ApiError as e:
            self.send(e.status, json.dumps(e.body), headers=e.headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (unsupported method, bad request line) as JSON."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self.send(code, json.dumps({"code": None, "details": explain, "hint": None,
                                    "message": message or self.responses.get(code, ("",))[0]}))

    def do_GET(self) -> None:
        self.handle_api("GET")

    def do_HEAD(self) -> None:
        self.handle_api("GET")

    def do_POST(self) -> None:
        self.handle_api("POST")

    def log_message(self, format: str, *args: Any) -> None:
        sys.stdout.write(f"{self.address_string()} - - [{self.log_date_time_string()}] {format % args}\n")
        sys.stdout.flush()


def main() -> None:
    # PostgREST's special hosts: "*"/"*4"/"!4" all IPv4, "*6"/"!6" all IPv6.
    host = {"*": "0.0.0.0", "*4": "0.0.0.0", "!4": "0.0.0.0", "*6": "::", "!6": "::"}.get(HOST, HOST)
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = Server((host, PORT), Handler)

    def stop(signum: int, _frame: Any) -> NoReturn:
        print(f"Received {signal.Signals(signum).name}, shutting down", flush=True)
        raise SystemExit(0)

    # As PID 1 the kernel ignores SIGTERM unless a handler is installed.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: threading.Thread(target=CACHE.load, daemon=True).start())
    CONNECTION.recover()
    threading.Thread(target=CACHE.listen, daemon=True, name="listener").start()
    print(f"Listening on {host}:{PORT} (schema {SCHEMA}, anon role {ANON_ROLE or '-'},"
          f" JWT secret {'set' if KEYS is not None else 'unset'})", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
