"""API keys: ``RAG_API_KEYS`` (comma-separated) turns the check on.

With keys set, a request that writes needs ``Authorization: Bearer <key>``; with
``RAG_AUTH_READS`` as well, so does every other request except the always-open paths
(``/health``, ``/ready``, the OpenAPI documentation and the web page's files, which hold
no data). ``/metrics`` is a read: open unless reads need a key.

A write is any POST, PUT, PATCH or DELETE (``/documents`` and whatever else comes), except
the questions sent by POST (``READ_POSTS``: ``/ask``, ``/ask/stream``, ``/search``,
``/v1/chat/completions``): a new route that changes data is covered without opting in, and
a new read sent by POST must be added to ``READ_POSTS`` to stay open.

The check is a pure ASGI middleware, so it answers before routing (routes that do not exist
are refused the same way) and sees every route whether or not it declares anything. No
header, or one that is not ``Bearer <key>``: 401 with ``WWW-Authenticate: Bearer``; a key
that is not one of the keys: 403. Keys are compared as SHA-256 digests with
``hmac.compare_digest`` against every key, with no early exit, and never logged: the
middleware holds only their digests.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.routes.openai_compat import is_openai_path, openai_error

log = logging.getLogger("rag.security")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READ_POSTS = frozenset({"/ask", "/ask/stream", "/search", "/v1/chat/completions"})
ALWAYS_OPEN = frozenset({"/health", "/ready"})

MISSING = "this endpoint needs an API key: send the header 'Authorization: Bearer <key>'"
MALFORMED = "the Authorization header must read 'Bearer <key>'"
INVALID = "the API key is not valid"


def parse_keys(keys: SecretStr | str | None) -> list[str]:
    """The keys of a comma-separated list; blanks and surrounding spaces are dropped."""
    if keys is None:
        return []
    text = keys.get_secret_value() if isinstance(keys, SecretStr) else keys
    return [key.strip() for key in text.split(",") if key.strip()]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def is_write(method: str, path: str) -> bool:
    return method.upper() in WRITE_METHODS and path.rstrip("/") not in READ_POSTS


def route_path(scope: Scope) -> str:
    """The path the router matches: ``path`` without the app's ``root_path``."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


class ApiKeyMiddleware:
    """Refuses requests that need a key and lack a valid one (see the module docs)."""

    def __init__(
        self, app: ASGIApp, keys: SecretStr | str | None, auth_reads: bool = False,
        open_paths: Iterable[str] = ALWAYS_OPEN,
    ):
        self.app = app
        self._digests = [_digest(key) for key in parse_keys(keys)]
        self.auth_reads = auth_reads
        self.open_paths = frozenset(open_paths)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def needs_key(self, method: str, path: str) -> bool:
        if not self._digests:
            return False
        if is_write(method, path):
            return True
        return self.auth_reads and path not in self.open_paths

    def key_is_valid(self, key: str) -> bool:
        """Compared with every key, without stopping at a match: the time taken does not
        tell which key, or how much of one, matched."""
        given = _digest(key)
        valid = False
        for digest in self._digests:
            valid |= hmac.compare_digest(given, digest)
        return valid

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        method = scope["method"]
        if not self.needs_key(method, path):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(Headers(scope=scope).get("authorization"), path)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        log.warning("refused %s %s: %s", method, path,
                    "no valid credentials" if refusal.status_code == 401 else "unknown API key")
        await refusal(scope, receive, send)

    def _refusal(self, authorization: str | None, path: str) -> Response | None:
        """``None`` when the header holds a valid key, else the response to send."""
        if authorization is None:
            return _error(401, MISSING, path, "missing_api_key")
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return _error(401, MALFORMED, path, "invalid_authorization_header")
        if not self.key_is_valid(key):
            return _error(403, INVALID, path, "invalid_api_key")
        return None


def _error(status: int, message: str, path: str, code: str) -> Response:
    """``{"detail": ...}``, or OpenAI's error shape under /v1; 401s say how to authenticate."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if is_openai_path(path):
        return openai_error(status, message, code=code, headers=headers)
    return JSONResponse({"detail": message}, status_code=status, headers=headers)
