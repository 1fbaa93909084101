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
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        requests_outside = []
        page.on("request", lambda r: r.url.startswith(url) or requests_outside.append(r.url))

        # log in
        page.goto(f"{url}/")
        assert page.url.startswith(f"{url}/login")
        page.fill("#name", "ann1")
        page.fill("#password", PASSWORDS["ann1"])
        page.click("#login")
        page.wait_for_selector("text=Your projects")

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
        page.fill("#name", "admin")
        page.fill("#password", PASSWORDS["admin"])
        page.click("#login")
        page.wait_for_selector("text=Your projects")
        page.click("text=statistics >> nth=0")
        page.wait_for_selector("#agreement")
        assert "The second reply miscounts." in page.inner_text("table.notes")
        page.screenshot(path=str(shots / "label_admin.png"), full_page=True)
        browser.close()
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
