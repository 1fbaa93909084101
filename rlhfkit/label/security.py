"""Passwords, API tokens, session cookies and CSRF tokens.

- Passwords: Argon2id (argon2-cffi's defaults, RFC 9106's second recommended option), the
  password-hashing competition winner; the hash string carries its own salt and parameters, so
  they can be raised later without breaking old accounts (`needs_rehash` is checked at login).
- API tokens: 32 random bytes shown once; only their SHA-256 is stored. A token is already
  high-entropy, so a fast hash is enough, and lookup by hash is one indexed query per request.
- Session cookie: `{"uid", "csrf"}` signed with itsdangerous (HMAC-SHA1 over a key kept in the
  database, so sessions survive a restart), HttpOnly and SameSite=Lax, expiring after
  `SESSION_SECONDS`.
- CSRF: the synchronizer-token pattern (OWASP CSRF cheat sheet). Every cookie-authenticated
  POST must carry the session's `csrf` value in a form field `csrf_token` or the header
  `X-CSRF-Token`; a cross-site page can make the browser send the cookie but cannot read the
  token. Before login the same token lives in its own signed cookie (login CSRF). Requests
  authenticated by `Authorization: Bearer <token>` carry no ambient credential and need none.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "rlhfkit_session"
CSRF_COOKIE = "rlhfkit_csrf"
SESSION_SECONDS = 12 * 3600

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Signer:
    """Signs and reads the session and pre-login CSRF cookies with one server key."""

    def __init__(self, key: str) -> None:
        self._session = URLSafeTimedSerializer(key, salt="rlhfkit-label-session")
        self._csrf = URLSafeTimedSerializer(key, salt="rlhfkit-label-csrf")

    def session(self, uid: int) -> tuple[str, str]:
        """(cookie value, csrf token) for a new session of user `uid`."""
        csrf = secrets.token_urlsafe(24)
        return self._session.dumps({"uid": uid, "csrf": csrf}), csrf

    def read_session(self, cookie: str | None) -> dict[str, Any] | None:
        if not cookie:
            return None
        try:
            data = self._session.loads(cookie, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        return data if isinstance(data, dict) and "uid" in data and "csrf" in data else None

    def anonymous_csrf(self) -> tuple[str, str]:
        """(cookie value, csrf token) for a visitor who has not logged in yet."""
        csrf = secrets.token_urlsafe(24)
        return self._csrf.dumps(csrf), csrf

    def read_anonymous_csrf(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            value = self._csrf.loads(cookie, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(expected, given)
