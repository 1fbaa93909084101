"""Who is asking, as FastAPI dependencies shared by the pages and the JSON API.

- `DB`: a database session from the app's `Database` (`app.state.database`), closed after the
  request.
- `Who`: the user behind the request, from `Authorization: Bearer <token>` (scripts) or the
  signed session cookie (browsers), or None; it records which (`request.state.via`), the
  session's CSRF token (`request.state.csrf`) and the user (`request.state.user`, shown by the
  page header).
- `Reader`: a logged-in user (else 401). `Admin`: a logged-in admin (else 401 / 403).
- `Writer` (JSON API) and `FormWriter` (page forms): a logged-in user whose request carries the
  CSRF token when it came with the cookie, in the header `X-CSRF-Token` or the form field
  `csrf_token` (else 403, see `rlhfkit.label.security`). An admin's write takes `Admin` and a
  writer both; FastAPI resolves the shared `Who` once per request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Form, Request
from sqlalchemy.orm import Session

from rlhfkit.label import service
from rlhfkit.label.db import User
from rlhfkit.label.security import SESSION_COOKIE, same_token
from rlhfkit.label.service import LabelError


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.database.session() as db:
        yield db


DB = Annotated[Session, Depends(get_db)]


def identify(request: Request, db: DB) -> User | None:
    """The user behind the request (token or cookie), remembering which it was."""
    request.state.csrf = None
    request.state.via = None
    request.state.user = None
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        request.state.via = "token"
        user = service.user_by_token(db, auth[7:].strip())
    else:
        session = request.app.state.signer.read_session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None
        request.state.via, request.state.csrf = "cookie", session["csrf"]
        user = db.get(User, session["uid"])
    request.state.user = user
    return user


Who = Annotated[User | None, Depends(identify)]


def reader(user: Who) -> User:
    if user is None:
        raise LabelError(401, "log in, or send Authorization: Bearer <token>")
    return user


Reader = Annotated[User, Depends(reader)]


def admin(user: Reader) -> User:
    if user.role != "admin":
        raise LabelError(403, "admins only")
    return user


Admin = Annotated[User, Depends(admin)]


def writer(request: Request, user: Reader) -> User:
    if request.state.via == "cookie" and not same_token(
        request.state.csrf, request.headers.get("x-csrf-token")
    ):
        raise LabelError(403, "missing or wrong CSRF token (header X-CSRF-Token)")
    return user


Writer = Annotated[User, Depends(writer)]


def form_writer(request: Request, user: Reader, csrf_token: Annotated[str, Form()] = "") -> User:
    if request.state.via == "cookie" and not same_token(request.state.csrf, csrf_token):
        raise LabelError(403, "missing or wrong CSRF token; reload the page and try again")
    return user


FormWriter = Annotated[User, Depends(form_writer)]
