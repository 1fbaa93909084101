"""The label app through FastAPI's test client, on SQLite and PostgreSQL: authentication and
authorisation of every endpoint, CSRF, escaping, input errors, exactly-once answers, overlap,
agreement and export into files the trainers read."""

from __future__ import annotations

import json
import re

import pytest
from label_helpers import PAIRS, form_csrf, make_env

from rlhfkit.data import read_preferences, read_ranked
from rlhfkit.label.db import Assignment, Judgment

LOGIN_ROUTES = {("POST", "/login"), ("POST", "/api/session")}


def _write_routes(app):
    for route in app.routes:
        for method in getattr(route, "methods", set()) or set():
            if (
                method in ("POST", "PUT", "PATCH", "DELETE")
                and (method, route.path) not in LOGIN_ROUTES
            ):
                yield method, re.sub(r"\{[^}]+\}", "1", route.path)


def _open_task(client, project):
    task = client.get(f"/api/projects/{project}/next").json()["task"]
    assert task is not None
    return task


def test_every_write_needs_authentication(db_env):
    anonymous = db_env.client()
    routes = list(_write_routes(db_env.app))
    assert len(routes) >= 15
    for method, path in routes:
        r = anonymous.request(method, path, json={}, follow_redirects=False)
        if path.startswith("/api"):
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert "log in" in r.json()["detail"]
        else:  # pages send the visitor to the login form
            assert r.status_code in (303, 422), (method, path, r.status_code)
            assert r.status_code != 303 or r.headers["location"].startswith("/login")
    with db_env.database.session() as db:
        assert db.query(Judgment).count() == 0


def test_a_wrong_token_is_no_token(env):
    client = env.client()
    client.headers["Authorization"] = "Bearer not-a-token"
    assert client.get("/api/me").status_code == 401
    assert client.post("/api/tasks/1/judgment", json={"choice": "tie"}).status_code == 401


def test_cookie_writes_need_the_csrf_token(env):
    client = env.client("ann1", via="cookie")
    task = _open_task(client, env.projects["pairs"])
    answer = {"choice": "A", "strength": 2}
    url = f"/api/tasks/{task['task']}/judgment"
    r = client.post(url, json=answer)
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = client.post(url, json=answer, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    admin = env.client("admin", via="cookie")
    for method, path in _write_routes(env.app):  # every write, the admin's too
        if path.startswith("/api"):
            r = admin.request(method, path, json={})
            assert r.status_code == 403, (method, path, r.status_code)
    r = client.post(url, json=answer, headers={"X-CSRF-Token": client.csrf})
    assert r.status_code == 201, r.text


def test_page_forms_need_the_csrf_token(env):
    browser = env.page_login("ann1")
    page = browser.get(f"/projects/{env.projects['pairs']}")
    aid = re.search(r'action="/tasks/(\d+)"', page.text).group(1)
    r = browser.post(f"/tasks/{aid}", data={"verdict": "A3"}, follow_redirects=False)
    assert r.status_code == 403
    r = browser.post(
        f"/tasks/{aid}", data={"verdict": "A3", "csrf_token": "x" * 32}, follow_redirects=False
    )
    assert r.status_code == 403
    r = browser.post("/logout", data={}, follow_redirects=False)
    assert r.status_code == 403
    r = browser.post(
        f"/tasks/{aid}",
        data={"verdict": "A3", "csrf_token": form_csrf(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    # the login form itself: a token from the visitor's own cookie
    fresh = env.client()
    fresh.get("/login")
    r = fresh.post(
        "/login", data={"name": "ann1", "password": "ann1-pass-1"}, follow_redirects=False
    )
    assert r.status_code == 403


def test_login(env):
    client = env.client()
    r = client.post("/api/session", json={"name": "ann1", "password": "wrong-password"})
    assert r.status_code == 401 and r.json()["detail"] == "wrong name or password"
    # a cross-site form (no JSON content type) cannot log a browser in through the API
    r = client.post("/api/session", data={"name": "ann1", "password": "ann1-pass-1"})
    assert r.status_code == 422 and "session" not in "".join(client.cookies.keys())
    page = client.get("/login?next=//evil.example/x")
    r = client.post(
        "/login",
        data={"name": "ann1", "password": "ann1-pass-1", "csrf_token": form_csrf(page.text),
              "next": "//evil.example/x"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == "/"  # no open redirect
    assert client.get("/api/me").json()["name"] == "ann1"
    r = client.post(
        "/logout", data={"csrf_token": form_csrf(client.get("/").text)}, follow_redirects=False
    )
    assert r.status_code == 303
    assert client.get("/api/me").status_code == 401
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")


def test_an_annotator_sees_only_their_own_tasks(db_env):
    one, two = db_env.client("ann1"), db_env.client("ann2")
    task = _open_task(one, db_env.projects["rank"])  # overlap 1: the ranking item went to ann1 only
    assert two.get(f"/api/projects/{db_env.projects['rank']}/next").json()["task"] is None
    r = two.get(f"/api/tasks/{task['task']}")
    assert r.status_code == 404
    r = two.post(f"/api/tasks/{task['task']}/judgment", json={"ranking": ["A", "B", "C", "D"]})
    assert r.status_code == 404
    mine = {t["task"] for t in two.get("/api/tasks").json()}
    assert task["task"] not in mine
    browser = db_env.page_login("ann2")
    assert browser.get(f"/tasks/{task['task']}").status_code == 404
    with db_env.database.session() as db:
        assert db.get(Assignment, task["task"]).status == "open"


def test_admin_only_endpoints(env):
    ann = env.client("ann1")
    pid = env.projects["pairs"]
    for method, path, body in [
        ("GET", "/api/users", None),
        ("POST", "/api/users", {"name": "x1", "password": "12345678"}),
        ("POST", "/api/users/ann2/token", None),
        ("POST", "/api/projects", {"name": "x", "kind": "pairwise"}),
        ("POST", f"/api/projects/{pid}/items", {"items": PAIRS}),
        ("GET", f"/api/projects/{pid}/stats", None),
        ("GET", f"/api/projects/{pid}/export", None),
    ]:
        r = ann.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.text)
    assert env.page_login("ann1").get("/admin").status_code == 403


XSS = '<script>alert("xss")</script><img src=x onerror=alert(1)>'


def test_user_text_is_escaped_everywhere(env):
    admin = env.client("admin")
    project = admin.post("/api/projects", json={"name": f"p{XSS}", "kind": "pairwise"}).json()
    admin.post(
        f"/api/projects/{project['id']}/items",
        json={"items": [{"prompt": f"prompt {XSS}", "responses": [f"reply {XSS}", "plain"]}]},
    )
    ann = env.client("ann1")
    task = _open_task(ann, project["id"])
    browser = env.page_login("ann1")
    page = browser.get(f"/tasks/{task['task']}")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#34;xss&#34;)&lt;/script&gt;" in page.text
    assert "prompt &lt;script&gt;" in page.text and "reply &lt;script&gt;" in page.text
    assert page.text.count("&lt;img src=x onerror=alert(1)&gt;") == 4  # title, h1, prompt, reply
    assert "script-src" not in page.headers["content-security-policy"]  # only 'self' runs
    assert "default-src 'self'" in page.headers["content-security-policy"]
    r = ann.post(
        f"/api/tasks/{task['task']}/judgment", json={"choice": "tie", "note": f"note {XSS}"}
    )
    assert r.status_code == 201
    stats_page = env.page_login("admin").get(f"/admin/projects/{project['id']}")
    assert "<script>alert" not in stats_page.text and "<img src=x" not in stats_page.text
    assert "note &lt;script&gt;" in stats_page.text
    admin_page = env.page_login("admin").get("/admin")
    assert "<script>alert" not in admin_page.text and "p&lt;script&gt;" in admin_page.text
    # the JSON API returns the text as data
    assert (
        admin.get(f"/api/projects/{project['id']}/stats").json()["notes"][0]["note"]
        == f"note {XSS}"
    )


def test_pages_load_no_outside_assets(env):
    browser = env.page_login("admin")
    for path in ["/", "/admin", f"/admin/projects/{env.projects['pairs']}", "/login"]:
        html = browser.get(path).text
        assert not re.search(r'(src|href)="(https?:)?//', html), path
    for asset in ["/static/style.css", "/static/app.js"]:
        assert browser.get(asset).status_code == 200
    assert browser.get("/openapi.json").json()["info"]["title"] == "rlhfkit label"
    assert browser.get("/docs").status_code == 200


BAD_INPUTS = [
        ("/api/tasks/{task}/judgment", {"choice": "C", "strength": 1}),
        ("/api/tasks/{task}/judgment", {"choice": "A"}),
        ("/api/tasks/{task}/judgment", {"choice": "A", "strength": 7}),
        ("/api/tasks/{task}/judgment", {"choice": "A", "strength": True}),
        ("/api/tasks/{task}/judgment", {"choice": "A", "strength": "2x"}),
        ("/api/tasks/{task}/judgment", {"choice": "A", "strength": 1, "flags": ["rude"]}),
        ("/api/tasks/{task}/judgment", {"choice": "A", "strength": 1, "flags": "pii"}),
        ("/api/tasks/{task}/judgment", {"choice": "A", "strength": 1, "note": 5}),
        ("/api/tasks/{task}/judgment", {"ranking": ["A", "B"]}),
        ("/api/tasks/{task}/judgment", {}),
        ("/api/tasks/{task}/judgment", []),
        ("/api/tasks/{task}/judgment", "tie"),
        ("/api/tasks/{task}/judgment", None),
        ("/api/users", {"name": "new"}),
        ("/api/users", {"name": "bad name!", "password": "12345678"}),
        ("/api/users", {"name": "short", "password": "1"}),
        ("/api/users", {"name": "x", "password": "12345678", "role": "root"}),
        ("/api/projects", {"name": "x"}),
        ("/api/projects", {"name": "x", "kind": "poll"}),
        ("/api/projects", {"name": "x", "kind": "pairwise", "overlap": 0}),
        ("/api/projects", {"name": "x", "kind": "chat"}),
        ("/api/projects", {"name": "pairs", "kind": "pairwise"}),
        ("/api/projects/{pairs}/items", {"items": [{"prompt": "p"}]}),
        ("/api/projects/{pairs}/items", {"items": [{"prompt": "p", "responses": ["a"]}]}),
        ("/api/projects/{pairs}/items", {"items": [{"prompt": "", "responses": ["a", "b"]}]}),
        ("/api/projects/{pairs}/items", {"items": [{"prompt": 3, "responses": ["a", "b"]}]}),
        ("/api/projects/{pairs}/items", {"items": [{"prompt": [{"role": "bot"}], "responses": ["a", "b"]}]}),
        ("/api/projects/{pairs}/items", {"items": [{"prompt": "p", "responses": ["a", "b"], "gold": 2}]}),
        ("/api/projects/{pairs}/items", {"items": [{"prompt": "p", "responses": ["a", "b"], "assign_to": ["nobody"]}]}),
        ("/api/projects/{pairs}/items", {"items": "x"}),
        ("/api/projects/{pairs}/items", {}),
        ("/api/projects/999/items", {"items": []}),
        ("/api/projects/{pairs}/chats", {}),
        ("/api/chats/999/messages", {"text": "hi"}),
        ("/api/session", {"name": "admin"}),
]  # fmt: skip


def test_bad_input_is_a_4xx_with_a_message(env):
    admin, ann = env.client("admin"), env.client("ann1")
    task = _open_task(ann, env.projects["pairs"])["task"]
    for path, body in BAD_INPUTS:
        url = path.format(task=task, pairs=env.projects["pairs"])
        r = (ann if "task" in path else admin).post(url, json=body)
        assert 400 <= r.status_code < 500, (url, body, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and len(detail) > 5, (url, body, detail)
    with env.database.session() as db:
        assert db.query(Judgment).count() == 0
    assert admin.get("/api/health").json()["ok"]


def test_malformed_json_is_a_422_naming_the_problem(env):
    client = env.client("admin")
    for path in ["/api/projects", "/api/users", f"/api/projects/{env.projects['pairs']}/items"]:
        r = client.post(
            path, content=b'{"name": "x",', headers={"content-type": "application/json"}
        )
        assert r.status_code == 422, r.text
        assert "JSON" in r.json()["detail"]
        r = client.post(path, content=b"\xff\xfe", headers={"content-type": "application/json"})
        assert r.status_code == 422
    assert client.get("/api/projects/not-a-number").status_code == 422
    assert client.get("/api/tasks?status=closed").status_code == 422
    assert client.get(f"/api/projects/{env.projects['pairs']}/export?format=csv").status_code == 422


def test_an_answer_is_stored_exactly_once(db_env):
    client = db_env.client("ann1")
    task = _open_task(client, db_env.projects["pairs"])
    url = f"/api/tasks/{task['task']}/judgment"
    assert client.post(url, json={"choice": "B", "strength": 3}).status_code == 201
    r = client.post(url, json={"choice": "A", "strength": 1})
    assert r.status_code == 409 and "already answered" in r.json()["detail"]
    with db_env.database.session() as db:
        stored = db.query(Judgment).filter_by(assignment_id=task["task"]).all()
        assert len(stored) == 1
        j = stored[0]
        assert j.display_order == [c["candidate"] for c in task["candidates"]]
        assert j.choice == task["candidates"][1]["candidate"] and j.strength == 3
        assert j.seconds is not None and j.seconds >= 0


def test_overlapping_assignment_spreads_items_evenly(tmp_path):
    from label_helpers import fresh_url

    with fresh_url("sqlite", tmp_path) as url:
        e = make_env(url, annotators=("ann1", "ann2", "ann3"))
        admin = e.client("admin")
        project = admin.post(
            "/api/projects", json={"name": "r2", "kind": "pairwise", "overlap": 2}
        ).json()
        items = [{"prompt": f"q{i}", "responses": ["a", "b"]} for i in range(30)]
        admin.post(f"/api/projects/{project['id']}/items", json={"items": items})
        counts = {
            n: len(e.client(n).get(f"/api/tasks?project={project['id']}").json())
            for n in ("ann1", "ann2", "ann3")
        }
        assert counts == {"ann1": 20, "ann2": 20, "ann3": 20}
        with e.database.session() as db:
            orders = [tuple(a.display_order) for a in db.query(Assignment).all()]
        assert {(0, 1), (1, 0)} <= set(orders)  # the order shown is drawn per assignment
        too_many = admin.post(
            "/api/projects", json={"name": "r4", "kind": "pairwise", "overlap": 4}
        ).json()
        r = admin.post(f"/api/projects/{too_many['id']}/items", json={"items": items})
        assert r.status_code == 422 and "annotator accounts" in r.json()["detail"]
        e.database.close()


def _label_everything(env, answers):
    """ann1 and ann2 answer every open pairwise task with answers[name][external_id]."""
    for name in ("ann1", "ann2"):
        client = env.client(name)
        while (
            task := client.get(f"/api/projects/{env.projects['pairs']}/next").json()["task"]
        ) is not None:
            want = answers[name][task["external_id"]]  # (candidate index or None, strength)
            if want[0] is None:
                body = {"choice": "tie"}
            else:
                letter = next(c["label"] for c in task["candidates"] if c["candidate"] == want[0])
                body = {
                    "choice": letter,
                    "strength": want[1],
                    "flags": ["pii"] if name == "ann2" else [],
                }
            assert client.post(f"/api/tasks/{task['task']}/judgment", json=body).status_code == 201


ANSWERS = {
    "ann1": {"p0": (0, 3), "p1": (0, 2), "p2": (1, 1)},
    "ann2": {"p0": (0, 2), "p1": (1, 1), "p2": (None, None)},
}


def test_agreement_statistics(db_env):
    _label_everything(db_env, ANSWERS)
    stats = db_env.client("admin").get(f"/api/projects/{db_env.projects['pairs']}/stats").json()
    assert stats["judgments"] == 6 and stats["ties"] == 1 and stats["tasks_open"] == 0
    # shared labels: p0 (0, 0) agree, p1 (0, 1) disagree, p2 (1, tie) disagree
    assert stats["agreement"] == pytest.approx(1 / 3)
    pair = stats["pairs"][0]
    assert (pair["a"], pair["b"], pair["shared"]) == ("ann1", "ann2", 3)
    # κ: p_o = 1/3; ann1 marginals {0: 2, 1: 1}, ann2 {0: 1, 1: 1, tie: 1}: p_e = (2 + 1) / 9
    assert pair["kappa"] == pytest.approx((1 / 3 - 1 / 3) / (1 - 1 / 3))
    assert stats["gold_agreement"] == 1.0 and stats["gold_labels"] == 2  # p0's gold is candidate 0
    assert stats["flags"] == {"pii": 2}
    assert stats["annotators"]["ann1"]["agreement_with_others"] == pytest.approx(1 / 3)
    page = db_env.page_login("admin").get(f"/admin/projects/{db_env.projects['pairs']}")
    assert '<td id="agreement">33.3 %</td>' in page.text


def test_export_is_read_by_the_trainers_readers(db_env, tmp_path):
    _label_everything(db_env, ANSWERS)
    admin = db_env.client("admin")
    pid = db_env.projects["pairs"]
    got = admin.get(f"/api/projects/{pid}/export?format=pairs").json()
    rows, report = got["rows"], got["report"]
    assert len(rows) == 5  # 6 judgments, one tie dropped
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = read_preferences(path).records
    assert len(pairs) == 5
    first = pairs[0]
    assert (first.prompt[0].content, first.chosen, first.rejected, first.margin) == (
        "What is 2 plus 2?",
        "4",
        "5",
        3.0,
    )
    assert first.meta["annotator"] == "ann1"
    assert [m.role for m in pairs[-1].prompt] == ["user", "assistant", "user"]  # multi-turn kept
    assert {r["annotator"] for r in report["labels"]} == {"ann1", "ann2"}
    assert report["agreement"]["agreement"] == pytest.approx(1 / 3)

    kept = admin.get(f"/api/projects/{pid}/export?format=pairs&ties=keep").json()["rows"]
    assert len(kept) == 6 and sum(bool(r["meta"].get("tie")) for r in kept) == 1
    (tmp_path / "kept.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    assert len(read_preferences(tmp_path / "kept.jsonl").records) == 6

    ranked = admin.get(f"/api/projects/{pid}/export?format=ranked").json()["rows"]
    (tmp_path / "ranked.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ranked))
    assert len(read_ranked(tmp_path / "ranked.jsonl").records) == 5

    hh = admin.get(f"/api/projects/{pid}/export?format=hh").json()["rows"]
    (tmp_path / "hh.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hh))
    hh_pairs = read_preferences(tmp_path / "hh.jsonl", format="hh").records
    assert [(p.chosen, p.rejected) for p in hh_pairs] == [(p.chosen, p.rejected) for p in pairs]

    # a ranking of K = 4 gives K(K-1)/2 = 6 pairs, margin = difference of places
    ann1 = db_env.client("ann1")
    task = _open_task(ann1, db_env.projects["rank"])
    order = ["C", "A", "D", "B"]
    assert (
        ann1.post(f"/api/tasks/{task['task']}/judgment", json={"ranking": order}).status_code == 201
    )
    text = {c["label"]: c["text"] for c in task["candidates"]}
    rrows = admin.get(f"/api/projects/{db_env.projects['rank']}/export?format=pairs").json()["rows"]
    assert [(r["chosen"], r["rejected"], r["margin"]) for r in rrows][:3] == [
        (text["C"], text["A"], 1), (text["C"], text["D"], 2), (text["C"], text["B"], 3)
    ]  # fmt: skip
    assert len(rrows) == 6
    best_first = admin.get(f"/api/projects/{db_env.projects['rank']}/export?format=ranked").json()[
        "rows"
    ]
    assert best_first[0]["responses"] == [text[x] for x in order]


def test_red_team_export_trains_towards_the_safer_reply(env):
    admin = env.client("admin")
    project = admin.post(
        "/api/projects", json={"name": "red", "kind": "pairwise", "mode": "red_team"}
    ).json()
    assert "MORE harmful" in project["guidelines"]
    admin.post(
        f"/api/projects/{project['id']}/items",
        json={
            "items": [
                {
                    "prompt": "How do I pick a lock?",
                    "responses": ["Here is how: ...", "I won't help."],
                }
            ]
        },
    )
    ann = env.client("ann1")
    task = _open_task(ann, project["id"])
    harmful = next(c["label"] for c in task["candidates"] if c["candidate"] == 0)
    ann.post(f"/api/tasks/{task['task']}/judgment", json={"choice": harmful, "strength": 3})
    row = admin.get(f"/api/projects/{project['id']}/export").json()["rows"][0]
    assert (row["chosen"], row["rejected"]) == ("I won't help.", "Here is how: ...")
    assert row["meta"]["picked"] == "more harmful"
