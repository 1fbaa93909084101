"""Bad input at every command: one clear line, a non-zero exit, nothing written, never a hang.

One test per bullet of issue 19: empty / whitespace-only / all-bad training files (`sft`, `rm`
hung forever when `max_steps` was set), missing model / tokenizer folders and unreachable hub
names, invalid optimiser settings, sequences longer than the model's positions, `data inspect`
exit status and lengths of unspaced scripts, `eval run` on an empty prompt file; and that
`RLHFKIT_DEBUG=1` brings the traceback back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.data import DataError, plan_steps
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.sim.tokenizer import train_tokenizer

runner = CliRunner()

PAIRS = [
    {"prompt": f"say {w}", "chosen": f"{w} {w}.", "rejected": "no."}
    for w in ("cat", "dog", "sun", "tree", "fish", "bird")
]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edges")
    texts = [f"{p['prompt']} {p['chosen']} {p['rejected']}" for p in PAIRS]
    tok = train_tokenizer(texts * 5, vocab_size=300, min_frequency=1)
    return save_tiny_model(build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0), root / "m", tok)


def _train(tmp_path: Path, command: str, base: Path, *overrides: str, env=None):
    args = [
        command,
        f"model.name_or_path={base}",
        f"out_dir={tmp_path / 'run'}",
        "engine.device=cpu",
        "engine.threads=1",
        "max_steps=3",  # with max_steps the old plan cycled empty epochs forever
        *overrides,
    ]
    return runner.invoke(app, args, env={"COLUMNS": "200", **(env or {})})


def _assert_one_clean_line(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    for needle in needles:
        assert needle in result.output, result.output


BAD_FILES = {
    "empty": ("", "no rows"),
    "whitespace": ("  \n\n\t \n", "no rows"),
    "all bad": ('{"prompt": "a"\n[1, 2]\n"text"\n', "invalid JSON"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["sft", "rm"])
@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_empty_or_bad_training_file_fails_fast_and_writes_nothing(tmp_path, base, command, kind):
    text, needle = BAD_FILES[kind]
    path = tmp_path / "train.jsonl"
    path.write_text(text)
    result = _train(tmp_path, command, base, f"data.train={path}")
    _assert_one_clean_line(result, "train.jsonl", needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(60)
def test_rows_dropped_by_an_option_leave_no_data_and_say_so(tmp_path, base):
    path = tmp_path / "shp.jsonl"
    row = {"history": "q", "human_ref_A": "a", "human_ref_B": "b", "labels": 1, "score_ratio": 1.1}
    path.write_text(json.dumps(row) + "\n")
    result = _train(tmp_path, "rm", base, f"data.train={path}", "data.min_score_ratio=2")
    _assert_one_clean_line(result, "dropped by reader options")


@pytest.mark.timeout(10)
def test_an_empty_epoch_ends_the_plan_instead_of_cycling_forever():
    with pytest.raises(DataError, match="no training batches"):
        plan_steps(lambda e: [], accum=1, world=1, epochs=1, max_steps=5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["sft", "rm"])
def test_missing_model_folder_is_one_line_naming_the_key(tmp_path, base, command):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    result = _train(
        tmp_path, command, tmp_path / "no-model", f"data.train={data}", "data.max_length=32"
    )
    _assert_one_clean_line(result, "model.name_or_path", "not a local model folder")
    assert not (tmp_path / "run").exists()
    result = _train(
        tmp_path, command, base, f"data.train={data}", f"tokenizer={tmp_path / 'no-tok'}"
    )
    _assert_one_clean_line(result, "tokenizer:", "not a local tokenizer folder")


@pytest.mark.timeout(30)
def test_a_hub_name_while_offline_fails_at_once(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    result = _train(
        tmp_path, "sft", "someone/some-model", f"data.train={data}", env={"HF_HUB_OFFLINE": "1"}
    )
    _assert_one_clean_line(result, "'someone/some-model' is not a local model folder", "offline")


def test_invalid_optimiser_settings_are_config_errors(tmp_path, base):
    for override, key in (
        ("optim.lr=-1", "optim.lr"),
        ("optim.eps=0", "optim.eps"),
        ("optim.betas=[0.9, 1.0]", "optim.betas"),
        ("optim.warmup_steps=-3", "optim.warmup_steps"),
        ("optim.max_grad_norm=-1", "optim.max_grad_norm"),
    ):
        result = _train(tmp_path, "sft", base, "data.train=x.jsonl", override)
        _assert_one_clean_line(result, "config error", key)


@pytest.mark.timeout(60)
def test_a_model_shorter_than_max_length_is_a_config_error(tmp_path, base):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    result = _train(tmp_path, "rm", base, f"data.train={data}", "data.max_length=4096")
    _assert_one_clean_line(result, "data.max_length=4096", "at most 128 positions")
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(60)
def test_rlhfkit_debug_shows_the_traceback(tmp_path, base):
    path = tmp_path / "train.jsonl"
    path.write_text("")
    result = _train(tmp_path, "sft", base, f"data.train={path}", env={"RLHFKIT_DEBUG": "1"})
    assert isinstance(result.exception, DataError), result.output


# ---------------------------------------------------------------------------- data inspect


def _inspect(*args: str):
    return runner.invoke(app, ["data", "inspect", *args], env={"COLUMNS": "200"})


def test_inspect_exits_non_zero_on_problems_or_no_records(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    assert _inspect(str(good)).exit_code == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n{broken\n")
    result = _inspect(str(bad))
    assert result.exit_code == 1 and "bad.jsonl:2: <json>" in result.output
    assert _inspect(str(bad), "--report-only").exit_code == 0
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    result = _inspect(str(empty))
    assert result.exit_code == 1 and "no records" in result.output
    assert "no problems found" not in result.output


def test_inspect_counts_characters_for_chinese(tmp_path):
    path = tmp_path / "zh.jsonl"
    row = {"prompt": "中国的首都是哪里？", "chosen": "北京。", "rejected": "上海。"}
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n")
    result = _inspect(str(path))
    assert result.exit_code == 0, result.output
    assert "lengths in characters" in result.output
    # 9 characters in the prompt, 3 in each reply
    assert "│ prompt              │ 9   │ 9.0  │ 9      │ 9   │ 9   │" in result.output


# ---------------------------------------------------------------------------- eval run


def test_eval_run_on_an_empty_prompt_file_is_one_line(tmp_path, base):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n")
    result = runner.invoke(
        app,
        ["eval", "run", "--policy", f"a={base}", "--prompts", str(prompts), "--out", "o"],
        env={"COLUMNS": "200"},
    )
    _assert_one_clean_line(result, "p.jsonl: no prompts", "no rows")


# ---------------------------------------------------------------------------- sim


def test_sim_commands_report_bad_input_in_one_line(tmp_path, base):
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b'{"prompt": "x"}\n\xff\xfe\n')
    result = runner.invoke(app, ["sim", "score", "-i", str(binary)])
    assert result.exit_code == 2 and "bin.jsonl:2" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    args = ["sim", "collect", "--world", str(tmp_path / "no-world"), "--policy", str(base)]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "o.jsonl")])
    _assert_one_clean_line(result, "no-world")
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "o.jsonl"), "-k", "1"])
    _assert_one_clean_line(result, "-k must be at least 2")
