"""Shared pieces of the label app's tests: a fresh database per test on SQLite and, where a
server runs, on PostgreSQL (`RLHFKIT_TEST_PG_URL`, set by .ci/run), and a seeded app."""

from __future__ import annotations

import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the label extra is not installed (pip install -e '.[label]')")

from fastapi.testclient import TestClient  # noqa: E402

from rlhfkit.label import service  # noqa: E402
from rlhfkit.label.app import create_app  # noqa: E402
from rlhfkit.label.db import Database  # noqa: E402

PG_ENV = "RLHFKIT_TEST_PG_URL"
BACKENDS = ["sqlite", "postgresql"]
PASSWORDS = {"admin": "admin-pass-1", "ann1": "ann1-pass-1", "ann2": "ann2-pass-2", "ann3": "ann3-pass-3"}


@contextmanager
def fresh_url(backend: str, tmp_path: Path):
    """A URL of an empty database: a new SQLite file, or a new PostgreSQL database that is
    dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'label.db'}"
        return
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL server (.ci/run starts one and sets it)")
    import psycopg

    name = f"rlhfkit_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    with fresh_url(request.param, tmp_path) as url:
        yield url


@dataclass
class Env:
    """A seeded app: accounts admin, ann1, ann2 (annotators), their API tokens, and projects."""

    database: Database
    app: Any
    tokens: dict[str, str] = field(default_factory=dict)
    projects: dict[str, int] = field(default_factory=dict)

    def client(self, name: str | None = None, via: str = "token") -> TestClient:
        """A client logged in as `name` by API token, or by cookie (`via="cookie"`, the CSRF
        token in `client.csrf`), or anonymous."""
        client = TestClient(self.app)
        client.csrf = None
        if name and via == "token":
            client.headers["Authorization"] = f"Bearer {self.tokens[name]}"
        elif name:
            r = client.post("/api/session", json={"name": name, "password": PASSWORDS[name]})
            assert r.status_code == 200, r.text
            client.csrf = r.json()["csrf_token"]
        return client

    def page_login(self, name: str) -> TestClient:
        """A browser-like client logged in through the login form."""
        client = TestClient(self.app)
        r = client.get("/login")
        r = client.post(
            "/login",
            data={"name": name, "password": PASSWORDS[name], "csrf_token": form_csrf(r.text)},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        return client


def form_csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


PAIRS = [
    {"id": "p0", "prompt": "What is 2 plus 2?", "chosen": "4", "rejected": "5", "gold": 0},
    {"id": "p1", "prompt": "Name a colour.", "responses": ["Blue.", "Seven."]},
    {
        "id": "p2",
        "prompt": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Spell cat backwards."},
        ],
        "responses": ["tac", "I cannot help with that."],
    },
]
RANKED = [{"id": "r0", "prompt": "List three fruits.", "responses": ["apple, pear, plum", "apple", "no", "fruits"]}]


def make_env(url: str, annotators: tuple[str, ...] = ("ann1", "ann2")) -> Env:
    database = Database(url)
    database.upgrade()
    env = Env(database, None)
    with database.session() as db:
        for name in ("admin", *annotators):
            _, env.tokens[name] = service.create_user(
                db, name, PASSWORDS[name], "admin" if name == "admin" else "annotator"
            )
        pw = service.create_project(db, "pairs", "pairwise", overlap=2)
        rk = service.create_project(db, "rank", "ranking", overlap=1)
        service.import_items(db, pw, [service.parse_item(r, "pairwise", "t") for r in PAIRS])
        service.import_items(db, rk, [service.parse_item(r, "ranking", "t") for r in RANKED])
        env.projects = {"pairs": pw.id, "rank": rk.id}
    env.app = create_app(database)
    return env


@pytest.fixture
def env(db_url):
    e = make_env(db_url)
    yield e
    e.database.close()
