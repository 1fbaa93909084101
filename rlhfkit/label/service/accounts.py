"""Accounts: users, passwords, API tokens, and the cookie-signing key."""

from __future__ import annotations

import secrets
import string
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.label.db import Setting, User
from rlhfkit.label.security import (
    check_password,
    hash_password,
    needs_rehash,
    new_token,
    token_hash,
)
from rlhfkit.label.service.common import ROLES, LabelError, storable


def secret_key(db: Session) -> str:
    """The cookie-signing key, made once per database so sessions survive restarts."""
    row = db.get(Setting, "secret_key")
    if row is None:
        db.add(Setting(key="secret_key", value=secrets.token_urlsafe(48)))
        try:
            db.commit()
        except IntegrityError:  # another process made it first
            db.rollback()
        row = db.get(Setting, "secret_key")
    return row.value


def _check_name(name: Any, what: str) -> str:
    allowed = set(string.ascii_letters + string.digits + "_-.@")
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not set(name) <= allowed:
        raise LabelError(422, f"{what}: 1–64 letters, digits or _ - . @")
    return name


def create_user(db: Session, name: str, password: str, role: str = "annotator") -> tuple[User, str]:
    """A new account and its API token (shown once; only its hash is stored)."""
    _check_name(name, "name")
    if role not in ROLES:
        raise LabelError(422, f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(password, str) or len(password) < 8:
        raise LabelError(422, "password: at least 8 characters")
    storable(password, "password")
    if db.scalar(select(User).where(User.name == name)) is not None:
        raise LabelError(409, f"user {name!r} exists")
    token = new_token()
    user = User(name=name, role=role, password_hash=hash_password(password))
    user.token_hash = token_hash(token)
    db.add(user)
    db.commit()
    return user, token


def rotate_token(db: Session, user: User) -> str:
    token = new_token()
    user.token_hash = token_hash(token)
    db.commit()
    return token


def login(db: Session, name: str, password: str) -> User:
    try:  # a name or password no account can have is simply wrong
        user = db.scalar(select(User).where(User.name == storable(name, "name")))
        storable(password, "password")
    except LabelError:
        user = None
    if user is None or not check_password(user.password_hash, password):
        raise LabelError(401, "wrong name or password")
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        db.commit()
    return user


def user_by_token(db: Session, token: str) -> User | None:
    return db.scalar(select(User).where(User.token_hash == token_hash(token)))


def list_users(db: Session) -> list[User]:
    return list(db.scalars(select(User).order_by(User.id)))


def user_by_name(db: Session, name: str) -> User:
    user = db.scalar(select(User).where(User.name == storable(name, "name")))
    if user is None:
        raise LabelError(404, f"no user {name!r}")
    return user
