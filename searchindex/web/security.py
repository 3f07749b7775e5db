"""Request checks for a server that can read a person's whole photo collection.

- Host: on a loopback address, a request must name a loopback host (DNS rebinding:
  a web page on evil.example whose name is made to resolve to 127.0.0.1 sends
  ``Host: evil.example``).
- Token: when one is set (always when listening beyond loopback), every request
  carries it: ``Authorization: Bearer``, the ``searchindex_token`` cookie, or
  ``?token=`` (which sets the cookie, so links from the printed URL work).
- Same origin: requests that change something (POST, PUT, PATCH, DELETE) must come
  from the page itself: an ``Origin`` naming this server (or, without one,
  ``Sec-Fetch-Site: same-origin``/``none``), and a JSON body (or a picture's bytes, for a
  search by picture), which a cross-site form cannot send.
- Pictures stay on this page: every response says ``Cross-Origin-Resource-Policy:
  same-origin``, and a request for an image (``/api/images/...``) that a browser marks
  ``Sec-Fetch-Site: cross-site`` or ``same-site`` is refused (a page elsewhere cannot show, or
  time, a person's photos), unless it comes from an origin allowed by ``cors_origins``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import is_loopback

__all__ = ["TOKEN_COOKIE", "RequestGuard"]

TOKEN_COOKIE = "searchindex_token"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PICTURES = "/api/images/"
_CORP = (b"cross-origin-resource-policy", b"same-origin")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _host_name(host: str) -> str:
    """``example.org`` from ``example.org:8765``, ``::1`` from ``[::1]:8765``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RequestGuard:
    """ASGI middleware refusing requests that fail the checks above (JSON error, 400/401/403)."""

    def __init__(self, app: Any, *, bind_host: str, token: str | None = None,
                 allowed_hosts: Iterable[str] | None = None, cors_origins: Iterable[str] = (),
                 inner: Any = None) -> None:
        """``app``: what requests that pass go to; ``inner``: the application behind any other
        middleware (the FastAPI app), whose ``state`` stays reachable from outside."""
        self.app = app
        self.fastapi: Any = inner if inner is not None else app
        self.state: Any = getattr(self.fastapi, "state", None)  # state.web: the WebApp behind the routes
        self.token = token
        self.cors_origins = frozenset(cors_origins)
        if allowed_hosts is not None:
            self.allowed: set[str] | None = {_host_name(h) for h in allowed_hosts}
        elif is_loopback(bind_host):
            self.allowed = {"localhost", "127.0.0.1", "::1", _host_name(bind_host)}
        else:
            self.allowed = None  # reachable under any name: the token is the guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.allowed is not None and _host_name(host) not in self.allowed:
            await _refuse(send, 400, "this server answers only to a loopback host name (DNS-rebinding guard)")
            return
        set_cookie = False
        if self.token is not None:
            given = _bearer(headers.get("authorization", ""))
            if given is None:
                given = _cookie(headers.get("cookie", ""))
            if given is None:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                given = query.get("token", [None])[0]
                set_cookie = given is not None
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _refuse(send, 401, "a valid token is needed (printed by searchindex serve)")
                return
        if scope["method"] in _UNSAFE:
            problem = _cross_origin(headers, scope.get("scheme", "http"))
            if problem:
                await _refuse(send, 403, problem)
                return
        elif (scope.get("path", "").startswith(_PICTURES)
              and headers.get("sec-fetch-site", "same-origin") in ("cross-site", "same-site")
              and headers.get("origin") not in self.cors_origins):
            await _refuse(send, 403, "pictures are served to this server's own page only")
            return
        extra = [_CORP]
        if set_cookie:
            assert self.token is not None
            extra.append((b"set-cookie",
                          f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")))

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _bearer(value: str) -> str | None:
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def _cookie(value: str) -> str | None:
    if not value:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(value)
    except Exception:
        return None
    morsel = jar.get(TOKEN_COOKIE)
    return morsel.value if morsel is not None else None


def _cross_origin(headers: dict[str, str], scheme: str) -> str | None:
    """Why a state-changing request does not look same-origin, or None when it does."""
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if origin == "null" or parts.netloc.lower() != headers.get("host", "").lower() or parts.scheme != scheme:
            return "cross-origin request refused (Origin does not name this server)"
    # Checked with or without an Origin: "same-site" is another port or subdomain of this host (a
    # dev server on :3000 is not this page), and a browser never sends it for this page's own requests.
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return "cross-site request refused"
    # JSON, or a picture's bytes: none of these types can come from a form or a "simple" cross-site
    # request, so a page elsewhere would need a CORS preflight, which is never granted for writes.
    kind = headers.get("content-type", "application/json").lower()
    if not kind.startswith(("application/json", "image/", "application/octet-stream")):
        return "send JSON (Content-Type: application/json)"
    return None


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            _CORP]})
    await send({"type": "http.response.body", "body": body})
