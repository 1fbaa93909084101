"""What the SmolLM2 benchmarks (`benchmarks/real/`) decide before any model runs: the arithmetic
problems GRPO trains and is judged on, and the fixed HH split by dialogue. Neither needs the
model; the split needs the real HH-RLHF file of the developers' data folder (skipped without
it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.real import grpo_smollm2, realdata
from rlhfkit.sim.rewards import arithmetic_exact_match
from rlhfkit.types import Message, PromptRecord


def test_held_out_problems_are_new_and_the_same_from_the_same_seed(tmp_path):
    train, held_file, held = grpo_smollm2.write_problems(tmp_path, 400, 64)
    train_rows = [json.loads(x)["prompt"] for x in train.read_text().splitlines()]
    held_rows = [json.loads(x)["prompt"] for x in held_file.read_text().splitlines()]
    assert len(train_rows) == 400 and len(held_rows) == 64
    assert len(set(train_rows)) == 400 and len(set(held_rows)) == 64  # no repeats either
    assert not set(train_rows) & set(held_rows)
    again = grpo_smollm2.write_problems(tmp_path / "again", 400, 64)
    assert again[0].read_text() == train.read_text() and again[2] == held


def test_every_problem_is_scored_by_the_exact_match_reward():
    """The world's parser reads each question; the right answer scores 1, one off scores 0."""
    for op, a, b in grpo_smollm2.problems(2, 200, set()):
        answer = grpo_smollm2.OPS[op](a, b)
        assert answer > 0
        rec = PromptRecord((Message("user", f"What is {a} {op} {b}?"),))
        right = f"{a} {op} {b} is {answer}."
        wrong = f"The answer is {answer + 1}."
        assert arithmetic_exact_match(["p", "p"], [right, wrong], [rec, rec]) == [1.0, 0.0]


@pytest.mark.skipif(not realdata.HH.is_file(), reason="needs ../shared/data/hh-rlhf")
def test_the_hh_split_keeps_dialogues_apart_and_a_smaller_run_is_a_prefix(tmp_path):
    train, held, counts = realdata.hh_split(tmp_path)
    assert counts["train_pairs"] + counts["held_out_pairs"] == counts["pairs_read"] == 1132

    def dialogues(path: Path) -> list[str]:
        return [json.dumps(json.loads(x)["prompt"]) for x in path.read_text().splitlines()]

    assert not set(dialogues(train)) & set(dialogues(held))
    small_train, small_held, _ = realdata.hh_split(tmp_path, 32, 16)
    assert small_train.parent != train.parent  # never rewrites a file another run reads
    assert small_train.read_text().splitlines() == train.read_text().splitlines()[:32]
    assert small_held.read_text().splitlines() == held.read_text().splitlines()[:16]
