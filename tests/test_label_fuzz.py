"""The label API never answers 5xx: a hypothesis property over path and query ids and JSON
bodies, on SQLite and on PostgreSQL (`RLHFKIT_TEST_PG_URL`). Ids run past both databases'
integers; text holds NUL characters and lone surrogates; numbers include NaN and infinity
(Python's JSON parser, which the server uses, accepts them); bodies are near-valid so that they
reach the service's checks and the database, not only FastAPI's validation."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

IDS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 5, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -1, -(2**63) - 1]),
    st.integers(),
)
SPECIAL = ["", " ", "A", "B", "C", "tie", "\x00", "\ud800", "a\udfffb", "admin", "ann1", "pairs"]
TEXT = st.one_of(
    st.sampled_from(SPECIAL), st.text(st.characters(exclude_categories=()), max_size=12)
)
SCALARS = st.one_of(
    st.none(), st.booleans(), IDS, st.floats(allow_nan=True, allow_infinity=True), TEXT
)
SMALL = st.one_of(st.integers(-1, 8), IDS)  # mostly ids that exist
WORD = st.one_of(st.text("abcxyz", min_size=1, max_size=10), TEXT)  # mostly a valid name
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def _maybe(value):
    """Mostly `value` (8 in 11), else another JSON value or the key left out (None)."""
    return st.integers(0, 10).flatmap(
        lambda k: value if k < 8 else JSON if k == 8 else st.just(None)
    )


def _body(fields: dict) -> st.SearchStrategy:
    """A JSON object whose keys are each present (with a likely or any value) or absent."""
    return st.fixed_dictionaries({k: _maybe(v) for k, v in fields.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not None}
    )


MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system"]), "content": TEXT}
    ),
    max_size=3,
)
ITEM = _body({
    "prompt": st.one_of(TEXT, MESSAGES),
    "responses": st.lists(TEXT, max_size=4),
    "chosen": TEXT,
    "rejected": TEXT,
    "completion": TEXT,
    "gold": st.one_of(SMALL, st.lists(SMALL, max_size=3)),
    "assign_to": st.lists(st.sampled_from(["ann1", "ann2", "nobody"]) | TEXT, max_size=2),
    "meta": st.dictionaries(TEXT, JSON, max_size=3),
    "id": JSON,
})  # fmt: skip
JUDGMENT = _body({
    "choice": st.sampled_from(["A", "B", "tie"]) | TEXT,
    "strength": st.sampled_from([1, 2, 3]) | SMALL,
    "ranking": st.permutations(["A", "B", "C", "D"]) | st.lists(TEXT, max_size=5),
    "flags": st.lists(st.sampled_from(["unsafe", "pii", "wrong_language", "rude"]), max_size=3),
    "note": TEXT,
    "scores": st.dictionaries(st.sampled_from(["overall", "helpful", "x"]) | TEXT,
                              st.sampled_from(["up", "down", 1, 3, 7, 8]) | SMALL, max_size=3),
})  # fmt: skip
PROJECT = _body({
    "name": WORD,
    "kind": st.sampled_from(["pairwise", "ranking", "chat", "rating", "poll"]),
    "mode": st.sampled_from(["helpful", "red_team"]),
    "overlap": SMALL,
    "guidelines": TEXT,
    "policy_a": TEXT,
    "max_new_tokens": SMALL,
    "temperature": st.one_of(st.floats(0.1, 2), st.floats(allow_nan=True)),
    "scale": st.sampled_from(["thumbs", "1-5", "1-7", "1-9"]),
    "aspects": st.lists(st.sampled_from(["helpful:1-7", "honest", "a:b"]) | TEXT, max_size=3),
})  # fmt: skip
USER = _body(
    {
        "name": WORD,
        "password": st.text(min_size=8, max_size=12) | TEXT,
        "role": st.sampled_from(["annotator", "admin"]),
    }
)

# (method, path with {} for an id, body strategy or None, query strategy or None)
ENDPOINTS = [
    ("GET", "/api/tasks/{}", None, None),
    ("POST", "/api/tasks/{}/judgment", JUDGMENT, None),
    (
        "GET",
        "/api/tasks",
        None,
        _body({"project": SMALL, "status": st.sampled_from(["open", "done"]) | TEXT}),
    ),
    ("GET", "/api/projects/{}", None, None),
    ("GET", "/api/projects/{}/next", None, None),
    ("GET", "/api/projects/{}/stats", None, None),
    (
        "GET",
        "/api/projects/{}/export",
        None,
        _body(
            {
                "format": st.sampled_from(["pairs", "ranked", "hh", "ratings"]) | TEXT,
                "ties": st.sampled_from(["drop", "keep"]) | TEXT,
                "threshold": SMALL,
                "aspect": st.sampled_from(["overall", "helpful"]) | TEXT,
            }
        ),
    ),
    ("POST", "/api/projects/{}/items", _body({"items": st.lists(ITEM, max_size=3)}), None),
    ("POST", "/api/projects/{}/chats", None, None),
    ("GET", "/api/chats/{}", None, None),
    ("POST", "/api/chats/{}/messages", _body({"text": TEXT}), None),
    ("POST", "/api/projects", PROJECT, None),
    ("POST", "/api/users", USER, None),
    ("POST", "/api/users/{}/token", None, None),
    ("POST", "/api/session", _body({"name": TEXT, "password": TEXT}), None),
]
REQUESTS = st.tuples(
    st.sampled_from(ENDPOINTS),
    st.one_of(SMALL.map(str), TEXT),
    st.data(),
    st.sampled_from(["admin", "ann1", "ann1"]),
)


def _quote(value: object) -> str:
    """Percent-encoded bytes of `value`; a lone surrogate becomes bytes that are not UTF-8."""
    return quote(str(value).encode("utf-8", "surrogatepass"), safe="")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=REQUESTS)
def test_the_api_never_answers_5xx(db_env, request):
    (method, path, body, query), segment, data, who = request
    client = db_env.client(who)
    if path == "/api/users/{}/token" and segment in db_env.tokens:
        segment = "someone"  # a new token for the clients' own accounts would log them out
    url = path.format(_quote(segment))
    if query is not None:
        url += "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in data.draw(query).items())
    kwargs = {}
    if body is not None:
        # json.dumps escapes lone surrogates and writes NaN / Infinity, as a client could
        kwargs["content"] = json.dumps(data.draw(body)).encode()
        kwargs["headers"] = {"content-type": "application/json"}
    r = client.request(method, url, **kwargs)
    assert r.status_code < 500, (method, url, kwargs, r.status_code, r.text)
