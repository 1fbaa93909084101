"""`rlhfkit label ...` from the command line: accounts, projects, import, export, stats; and
that the rest of rlhfkit does not load the web stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("fastapi", reason="the label extra is not installed")

from typer.testing import CliRunner  # noqa: E402

from rlhfkit.cli import app  # noqa: E402
from rlhfkit.data import read_preferences  # noqa: E402
from rlhfkit.label import service  # noqa: E402
from rlhfkit.label.db import Database  # noqa: E402


def _run(*args, ok=True):
    result = CliRunner().invoke(app, ["label", *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_create_import_label_export(tmp_path):
    db = f"sqlite:///{tmp_path / 'label.db'}"
    out = _run("user", "create", "boss", "--role", "admin", "--password", "boss-pass-1", "--db", db)
    assert "API token (shown once): " in out.output
    _run("user", "create", "ann", "--password", "ann-pass-1", "--db", db)
    _run("project", "create", "demo", "--kind", "pairwise", "--db", db)
    items = tmp_path / "pairs.jsonl"  # what `rlhfkit sim collect` writes
    items.write_text(
        "".join(
            json.dumps({"prompt": f"What is {i} plus {i}?", "chosen": str(2 * i), "rejected": "7",
                        "meta": {"source": "policy"}}) + "\n"
            for i in range(4)
        )
    )  # fmt: skip
    assert "imported 4 items" in _run("import", str(items), "--project", "demo", "--db", db).output
    assert "demo\tpairwise" in _run("project", "list", "--db", db).output

    database = Database(db)
    with database.session() as s:
        ann = service.user_by_name(s, "ann")
        for task in service.tasks_of(s, ann, None, "open"):
            first = task.display_order.index(0)  # always pick the original "chosen"
            service.submit(s, ann, task.id, {"choice": "AB"[first], "strength": 2})
    database.close()

    target = tmp_path / "out" / "train.jsonl"
    _run("export", "--project", "demo", "--format", "pairs", "-o", str(target), "--db", db)
    pairs = read_preferences(target).records
    assert [(p.chosen, p.margin) for p in pairs] == [(str(2 * i), 2.0) for i in range(4)]
    report = json.loads((tmp_path / "out" / "train.jsonl.report.json").read_text())
    assert [r["annotator"] for r in report["labels"]] == ["ann"] * 4
    assert report["agreement"]["judgments"] == 4
    stats = json.loads(_run("stats", "--project", "demo", "--db", db).output)
    assert stats["tasks_done"] == 4


def test_cli_errors_are_messages(tmp_path):
    db = f"sqlite:///{tmp_path / 'label.db'}"
    _run("user", "create", "ann", "--password", "ann-pass-1", "--db", db)
    _run("project", "create", "demo", "--kind", "ranking", "--db", db)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "responses": ["a", "b"]}\n{"prompt": "p", "responses": "ab"}\n')
    result = _run("import", str(bad), "--project", "demo", "--db", db, ok=False)
    assert result.exit_code == 2 and "bad.jsonl:2: responses: expected a list" in result.output
    result = _run("import", str(bad), "--project", "nope", "--db", db, ok=False)
    assert result.exit_code == 2 and "no project 'nope'" in result.output
    result = _run("project", "create", "demo", "--kind", "ranking", "--db", db, ok=False)
    assert result.exit_code == 2 and "exists" in result.output
    result = _run(
        "export",
        "--project",
        "demo",
        "--format",
        "csv",
        "-o",
        str(tmp_path / "x"),
        "--db",
        db,
        ok=False,
    )
    assert result.exit_code == 2 and "format must be one of" in result.output


PAIR = b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n'
IMPORT_MISTAKES = [  # (file name, project, content or None for a folder, what the line says)
    ("empty.jsonl", "demo", b"", "empty.jsonl: no items (the file is empty)"),
    ("blank.jsonl", "demo", b"\n  \n\t\n", "blank.jsonl: no items (the file is empty)"),
    ("list.json", "demo", b" [] ", "list.json: no items (an empty list)"),
    ("latin1.jsonl", "demo", PAIR + b'{"prompt": "caf\xe9"}\n', "latin1.jsonl:2: not UTF-8 text"),
    (
        "binary.bin",
        "demo",
        bytes(range(256)) * 4,
        "binary.bin:2: not UTF-8 text",
    ),  # byte 10 is a newline
    (
        "same.jsonl",
        "demo",
        PAIR + b'{"prompt": "p", "chosen": "yes", "rejected": " yes\\n"}\n',
        "same.jsonl:2: rejected: identical to chosen",
    ),
    (
        "dup.jsonl",
        "rank",
        b'{"prompt": "p", "responses": ["a", "b", "a "]}\n',
        "dup.jsonl:1: responses[2]: identical to responses[0]",
    ),
    (
        "ghost.jsonl",
        "demo",
        PAIR.replace(b"}", b', "assign_to": ["ann"]}')
        + PAIR.replace(b"}", b', "assign_to": ["ann", "ghost"]}'),
        "ghost.jsonl:2: assign_to: no user 'ghost'",
    ),
    ("folder", "demo", None, "no such file"),
    ("missing.jsonl", "demo", False, "no such file"),
]


def test_import_mistakes_are_one_line_and_import_nothing(tmp_path):
    db = f"sqlite:///{tmp_path / 'label.db'}"
    _run("user", "create", "ann", "--password", "ann-pass-1", "--db", db)
    _run("project", "create", "demo", "--kind", "pairwise", "--db", db)
    _run("project", "create", "rank", "--kind", "ranking", "--db", db)
    for name, project, content, said in IMPORT_MISTAKES:
        path = tmp_path / name
        if content is None:
            path.mkdir()
        elif content is not False:
            path.write_bytes(content)
        result = _run("import", str(path), "--project", project, "--db", db, ok=False)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, (name, result.output)
        assert len(lines) == 1 and said in lines[0], (name, result.output)
        assert isinstance(result.exception, SystemExit), (name, result.exception)
    database = Database(db)
    with database.session() as s:
        counts = [service.stats(s, service.get_project(s, p))["items"] for p in ("demo", "rank")]
    database.close()
    assert counts == [0, 0]


def test_import_accepts_a_byte_order_mark(tmp_path):
    db = f"sqlite:///{tmp_path / 'label.db'}"
    _run("user", "create", "ann", "--password", "ann-pass-1", "--db", db)
    _run("project", "create", "demo", "--kind", "pairwise", "--db", db)
    row = {"prompt": "What is 2 plus 2?", "chosen": "4", "rejected": "5"}
    jsonl, listed = tmp_path / "bom.jsonl", tmp_path / "bom.json"
    jsonl.write_bytes(b"\xef\xbb\xbf" + (json.dumps(row) + "\n").encode() * 2)
    listed.write_bytes(b"\xef\xbb\xbf" + json.dumps([row]).encode())
    assert "imported 2 items" in _run("import", str(jsonl), "--project", "demo", "--db", db).output
    assert "imported 1 items" in _run("import", str(listed), "--project", "demo", "--db", db).output


def test_a_rating_project_from_the_command_line(tmp_path):
    db = f"sqlite:///{tmp_path / 'label.db'}"
    _run("user", "create", "ann", "--password", "ann-pass-1", "--db", db)
    out = _run("project", "create", "thumbs", "--kind", "rating", "--scale", "1-7",
               "--aspects", "helpful,harmless:thumbs", "--db", db).output  # fmt: skip
    assert "(rating, helpful, overlap 1; helpful 1-7, harmless thumbs)" in out
    items = tmp_path / "replies.jsonl"
    items.write_text(
        "".join(json.dumps({"prompt": f"Q{i}?", "completion": f"A{i}."}) + "\n" for i in range(4))
    )
    assert (
        "imported 4 items" in _run("import", str(items), "--project", "thumbs", "--db", db).output
    )
    database = Database(db)
    with database.session() as s:
        ann = service.user_by_name(s, "ann")
        for task, helpful in zip(service.tasks_of(s, ann, None, "open"), [7, 4, 5, 1], strict=True):
            service.submit(s, ann, task.id, {"scores": {"helpful": helpful, "harmless": "up"}})
    database.close()
    target = tmp_path / "kto.jsonl"
    out = _run("export", "--project", "thumbs", "--format", "ratings", "--threshold", "5",
               "-o", str(target), "--db", db).output  # fmt: skip
    assert "wrote 4 rows (score >= 5 = true, else false; 0 dropped)" in out
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["prompt"], r["completion"], r["label"]) for r in rows] == [
        ("Q0?", "A0.", True), ("Q1?", "A1.", False), ("Q2?", "A2.", True), ("Q3?", "A3.", False)
    ]  # fmt: skip
    out = _run(
        "export", "--project", "thumbs", "--format", "ratings", "-o", str(target), "--db", db
    ).output
    assert "wrote 3 rows (score > 4 = true, score < 4 = false, 4 dropped; 1 dropped)" in out
    result = _run(
        "export",
        "--project",
        "thumbs",
        "--format",
        "pairs",
        "-o",
        str(target),
        "--db",
        db,
        ok=False,
    )
    assert result.exit_code == 2 and "a rating project exports --format ratings" in result.output
    result = _run(
        "project", "create", "bad", "--kind", "rating", "--aspects", "a:1-9", "--db", db, ok=False
    )
    assert result.exit_code == 2 and "scale must be one of thumbs, 1-5, 1-7" in result.output


def test_rlhfkit_help_does_not_load_the_web_stack():
    code = (
        "import sys, rlhfkit.cli; "
        "print(sorted(m for m in ('fastapi', 'sqlalchemy', 'uvicorn', 'alembic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
