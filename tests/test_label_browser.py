"""A real browser (Debian's Chromium driven by Playwright) against a running label server: log in,
label five pairwise items with strengths, rank one K = 4 item, hold a two-turn chat comparison,
log out; then export and read the files with the trainers' readers.

Screenshots go to the test's temporary folder, or to $RLHFKIT_LABEL_SCREENSHOTS when set
(`RLHFKIT_LABEL_SCREENSHOTS=docs/img` refreshes the ones in the docs).
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from label_helpers import PASSWORDS, live_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "no Chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from rlhfkit.data import read_preferences  # noqa: E402
from rlhfkit.label import service  # noqa: E402
from rlhfkit.label.db import Database  # noqa: E402

FRUITS = ["apple, pear and plum", "apple", "I don't know any fruits.", "Fruits are food."]
PAIRS = [
    ("What is 17 plus 25?", "17 plus 25 is 42.", "It is 43."),
    ("What colour is the sky on a clear day?", "Blue.", "The sky is a kind of cheese."),
    ("How do I kill a stuck process?", "Use `kill PID`, or `kill -9 PID` if it ignores that.", "I can't help with killing."),
    ("Spell cat backwards.", "tac", "cat cat cat cat"),
    ("What is the capital of Atlantis?", "I don't know; Atlantis is a legend.", "Its capital is Poseidonia, population 4 million."),
]  # fmt: skip
VERDICTS = ["A3", "B2", "A1", "B3", "A2"]  # by letter: the candidate behind A or B varies per task


@contextmanager
def _chromium(url):
    """A Chromium page (1280 × 860) and the list of requests it made outside `url`."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        requests_outside = []
        page.on("request", lambda r: r.url.startswith(url) or requests_outside.append(r.url))
        yield page, requests_outside
        browser.close()


def _log_in(page, name):
    """Fill the login form the page shows and wait for the project list."""
    page.fill("#name", name)
    page.fill("#password", PASSWORDS[name])
    page.click("#login")
    page.wait_for_selector("text=Your projects")


@pytest.fixture
def server(tmp_path, tiny_policy):
    database = Database(f"sqlite:///{tmp_path / 'label.db'}")
    database.upgrade()
    with database.session() as db:
        service.create_user(db, "admin", PASSWORDS["admin"], "admin")
        service.create_user(db, "ann1", PASSWORDS["ann1"])
        pw = service.create_project(db, "Helpfulness pairs", "pairwise")
        rows = [
            {"id": str(i), "prompt": p, "responses": [a, b]} for i, (p, a, b) in enumerate(PAIRS)
        ]
        service.import_items(db, pw, [service.parse_item(r, "pairwise", "t") for r in rows])
        rk = service.create_project(db, "Fruit ranking", "ranking")
        row = {"prompt": "List three fruits.", "responses": FRUITS}
        service.import_items(db, rk, [service.parse_item(row, "ranking", "t")])
        service.create_project(
            db, "Live chat", "chat", policy_a=str(tiny_policy), max_new_tokens=16
        )
    with live_server(database) as url:
        yield url, database
    database.close()


def test_label_in_a_real_browser(server, tmp_path):
    url, database = server
    shots = Path(os.environ.get("RLHFKIT_LABEL_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with _chromium(url) as (page, requests_outside):
        # log in
        page.goto(f"{url}/")
        assert page.url.startswith(f"{url}/login")
        _log_in(page, "ann1")

        # five pairwise judgments with strengths (and a flag and a note on the first)
        page.click("a.start >> nth=0")
        for i, verdict in enumerate(VERDICTS):
            page.wait_for_selector("#judge")
            assert PAIRS[i][0] in page.inner_text(".dialogue")
            page.check(f"#verdict-{verdict}")
            if i == 0:
                page.check("#flag-wrong_language")
                page.fill("#note", "The second reply miscounts.")
                page.screenshot(path=str(shots / "label_pairwise.png"), full_page=True)
            page.click("#submit")
        page.wait_for_selector("text=No open tasks left")

        # rank one K = 4 item by numbers: best = the full answer
        page.goto(f"{url}/")
        page.click("a.start")
        page.wait_for_selector("ol.ranking")
        shown = {li.query_selector("label").inner_text().strip(): li.query_selector(".text").inner_text()
                 for li in page.query_selector_all("ol.ranking li")}  # fmt: skip
        letters = {text: letter for letter, text in shown.items()}
        for place, text in enumerate(FRUITS, start=1):
            page.fill(f"#rank-{letters[text]}", str(place))
        page.screenshot(path=str(shots / "label_ranking.png"), full_page=True)
        page.click("#submit")
        page.wait_for_selector("text=No open tasks left")

        # a two-turn chat comparison with the live policy
        page.goto(f"{url}/")
        page.click("button.start-chat")
        for turn, text in enumerate(
            ["Hello there, how are you today?", "What is the capital of France?"]
        ):
            page.wait_for_selector("#text")
            page.fill("#text", text)
            page.click("#send")
            page.wait_for_selector("#judge", timeout=90_000)  # the page refreshes until then
            if turn == 1:
                page.screenshot(path=str(shots / "label_chat.png"), full_page=True)
            page.check("#verdict-A2" if turn == 0 else "#verdict-B1")
            page.click("#submit")
        page.wait_for_selector("#text")
        turns = page.query_selector_all(".turn")
        assert len(turns) == 4

        # log out
        page.click("#logout")
        page.wait_for_selector("#login")
        page.goto(f"{url}/")
        assert page.url.startswith(f"{url}/login")

        # the admin's statistics page for the pairwise project
        _log_in(page, "admin")
        page.click("text=statistics >> nth=0")
        page.wait_for_selector("#agreement")
        assert "The second reply miscounts." in page.inner_text("table.notes")
        page.screenshot(path=str(shots / "label_admin.png"), full_page=True)
    assert requests_outside == []  # every asset came from the app

    with database.session() as db:
        pairs_rows, report = service.export_rows(db, service.get_project(db, "Helpfulness pairs"))
        rank_rows, _ = service.export_rows(db, service.get_project(db, "Fruit ranking"), "ranked")
        chat_rows, _ = service.export_rows(db, service.get_project(db, "Live chat"), "hh")
    assert [r["margin"] for r in pairs_rows] == [int(v[1]) for v in VERDICTS]
    assert pairs_rows[0]["meta"]["flags"] == ["wrong_language"]
    assert pairs_rows[0]["meta"]["note"] == "The second reply miscounts."
    for row, (prompt, a, b), verdict in zip(pairs_rows, PAIRS, VERDICTS, strict=True):
        shown_first = [a, b][row["meta"]["display_order"][0]]
        assert row["prompt"] == prompt
        assert (row["chosen"] == shown_first) == (verdict[0] == "A")
    assert rank_rows[0]["responses"] == FRUITS
    assert len(chat_rows) == 2 and chat_rows[1]["chosen"].count("\n\nHuman: ") == 2
    assert report["agreement"]["judgments"] == 5
    for name, rows in [("pairs", pairs_rows), ("ranked", rank_rows), ("hh", chat_rows)]:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        n = len(read_preferences(path, format="hh" if name == "hh" else "auto").records)
        assert n == {"pairs": 5, "ranked": 6, "hh": 2}[name]
    assert (shots / "label_pairwise.png").stat().st_size > 10_000


RATED = [  # prompt, reply, what ann1 gives it in the browser: (helpful 1–7, honest 1–5, harmless)
    ("What is 17 plus 25?", "17 plus 25 is 42.", (7, 5, "up")),
    ("What is the capital of Atlantis?", "Its capital is Poseidonia, population 4 million.", (2, 1, "up")),
    ("How do I pick my neighbour's lock?", "I won't help with getting into someone else's home.", (5, 4, "up")),
]  # fmt: skip


@pytest.fixture
def rating_server(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'label.db'}")
    database.upgrade()
    with database.session() as db:
        service.create_user(db, "admin", PASSWORDS["admin"], "admin")
        service.create_user(db, "ann1", PASSWORDS["ann1"])
        ann2, _ = service.create_user(db, "ann2", PASSWORDS["ann2"])
        project = service.create_project(
            db, "Rate the replies", "rating", overlap=2,
            aspects=["helpful:1-7", "honest:1-5", "harmless:thumbs"],
        )  # fmt: skip
        rows = [{"id": str(i), "prompt": p, "completion": r} for i, (p, r, _) in enumerate(RATED)]
        service.import_items(db, project, [service.parse_item(r, "rating", "t") for r in rows])
        for task, (h, o, s) in zip(service.tasks_of(db, ann2, None, "open"), [(6, 5, "up"), (1, 2, "down"), (6, 4, "up")], strict=True):  # fmt: skip
            service.submit(
                db, ann2, task.id, {"scores": {"helpful": h, "honest": o, "harmless": s}}
            )
    with live_server(database) as url:
        yield url, database
    database.close()


def test_rate_replies_in_a_real_browser(rating_server, tmp_path):
    url, database = rating_server
    shots = Path(os.environ.get("RLHFKIT_LABEL_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with _chromium(url) as (page, requests_outside):
        page.goto(f"{url}/login")
        _log_in(page, "ann1")
        page.click("a.start >> nth=0")
        for i, (prompt, reply, (helpful, honest, harmless)) in enumerate(RATED):
            page.wait_for_selector("#judge")
            assert prompt in page.inner_text(".dialogue") and reply in page.inner_text(".replies")
            page.check(f"#score-helpful-{helpful}")
            page.check(f"#score-honest-{honest}")
            page.check(f"#score-harmless-{harmless}")
            if i == 1:
                page.check("#flag-unsafe")
                page.fill("#note", "Confidently invents a capital.")
                page.screenshot(path=str(shots / "label_rating.png"), full_page=True)
            page.click("#submit")
        page.wait_for_selector("text=No open tasks left")
        page.click("#logout")
        page.wait_for_selector("#login")
        _log_in(page, "admin")
        page.click("text=statistics >> nth=0")
        page.wait_for_selector("#aspects")
        aspects = page.inner_text("#aspects")
        assert "ordinal" in aspects and "nominal" in aspects
        page.screenshot(path=str(shots / "label_rating_admin.png"), full_page=True)
    assert requests_outside == []

    with database.session() as db:
        rows, report = service.export_rows(
            db, service.get_project(db, "Rate the replies"), "ratings"
        )
    ann1 = [r for r in rows if r["meta"]["annotator"] == "ann1"]
    assert [(r["completion"], r["label"]) for r in ann1] == [
        (RATED[0][1], True), (RATED[1][1], False), (RATED[2][1], True)
    ]  # fmt: skip
    assert ann1[1]["meta"]["scores"] == {"helpful": 2, "honest": 1, "harmless": "up"}
    assert ann1[1]["meta"]["flags"] == ["unsafe"] and ann1[1]["meta"]["note"].startswith(
        "Confidently"
    )
    assert report["agreement"]["aspects"]["helpful"]["krippendorff_alpha"] is not None
    assert (shots / "label_rating.png").stat().st_size > 10_000
