"""Rating projects (one reply per task, thumbs or Likert, per aspect) through the API and the
pages, on SQLite and PostgreSQL: creation, import, the task view, answers and their checks,
isolation, CSRF, escaping, statistics and the `ratings` export (unpaired KTO rows)."""

from __future__ import annotations

import json
import re

import pytest
from label_helpers import form_csrf

from rlhfkit.label import service
from rlhfkit.label.agreement import fleiss_kappa, krippendorff_alpha
from rlhfkit.label.db import Judgment

ASPECTS = ["helpful:1-7", "honest:1-5", "harmless:thumbs"]
ITEMS = [
    {"id": "r0", "prompt": "What is 2 plus 2?", "completion": "4", "gold": {"helpful": 7, "harmless": "up"}},
    {"id": "r1", "prompt": "Name a colour.", "completion": "Seven."},
    {"id": "r2", "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                            {"role": "user", "content": "Spell cat backwards."}], "responses": ["tac"]},
]  # fmt: skip
# what each annotator gives item i: (helpful, honest, harmless)
ANSWERS = {
    "ann1": [(7, 5, "up"), (2, 1, "up"), (6, 4, "up")],
    "ann2": [(6, 5, "up"), (1, 2, "down"), (6, 3, "up")],
}


def _rating_project(client, **fields):
    body = {"name": "rate", "kind": "rating", "overlap": 2, "aspects": ASPECTS, **fields}
    r = client.post("/api/projects", json=body)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = client.post(f"/api/projects/{pid}/items", json={"items": ITEMS})
    assert r.status_code == 201, r.text
    return pid


def _rate_all(env, pid):
    for name, answers in ANSWERS.items():
        client = env.client(name)
        for helpful, honest, harmless in answers:
            task = client.get(f"/api/projects/{pid}/next").json()["task"]
            scores = {"helpful": helpful, "honest": honest, "harmless": harmless}
            r = client.post(f"/api/tasks/{task['task']}/judgment", json={"scores": scores})
            assert r.status_code == 201, r.text
        assert client.get(f"/api/projects/{pid}/next").json()["task"] is None


def test_a_rating_project_end_to_end(db_env):
    admin = db_env.client("admin")
    pid = _rating_project(admin)
    project = admin.get(f"/api/projects/{pid}").json()
    assert project["kind"] == "rating"
    assert project["settings"]["aspects"] == [
        {"name": "helpful", "scale": "1-7"},
        {"name": "honest", "scale": "1-5"},
        {"name": "harmless", "scale": "thumbs"},
    ]
    task = db_env.client("ann1").get(f"/api/projects/{pid}/next").json()["task"]
    assert task["kind"] == "rating" and task["external_id"] == "r0"
    assert [c["text"] for c in task["candidates"]] == ["4"]
    assert [(a["name"], a["values"]) for a in task["aspects"]] == [
        ("helpful", [1, 2, 3, 4, 5, 6, 7]),
        ("honest", [1, 2, 3, 4, 5]),
        ("harmless", ["up", "down"]),
    ]
    _rate_all(db_env, pid)

    stats = admin.get(f"/api/projects/{pid}/stats").json()
    assert stats["judgments"] == 6 and stats["ties"] == 0 and stats["tasks_open"] == 0
    helpful, harmless = stats["aspects"]["helpful"], stats["aspects"]["harmless"]
    assert helpful["krippendorff_alpha"] == pytest.approx(
        krippendorff_alpha([[7, 6], [2, 1], [6, 6]], "ordinal")
    )
    assert harmless["fleiss_kappa"] == pytest.approx(fleiss_kappa([[1, 1], [1, 0], [1, 1]]))
    assert harmless["gold_agreement"] == 1.0 and helpful["gold_agreement"] == 0.5

    export = admin.get(f"/api/projects/{pid}/export", params={"format": "ratings"}).json()
    rows = export["rows"]
    assert all(set(r) == {"prompt", "completion", "label", "meta"} for r in rows)
    assert all(isinstance(r["label"], bool) for r in rows)
    # default rule on helpful (1–7): above 4 true, below false, 4 itself dropped (none here)
    assert [(r["completion"], r["meta"]["annotator"], r["label"]) for r in rows] == [
        ("4", "ann1", True), ("4", "ann2", True), ("Seven.", "ann1", False),
        ("Seven.", "ann2", False), ("tac", "ann1", True), ("tac", "ann2", True),
    ]  # fmt: skip
    assert rows[0]["prompt"] == "What is 2 plus 2?" and isinstance(rows[4]["prompt"], list)
    assert rows[3]["meta"]["scores"] == {"helpful": 1, "honest": 2, "harmless": "down"}
    assert rows[0]["meta"]["external_id"] == "r0" and rows[0]["meta"]["rule"].startswith(
        "score > 4"
    )
    assert export["report"]["desirable"] == 4 and export["report"]["undesirable"] == 2

    def labels(**params):
        got = admin.get(f"/api/projects/{pid}/export", params={"format": "ratings", **params})
        assert got.status_code == 200, got.text
        return [r["label"] for r in got.json()["rows"]], got.json()["report"]

    assert labels(threshold=7)[0] == [True, False, False, False, False, False]
    assert labels(aspect="harmless")[0] == [True, True, True, False, True, True]
    got, report = labels(aspect="honest")  # 1–5: the middle 3 is dropped
    assert got == [True, True, False, False, True] and report["dropped_middle"] == 1
    for bad in [{"aspect": "harmless", "threshold": 1}, {"threshold": 8}, {"threshold": 1},
                {"aspect": "funny"}, {"format": "pairs"}]:  # fmt: skip
        r = admin.get(f"/api/projects/{pid}/export", params={"format": "ratings", **bad})
        assert r.status_code == 422, (bad, r.text)
    pairs = admin.get(f"/api/projects/{db_env.projects['pairs']}/export?format=ratings")
    assert pairs.status_code == 422 and "rating projects" in pairs.json()["detail"]


BAD_SCORES = [
    {},
    {"helpful": 5, "honest": 3},  # an aspect missing
    {"helpful": 5, "honest": 3, "harmless": "up", "funny": 1},  # one too many
    {"helpful": 8, "honest": 3, "harmless": "up"},  # off the 1–7 scale
    {"helpful": 0, "honest": 3, "harmless": "up"},
    {"helpful": 5, "honest": 6, "harmless": "up"},  # off 1–5
    {"helpful": 5, "honest": 3, "harmless": 1},  # thumbs are up / down
    {"helpful": 5, "honest": 3, "harmless": "sideways"},
    {"helpful": "5", "honest": 3, "harmless": "up"},
    {"helpful": True, "honest": 3, "harmless": "up"},
    {"helpful": 5.0, "honest": 3, "harmless": "up"},
    {"helpful": 2**40, "honest": 3, "harmless": "up"},
]


def test_bad_ratings_are_a_422_and_store_nothing(env):
    admin, ann = env.client("admin"), env.client("ann1")
    pid = _rating_project(admin)
    task = ann.get(f"/api/projects/{pid}/next").json()["task"]["task"]
    for scores in BAD_SCORES:
        r = ann.post(f"/api/tasks/{task}/judgment", json={"scores": scores})
        assert r.status_code == 422, (scores, r.text)
        assert r.json()["detail"], scores
    for body in [{"choice": "A", "strength": 1}, {"ranking": ["A"]}, {"scores": [5, 3, "up"]}]:
        assert ann.post(f"/api/tasks/{task}/judgment", json=body).status_code == 422, body
    with env.database.session() as db:
        assert db.query(Judgment).count() == 0
    good = {"scores": {"helpful": 5, "honest": 3, "harmless": "up"}, "flags": ["pii"], "note": "ok"}
    assert ann.post(f"/api/tasks/{task}/judgment", json=good).status_code == 201
    assert ann.post(f"/api/tasks/{task}/judgment", json=good).status_code == 409  # exactly once
    # isolation: another annotator cannot read or answer it
    other = env.client("ann2")
    assert other.get(f"/api/tasks/{task}").status_code == 404
    assert other.post(f"/api/tasks/{task}/judgment", json=good).status_code == 404
    stats = admin.get(f"/api/projects/{pid}/stats").json()
    assert stats["flags"] == {"pii": 1} and stats["notes"][0]["note"] == "ok"


def test_rating_projects_refuse_what_does_not_fit(env):
    admin = env.client("admin")
    for body in [
        {"name": "x", "kind": "rating", "scale": "1-10"},
        {"name": "x", "kind": "rating", "aspects": ["helpful:1-9"]},
        {"name": "x", "kind": "rating", "aspects": ["a b"]},
        {"name": "x", "kind": "rating", "aspects": ["a", "a:1-5"]},
        {"name": "x", "kind": "rating", "mode": "red_team"},
        {"name": "x", "kind": "pairwise", "aspects": ["helpful"]},
        {"name": "x", "kind": "pairwise", "scale": "1-5"},
    ]:
        r = admin.post("/api/projects", json=body)
        assert r.status_code == 422, (body, r.text)
    pid = admin.post("/api/projects", json={"name": "one", "kind": "rating"}).json()["id"]
    project = admin.get(f"/api/projects/{pid}").json()
    assert project["settings"]["aspects"] == [{"name": "overall", "scale": "thumbs"}]
    assert "Rate the reply" in project["guidelines"]
    for item in [
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "p", "responses": ["a", "b"]},
        {"prompt": "p", "completion": "a", "response": "b"},
        {"prompt": "p"},
        {"prompt": "p", "completion": ""},
        {"prompt": "p", "completion": "a", "gold": 3},  # thumbs gold is up / down
        {"prompt": "p", "completion": "a", "gold": {"helpful": "up"}},  # no such aspect
    ]:
        r = admin.post(f"/api/projects/{pid}/items", json={"items": [item]})
        assert r.status_code == 422 and r.json()["detail"].startswith("items[0]"), (item, r.text)
    r = admin.post(
        f"/api/projects/{pid}/items",
        json={"items": [{"prompt": "p", "completion": "a", "gold": "down"}]},
    )
    assert r.status_code == 201, r.text


def test_rating_through_the_pages(env):
    admin = env.client("admin")
    payload = "<script>alert(1)</script>"
    items = [{"prompt": f"Say {payload}", "completion": f"Here: {payload}"}]
    r = admin.post("/api/projects", json={"name": "page-rate", "kind": "rating", "scale": "1-5",
                                          "aspects": ["helpful", "harmless:thumbs"]})  # fmt: skip
    pid = r.json()["id"]
    assert admin.post(f"/api/projects/{pid}/items", json={"items": items}).status_code == 201
    browser = env.page_login("ann1")
    page = browser.get(f"/projects/{pid}")
    assert payload not in page.text and "&lt;script&gt;" in page.text
    assert 'name="score_helpful" value="5"' in page.text and 'value="down"' in page.text
    aid = re.search(r'action="/tasks/(\d+)"', page.text).group(1)
    csrf = form_csrf(page.text)
    form = {"score_helpful": "4", "score_harmless": "down", "note": payload}
    r = browser.post(f"/tasks/{aid}", data=form, follow_redirects=False)
    assert r.status_code == 403  # no CSRF token
    r = browser.post(f"/tasks/{aid}", data={**form, "score_helpful": "9", "csrf_token": csrf})
    assert r.status_code == 422
    r = browser.post(f"/tasks/{aid}", data={**form, "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303, r.text
    with env.database.session() as db:
        j = db.query(Judgment).one()
        assert j.scores == {"helpful": 4, "harmless": 0} and j.note == payload
    boss = env.page_login("admin")
    stats_page = boss.get(f"/admin/projects/{pid}")
    assert 'id="aspects"' in stats_page.text and payload not in stats_page.text
    export = boss.get(f"/admin/projects/{pid}/export?format=ratings&threshold=4")
    row = json.loads(export.text)
    assert (row["completion"], row["label"], row["meta"]["scores"]) == (
        f"Here: {payload}",
        True,
        {"helpful": 4, "harmless": "down"},
    )


def test_rating_service_without_http(db_env):
    with db_env.database.session() as db:
        project = service.create_project(db, "svc", "rating", scale="1-7", overlap=1)
        rows = service.read_items_file(
            "\ufeff" + json.dumps({"prompt": "p", "completion": "c", "gold": 6}) + "\n",
            "rating",
            "f.jsonl",
        )
        (item,) = service.import_items(db, project, rows)
        assert item.gold == {"overall": 6} and item.candidates == ["c"]
        with pytest.raises(
            service.LabelError, match=r"f.jsonl:1: gold.overall: a whole number 1–7"
        ):
            bad = service.read_items_file(
                '{"prompt": "p", "completion": "c", "gold": 9}', "rating", "f.jsonl"
            )
            service.import_items(db, project, bad)
