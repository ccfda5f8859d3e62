"""Authentication (a bearer token or basic auth, from the environment), CSRF tokens and security headers.

Credentials never come from the command line, where every local user can read them in `ps`:
ARQ_DASHBOARD_TOKEN for `Authorization: Bearer …`, ARQ_DASHBOARD_USERNAME and ARQ_DASHBOARD_PASSWORD for basic
auth (what a browser asks for). Either or both may be set.

CSRF: a random token in a SameSite=Strict, HttpOnly cookie, repeated in every form; a POST is accepted only when
the two match and its Origin (when the browser sends one) is this host. The Content-Security-Policy allows no
inline script and nothing from elsewhere, a second wall behind the escaping of everything shown.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = 'arq_dashboard_csrf'
CSRF_FIELD = 'csrf'
SECURITY_HEADERS = {
    'content-security-policy': "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'same-origin',
    'x-frame-options': 'DENY',
}


@dataclass(frozen=True)
class Auth:
    token: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Auth | None:
        env = os.environ if env is None else env
        token = env.get('ARQ_DASHBOARD_TOKEN') or None
        username, password = env.get('ARQ_DASHBOARD_USERNAME') or None, env.get('ARQ_DASHBOARD_PASSWORD') or None
        if (username is None) != (password is None):
            raise ValueError('set both ARQ_DASHBOARD_USERNAME and ARQ_DASHBOARD_PASSWORD, or neither')
        if token is None and username is None:
            return None
        return cls(token, username, password)

    def allows(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or '').partition(' ')
        value = value.strip()
        if scheme.lower() == 'bearer' and self.token is not None:
            return hmac.compare_digest(value.encode(), self.token.encode())
        if scheme.lower() == 'basic' and self.username is not None and self.password is not None:
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(':')
            except (binascii.Error, UnicodeDecodeError):
                return False
            ok_user = hmac.compare_digest(user.encode(), self.username.encode())
            return ok_user & hmac.compare_digest(password.encode(), self.password.encode())
        return False

    def challenge(self) -> str:
        return 'Basic realm="arq dashboard", charset="UTF-8"' if self.username else 'Bearer realm="arq dashboard"'


class Guard:
    """ASGI middleware: refuse unauthenticated requests (when auth is on) and add the security headers."""

    def __init__(self, app: ASGIApp, auth: Auth | None) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        if self.auth is not None and not self.auth.allows(Headers(scope=scope).get('authorization')):
            response = PlainTextResponse('authentication required', 401, {'www-authenticate': self.auth.challenge()})
            await response(scope, receive, _with_headers(send))
            return
        await self.app(scope, receive, _with_headers(send))


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message['type'] == 'http.response.start':
            headers = list(message.get('headers', []))
            present = {k.lower() for k, _ in headers}
            headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
            message = {**message, 'headers': headers}
        await send(message)

    return wrapped


def csrf_token(request: Request) -> str:
    """This browser's token (a new one when it has none; `remember_csrf` then sets the cookie)."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token or len(token) < 32:
        token = request.state.new_csrf = secrets.token_urlsafe(32)
    return token


def remember_csrf(request: Request, response: Response) -> Response:
    token = getattr(request.state, 'new_csrf', None)
    if token:
        path = request.scope.get('root_path') or '/'
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite='strict', path=path)
    return response


def csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not submitted or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        return False
    origin = request.headers.get('origin')
    if origin is None or origin == 'null':
        return origin is None
    return urlsplit(origin).netloc == request.headers.get('host')
