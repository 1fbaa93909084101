"""What a user gets wrong first with a real model, at the command line: one line naming the
setting, exit status 2, no run directory.

- a model, reward model, reference, critic or tokenizer folder that is not there (PPO, GRPO,
  DPO: every folder is checked before the run directory is made, not after the policy loaded);
- a model shorter than the sequences (PPO / GRPO: the longest prompt + `rollout.max_new_tokens`;
  DPO: `data.max_length`);
- a chat model's tokenizer without its chat template (SFT, RM, DPO, PPO), which would otherwise
  silently write prompts in the HH format.

(SFT and RM missing folders and `data.max_length` are in `test_hard_edges.py`.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.sim.tokenizer import train_tokenizer

runner = CliRunner()

WORDS = ("cat", "dog", "sun", "tree", "fish", "bird")
PAIRS = [{"prompt": f"say {w}", "chosen": f"{w} {w}.", "rejected": "no."} for w in WORDS]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real_errors")
    texts = [f"{p['prompt']} {p['chosen']} {p['rejected']}" for p in PAIRS]
    tok = train_tokenizer(texts * 5, vocab_size=300, min_frequency=1)
    base = save_tiny_model(build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0), root / "m", tok)
    # a chat model's tokenizer (ChatML turn tokens) whose folder lost its chat template
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = None
    chat = save_tiny_model(build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0), root / "c", tok)
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    sft = [{"prompt": p["prompt"], "response": p["chosen"]} for p in PAIRS]
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft))
    prompts = [{"prompt": p["prompt"]} for p in PAIRS]
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts))
    return {"base": base, "chat": chat, "root": root}


def _run(world: dict[str, Path], run: Path, command: str, *overrides: str):
    root = world["root"]
    if command in ("ppo", "grpo"):
        args = [
            f"policy.name_or_path={world['base']}",
            f"data.train={root / 'prompts.jsonl'}",
            "rollout_batch_size=2",
            "mini_batch_size=2",
            "iterations=1",
            "rollout.max_new_tokens=4",
            f"reward_model={world['base']}",
        ]
        if command == "grpo":
            args.append("group_size=2")
    else:
        data = {"sft": "sft.jsonl", "rm": "pairs.jsonl", "dpo": "pairs.jsonl"}[command]
        args = [
            f"model.name_or_path={world['base']}",
            f"data.train={root / data}",
            "data.max_length=32",
            "max_steps=1",
        ]
    args += [f"out_dir={run}", "engine.device=cpu", "engine.threads=1", *overrides]
    return runner.invoke(app, [command, *args], env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"})


def _assert_one_line(result, run: Path, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], result.output
    assert not run.exists()


MISSING = [
    ("ppo", "policy.name_or_path", "model"),
    ("ppo", "reward_model", "model"),
    ("ppo", "ref_policy", "model"),
    ("ppo", "critic.name_or_path", "model"),
    ("ppo", "reward_tokenizer", "tokenizer"),
    ("grpo", "policy.name_or_path", "model"),
    ("grpo", "reward_model", "model"),
    ("grpo", "ref_policy", "model"),
    ("dpo", "model.name_or_path", "model"),
    ("dpo", "ref_model", "model"),
    ("dpo", "tokenizer", "tokenizer"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("command", "key", "kind"), MISSING, ids=[f"{c}-{k}" for c, k, _ in MISSING]
)
def test_a_folder_that_is_not_there_is_one_line_naming_its_key(world, tmp_path, command, key, kind):
    result = _run(world, tmp_path / "run", command, f"{key}={tmp_path / 'nowhere'}")
    _assert_one_line(result, tmp_path / "run", f"{key}:", f"not a local {kind} folder")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["ppo", "grpo"])
def test_prompt_plus_reply_longer_than_the_model_is_one_line(world, tmp_path, command):
    result = _run(world, tmp_path / "run", command, "rollout.max_new_tokens=500")
    _assert_one_line(result, tmp_path / "run", "rollout.max_new_tokens", "at most 128 positions")


@pytest.mark.timeout(60)
def test_dpo_max_length_longer_than_the_model_is_one_line(world, tmp_path):
    result = _run(world, tmp_path / "run", "dpo", "data.max_length=4096")
    _assert_one_line(result, tmp_path / "run", "data.max_length=4096", "at most 128 positions")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["sft", "rm", "dpo", "ppo"])
def test_a_chat_tokenizer_without_its_chat_template_is_one_line(world, tmp_path, command):
    key = "policy.name_or_path" if command == "ppo" else "model.name_or_path"
    result = _run(world, tmp_path / "run", command, f"{key}={world['chat']}")
    _assert_one_line(
        result, tmp_path / "run", "<|im_start|>", "no chat template", "prompt_template=raw"
    )
