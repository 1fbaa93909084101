"""`rlhfkit data inspect` and `DataConfig`: counts, problems by file:line:field, lengths in
words or tokens, clear errors; the config's validation and `load_data` splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfkit.data import DataConfig, load_data
from rlhfkit.data.cli import app, parse_columns

FIX = Path(__file__).resolve().parent / "fixtures" / "data"
STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_inspect_reports_counts_problems_and_examples(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    rows = [
        json.dumps({"prompt": "What is 2+2?", "chosen": "4", "rejected": "five"}),
        "{broken",
        json.dumps({"prompt": "What is 2+2?", "chosen": "4", "rejected": "five"}),
        json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}),
    ]
    path.write_text("\n".join(rows) + "\n")
    code, out = _run(str(path), "--examples", "1")
    assert code == 1, out  # bad rows: a script can gate on the exit status
    assert _run(str(path), "--report-only")[0] == 0
    assert "format: generic  task: preferences" in out
    assert "│ rows read          │ 4" in out
    assert "│ records            │ 2" in out
    assert "│ bad rows skipped   │ 2" in out
    assert "│ duplicates (kept)  │ 1" in out
    assert f"{path}:2: <json>: invalid JSON" in out
    assert f"{path}:4: rejected: identical to chosen" in out
    assert "whitespace words" in out
    # Words: prompt "What is 2+2?" = 3, replies 1 and 1 → prompt + each reply = 4.
    assert "│ prompt              │ 3   │ 3.0  │ 3      │ 3   │ 3   │" in out
    assert "Human: What is 2+2?" in out and "five" in out


def test_inspect_guesses_task_and_maps_columns(tmp_path: Path) -> None:
    code, out = _run(str(FIX / "generic_ranked.jsonl"))
    assert code == 0 and "task: ranked" in out
    code, out = _run(str(FIX / "summarize_axis.jsonl"))
    assert code == 0 and "format: summarize_axis  task: ranked" in out
    path = tmp_path / "m.csv"
    path.write_text("question,answer\nWhy?,Because.\n")
    code, out = _run(str(path), "--columns", "prompt=question,response=answer")
    assert code == 0 and "task: sft" in out and "Because." in out


def test_inspect_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    code, out = _run(str(tmp_path / "nope.jsonl"))
    assert code == 2 and "nope.jsonl:0: <file>: no such file" in out
    code, out = _run(str(FIX / "shp.jsonl"), "--columns", "oops")
    assert code == 2 and "expected NAME=COLUMN" in out
    code, out = _run(str(FIX / "shp.jsonl"), "--task", "nonsense")
    assert code == 2 and "--task must be one of" in out
    assert parse_columns("prompt=q, chosen = c") == {"prompt": "q", "chosen": "c"}


def test_inspect_with_a_real_tokenizer() -> None:
    if not STORIES.exists():
        pytest.skip(f"stories260K absent ({STORIES}); it lives in ../shared only")
    code, out = _run(str(FIX / "hh.jsonl"), "--tokenizer", str(STORIES))
    assert code == 0 and "lengths in tokens" in out
    assert "hh: a reply runs on into further turns (kept verbatim)" in out


def test_data_config_validation_and_load_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be below max_length"):
        DataConfig(train="x", max_length=16, max_prompt_length=16)
    with pytest.raises(ValueError, match="extra"):
        DataConfig(train="x", max_len=3)  # type: ignore[call-arg]
    assert "hub" in (DataConfig.model_fields["train"].description or "")

    cfg = DataConfig(train=str(FIX / "generic_ranked.jsonl"), validation_fraction=0.34)
    loaded = load_data(cfg, "preferences", seed=0)
    # 3 prompts → 2 for training, 1 held out, with all its pairs.
    assert len(loaded.train) + len(loaded.validation) == 11
    assert len({p.prompt for p in loaded.validation}) == 1
    assert not {p.prompt for p in loaded.train} & {p.prompt for p in loaded.validation}

    both = DataConfig(train=str(FIX / "shp.jsonl"), validation=str(FIX / "webgpt.jsonl"))
    loaded = load_data(both, "preferences")
    assert (len(loaded.train), len(loaded.validation)) == (3, 2)
    strict = DataConfig(train=str(FIX / "shp.jsonl"), min_score_ratio=2.0, format="shp")
    assert len(load_data(strict, "preferences").train) == 2
