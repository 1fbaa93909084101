"""Shared pieces of the label app's tests: a fresh database per test on SQLite and, where a
server runs, on PostgreSQL (`RLHFKIT_TEST_PG_URL`, set by .ci/run), and a seeded app. The
fixtures built on them (`db_url`, `env`, `db_env`, `tiny_policy`) are in conftest.py."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "fastapi", reason="the label extra is not installed (pip install -e '.[label]')"
)

from fastapi.testclient import TestClient  # noqa: E402

from rlhfkit.label import service  # noqa: E402
from rlhfkit.label.app import create_app  # noqa: E402
from rlhfkit.label.db import Database  # noqa: E402

PG_ENV = "RLHFKIT_TEST_PG_URL"
BACKENDS = ["sqlite", "postgresql"]
PASSWORDS = {
    "admin": "admin-pass-1",
    "ann1": "ann1-pass-1",
    "ann2": "ann2-pass-2",
    "ann3": "ann3-pass-3",
}


def pg_admin_url() -> str:
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL server (.ci/run starts one and sets it)")
    return admin_url


@contextmanager
def fresh_url(backend: str, tmp_path: Path, template: str | None = None):
    """A URL of a new database, empty or a copy of `template` (a SQLite file path, or a
    PostgreSQL database name); a PostgreSQL database is dropped afterwards."""
    if backend == "sqlite":
        path = tmp_path / "label.db"
        if template is not None:
            shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    import psycopg

    admin_url = pg_admin_url()
    name = f"rlhfkit_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
RANKED = [
    {
        "id": "r0",
        "prompt": "List three fruits.",
        "responses": ["apple, pear, plum", "apple", "no", "fruits"],
    }
]


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


def drop_templates(made: dict[str, tuple[str, dict[str, str], dict[str, int]]]) -> None:
    """Drop the PostgreSQL template databases `seeded_env` made (a SQLite one is a temp file)."""
    for backend, (template, _, _) in made.items():
        if backend == "postgresql":
            import psycopg

            with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')


def seeded_env(backend: str, tmp_path_factory, templates) -> Iterator[Env]:
    """A copy of the seeded database of `backend` (seeded once, kept in `templates`) and its
    app; the fixtures `env` and `db_env` of conftest.py."""
    if backend not in templates:
        folder = tmp_path_factory.mktemp("template")
        with fresh_url(backend, folder) as url:
            seeded = make_env(url)
            seeded.database.close()
            if backend == "sqlite":
                template = str(folder / "label.db")
            else:
                import psycopg

                template = f"rlhfkit_tpl_{secrets.token_hex(6)}"
                with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{template}" TEMPLATE "{url.rsplit("/", 1)[1]}"')
        templates[backend] = (template, seeded.tokens, seeded.projects)
    template, tokens, projects = templates[backend]
    with fresh_url(backend, tmp_path_factory.mktemp("db"), template) as url:
        database = Database(url)
        yield Env(database, create_app(database), dict(tokens), dict(projects))
        database.close()


def wait_for(fn, timeout: float = 60.0, every: float = 0.1):
    """Poll `fn` until it returns something truthy; fail after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s")


@contextmanager
def live_server(database: Database):
    """The app on a free loopback port, served by uvicorn in a thread; yields its base URL."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(database), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
