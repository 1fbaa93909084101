"""What the environment benchmarks decide before any model runs: `benchmarks/env_sim.py`'s
game figures from held-out transcripts (success, turns, turns-to-success and their intervals)
and `benchmarks/real/env_smollm2.py`'s problems (the no-tool GRPO baseline's, with answers)."""

from __future__ import annotations

import json

import pytest

from benchmarks import env_sim
from benchmarks.real import env_smollm2, grpo_smollm2


def test_game_figures_from_transcripts(tmp_path):
    """Four games, cap 6: won in 2 and 4 turns, two misses. Success 2/4 (Wilson by hand),
    turns (2 + 4 + 6 + 6)/4 = 4.5, turns-to-success (2 + 4)/2 = 3."""
    rows = [{"end": "done", "turns": 2}, {"end": "turn_cap", "turns": 6},
            {"end": "done", "turns": 4}, {"end": "length", "turns": 3}]  # fmt: skip
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = env_sim.game_figures(path, max_turns=6)
    z, n, p = 1.96, 4, 0.5
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    assert got["success"] == 0.5 and got["n"] == 4
    assert got["success_ci"] == [round(centre - half, 4), round(centre + half, 4)]
    assert got["turns"] == 4.5 and got["turns_to_success"] == 3.0
    assert got["turns_to_success_ci"] == [2.0, 4.0]  # resamples of {2, 4}: means 2, 3 or 4


def test_bootstrap_interval_matches_the_normal_one_on_a_large_sample():
    """Half zeros, half ones, n = 400: the mean's 95 % interval is 0.5 ± 1.96 · 0.5 / 20."""
    assert env_sim.bootstrap_ci([3.0] * 10) == [3.0, 3.0]
    assert env_sim.bootstrap_ci([]) == []
    low, high = env_sim.bootstrap_ci([0.0, 1.0] * 200)
    half = 1.96 * 0.5 / 20
    assert low == pytest.approx(0.5 - half, abs=0.006)
    assert high == pytest.approx(0.5 + half, abs=0.006)


def test_the_calculator_benchmark_uses_the_no_tool_baselines_problems(tmp_path):
    train, held_file, held = env_smollm2.write_problems(tmp_path / "calc", 512, 64)
    base_train, base_held, base = grpo_smollm2.write_problems(tmp_path / "base", 512, 64)
    assert held == base
    for mine, theirs in ((train, base_train), (held_file, base_held)):
        rows = [json.loads(x) for x in mine.read_text().splitlines()]
        assert [r["prompt"] for r in rows] == [
            json.loads(x)["prompt"] for x in theirs.read_text().splitlines()
        ]
        for r in rows:
            _, _, a, op, b = r["prompt"].rstrip("?").split()
            assert r["meta"]["answer"] == grpo_smollm2.OPS[op](int(a), int(b))
