"""`rlhfkit eval report` and `rlhfkit eval run` through the Typer app."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rlhfkit.eval.cli import app

runner = CliRunner()


def test_eval_report_rebuilds_from_files(tmp_path):
    from test_report import _fake_run

    _fake_run(tmp_path)
    result = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "again.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again.html").read_text().count("data:image/png;base64,") == 7


def test_eval_report_bad_dir_is_a_message_not_a_traceback(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "no such run directory" in result.output
    assert "Traceback" not in result.output


def test_eval_run_compares_two_saved_policies(tmp_path):
    from transformers import AutoTokenizer

    from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
    from rlhfkit.sim import make_world

    make_world(tmp_path / "w", seed=1, n_sft=5, n_sft_val=2, n_pref=5, n_pref_val=2,
               n_pref_test=2, n_ranked=2, n_ranked_test=2, n_prompts=4, n_eval_prompts=6,
               vocab_size=300)  # fmt: skip
    tok = AutoTokenizer.from_pretrained(tmp_path / "w" / "tokenizer")
    for name, seed in (("a", 0), ("b", 1)):
        save_tiny_model(
            build_tiny_model("gpt2", "micro", tokenizer=tok, seed=seed), tmp_path / name, tok
        )
    result = runner.invoke(app, [
        "run", "--policy", f"a={tmp_path / 'a'}", "--policy", f"b={tmp_path / 'b'}",
        "--prompts", str(tmp_path / "w" / "prompts" / "eval.jsonl"), "--ref", str(tmp_path / "a"),
        "--gold", "--max-new-tokens", "6", "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "eval_summary.json").read_text())
    assert summary["a"]["kl_to_ref"] == 0.0
    assert summary["b"]["win_rate_vs_a"]["n"] == 6
    assert len((tmp_path / "out" / "b.jsonl").read_text().splitlines()) == 6
    assert "win rate b vs a (gold)" in result.output

    bad = runner.invoke(app, ["run", "--policy", "nope", "--prompts", "x", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "expected NAME=DIR" in bad.output
