"""The label app's JSON API from Python: what `rlhfkit sim collect --server` and the load
benchmark use. Authenticates with an API token (`Authorization: Bearer`), so no CSRF token is
needed. Errors from the server are raised as `LabelClientError` with its status and message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx


class LabelClientError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class LabelClient:
    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LabelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise LabelClientError(response.status_code, str(detail))
        return response.json()

    def me(self) -> dict[str, Any]:
        return self.call("GET", "/api/me")

    def users(self) -> list[dict[str, Any]]:
        return self.call("GET", "/api/users")

    def create_user(self, name: str, password: str, role: str = "annotator") -> dict[str, Any]:
        return self.call(
            "POST", "/api/users", json={"name": name, "password": password, "role": role}
        )

    def user_token(self, name: str) -> str:
        return self.call("POST", f"/api/users/{name}/token")["api_token"]

    def create_project(self, **fields: Any) -> dict[str, Any]:
        return self.call("POST", "/api/projects", json=fields)

    def add_items(self, project: int, items: Sequence[dict[str, Any]]) -> list[int]:
        return self.call("POST", f"/api/projects/{project}/items", json={"items": list(items)})[
            "items"
        ]

    def next_task(self, project: int) -> dict[str, Any] | None:
        return self.call("GET", f"/api/projects/{project}/next")["task"]

    def judge(self, task: int, answer: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", f"/api/tasks/{task}/judgment", json=answer)

    def stats(self, project: int) -> dict[str, Any]:
        return self.call("GET", f"/api/projects/{project}/stats")

    def export(self, project: int, format: str = "pairs", ties: str = "drop") -> dict[str, Any]:
        return self.call(
            "GET", f"/api/projects/{project}/export", params={"format": format, "ties": ties}
        )


def label_all(
    url: str,
    tokens: dict[str, str],
    project: int,
    decide: Callable[[str, dict[str, Any]], dict[str, Any]],
) -> int:
    """Every annotator in `tokens` (name → API token) answers its open tasks in `project`
    concurrently, one thread each, with `decide(name, task) → answer`; returns the number of
    judgments stored."""

    def work(name: str) -> int:
        done = 0
        with LabelClient(url, tokens[name]) as client:
            while (task := client.next_task(project)) is not None:
                client.judge(task["task"], decide(name, task))
                done += 1
        return done

    with ThreadPoolExecutor(max_workers=max(1, len(tokens))) as pool:
        return sum(pool.map(work, list(tokens)))
