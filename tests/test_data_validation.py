"""Every kind of bad row is reported as `file:line: field: message`, never as a stack trace; the
`stop` policy raises one `DataError` listing them all, `skip` keeps the good rows and counts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rlhfkit.data import DataError, read_preferences, read_ranked, read_sft
from rlhfkit.data.problems import MAX_SHOWN, Problem

GOOD = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})


def _write(tmp_path: Path, lines: list[bytes | str], name: str = "d.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


CASES = [
    ("invalid json", '{"prompt": "p", "chosen": ', "<json>", "invalid JSON"),
    ("not an object", "[1, 2]", "<json>", "expected a JSON object"),
    ("missing field", json.dumps({"prompt": "p", "chosen": "a"}), "rejected", "missing"),
    ("missing prompt", json.dumps({"chosen": "a", "rejected": "b"}), "prompt", "missing"),
    (
        "empty reply",
        json.dumps({"prompt": "p", "chosen": "  ", "rejected": "b"}),
        "chosen",
        "empty",
    ),
    (
        "identical",
        json.dumps({"prompt": "p", "chosen": "a", "rejected": "a "}),
        "rejected",
        "identical",
    ),
    (
        "non-text",
        json.dumps({"prompt": "p", "chosen": 3, "rejected": "b"}),
        "chosen",
        "expected text",
    ),
    (
        "bad bytes",
        b'{"prompt": "p\xff", "chosen": "a", "rejected": "b"}',
        "<bytes>",
        "not valid UTF-8",
    ),
    (
        "surrogate",
        '{"prompt": "\\ud800", "chosen": "a", "rejected": "b"}',
        "prompt",
        "text holds undecodable",
    ),
    (
        "bad role",
        json.dumps({"prompt": [{"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"}),
        "prompt[0].role",
        "expected system, user or assistant",
    ),
    ("no fields", json.dumps({"foo": 1}), "<row>", "no known fields"),
]


@pytest.mark.parametrize(("case", "line", "field", "message"), CASES, ids=[c[0] for c in CASES])
def test_each_failure_names_file_line_field(
    tmp_path: Path, case: str, line: str | bytes, field: str, message: str
) -> None:
    path = _write(tmp_path, [GOOD, line, GOOD])  # the bad row is line 2
    with pytest.raises(DataError) as err:
        read_preferences(path)
    assert err.value.problems == [Problem(str(path), 2, field, err.value.problems[0].message)]
    assert message in err.value.problems[0].message
    assert f"{path}:2: {field}: {message}" in str(err.value)

    res = read_preferences(path, on_error="skip")
    assert len(res.records) == 2 and res.n_skipped == 1 and res.n_rows == 3


def test_ranked_failures(tmp_path: Path) -> None:
    rows = [
        json.dumps({"prompt": "p", "responses": ["a"]}),
        json.dumps({"prompt": "p", "responses": ["a", "b", "a"]}),
        json.dumps({"prompt": "p", "responses": ["a", "b"], "scores": [1]}),
        json.dumps({"prompt": "p", "responses": ["a", "b"], "scores": [1, "x"]}),
    ]
    with pytest.raises(DataError) as err:
        read_ranked(_write(tmp_path, rows))
    got = [(p.line, p.field) for p in err.value.problems]
    assert got == [(1, "responses"), (2, "responses[2]"), (3, "scores"), (4, "scores[1]")]


def test_task_mismatch_is_a_row_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps({"prompt": "only a prompt"})])
    with pytest.raises(DataError, match=r"d\.jsonl:1: response: missing"):
        read_sft(path)
    with pytest.raises(DataError, match=r"d\.jsonl:1: chosen: missing"):
        read_preferences(path)


def test_message_lists_at_most_max_shown_problems(tmp_path: Path) -> None:
    path = _write(tmp_path, ["{bad"] * (MAX_SHOWN + 7))
    with pytest.raises(DataError) as err:
        read_preferences(path)
    text = str(err.value)
    assert len(err.value.problems) == MAX_SHOWN + 7
    assert text.count("invalid JSON") == MAX_SHOWN
    assert "... and 7 more problem(s)" in text


def test_skip_policy_logs_a_sample(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rlhfkit.data")
    path = _write(tmp_path, [GOOD, "{bad", GOOD])
    res = read_preferences(path, on_error="skip")
    assert res.n_skipped == 1
    assert f"skipped 1 bad row(s) of 3 (first: {path}:2: <json>" in caplog.text


def test_unreadable_sources_raise_under_any_policy(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.jsonl:0: <file>: no such file"):
        read_preferences(tmp_path / "missing.jsonl", on_error="skip")
    odd = tmp_path / "data.xml"
    odd.write_text("<a/>")
    with pytest.raises(DataError, match="unknown file type"):
        read_preferences(odd, on_error="skip")


def test_csv_and_json_locations(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('prompt,chosen,rejected\np,a,b\n"multi\nline",a,\n')
    with pytest.raises(DataError) as err:
        read_preferences(csv_path)
    # The CSV row spans lines 3-4; the reported line is where it ends.
    assert [(p.line, p.field) for p in err.value.problems] == [(4, "rejected")]
    json_path = tmp_path / "d.json"
    json_path.write_text(
        json.dumps([{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p"}])
    )
    with pytest.raises(DataError, match=r"d\.json:2: chosen: missing"):
        read_preferences(json_path)
