"""Best-of-n: selection rule against a naive max, weighted scores, the three output files read
back by the project's readers, the analytic KL, the command, and the demo's ceiling table
running on this sampler."""

from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch

from rlhfkit.algos.bon import (
    BoNConfig,
    pick_best,
    pick_worst,
    sample_candidates,
    weighted,
)
from rlhfkit.core import best_of_n_kl
from rlhfkit.data import read_preferences, read_sft
from rlhfkit.eval import ceiling
from rlhfkit.models import ModelConfig, build_scalar_model, load_policy
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.rollout import CallableScorer, RewardModelScorer, RolloutConfig
from rlhfkit.sim.tokenizer import train_tokenizer
from rlhfkit.types import Message, PromptRecord, user

WORDS = ["cat", "dog", "sun", "tree", "fish", "bird", "moon", "star"]


def count_a(prompts, replies):
    """A computable reward: how many letters "a" the reply has."""
    return [float(r.count("a")) for r in replies]


def length_penalty(prompts, replies):
    return [-0.1 * len(r) for r in replies]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("bon")
    texts = [f"is it a {w}? it is a {w}, yes. no." for w in WORDS]
    tok = train_tokenizer(texts * 5, vocab_size=300, min_frequency=1)
    base = save_tiny_model(build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0), root / "p", tok)
    rows = [{"prompt": f"is it a {w}?"} for w in WORDS]
    rows.append({"prompt": [{"role": "user", "content": "hi"},
                            {"role": "assistant", "content": "hello"},
                            {"role": "user", "content": "is it a cat?"}]})  # fmt: skip
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    module = types.ModuleType("bon_test_rewards")
    module.count_a, module.length_penalty = count_a, length_penalty
    sys.modules["bon_test_rewards"] = module
    return root, base, tok


def test_pick_rules_and_kl():
    assert pick_best([1.0, 3.0, 3.0, 0.0]) == 1  # ties: the earliest
    assert pick_best([1.0, 3.0, 3.0, 0.0], n=1) == 0
    assert pick_worst([1.0, 0.0, 3.0, 0.0]) == 1
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75, abs=1e-15)
    assert best_of_n_kl(16) == pytest.approx(1.8350887222397811, abs=1e-12)
    w = weighted({"a": [[1.0, 2.0]], "b": [[10.0, 0.0]]}, {"a": 2.0, "b": -0.5})
    assert w == [[2.0 - 5.0, 4.0]]


def test_candidates_are_reproducible_and_scored(assets):
    root, base, tok = assets
    policy = load_policy(ModelConfig(name_or_path=str(base)))
    records = [PromptRecord(user(f"is it a {w}?")) for w in WORDS[:3]]
    cfg = RolloutConfig(max_new_tokens=8, batch_size=5)  # batches cut across prompts
    rm = build_scalar_model(ModelConfig(name_or_path=str(base))).eval()
    scorers = {"a": CallableScorer(count_a), "rm": RewardModelScorer(rm)}
    one = sample_candidates(policy, tok, records, cfg, 4, 7, scorers)
    two = sample_candidates(policy, tok, records, cfg, 4, 7, scorers)
    assert one.replies == two.replies and len(one.replies[0]) == 4
    assert len({r for rs in one.replies for r in rs}) > 4  # the samples differ
    for i, replies in enumerate(one.replies):
        assert one.scores["a"][i] == count_a(None, replies)
        assert all(math.isfinite(x) for x in one.scores["rm"][i])


def test_command_writes_three_files_the_readers_read(assets):
    root, base, tok = assets
    from typer.testing import CliRunner

    from rlhfkit.cli import app

    out = root / "run"
    args = [
        "bon", f"out_dir={out}", f"model.name_or_path={base}", f"prompts={root / 'prompts.jsonl'}",
        "n=6", "rollout.max_new_tokens=10",
        "reward_fns=[bon_test_rewards:count_a, bon_test_rewards:length_penalty]",
        "weights=[1.0, 0.5]", "engine.device=cpu", "engine.threads=1",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kl_bound"] == pytest.approx(math.log(6) - 5 / 6)
    assert summary["n"] == 6 and summary["prompts"] == len(WORDS) + 1
    best = [json.loads(line) for line in (out / "best.jsonl").read_text().splitlines()]
    for row in best:
        sel = [a + 0.5 * b for a, b in zip(*row["scores"].values(), strict=True)]
        assert row["selection"] == pytest.approx(sel)
        assert row["best"] == max(range(6), key=lambda i: (sel[i], -i))  # naive argmax
        assert row["response"] == row["replies"][row["best"]]
    assert summary["selection_best_mean"] >= summary["selection_sample_mean"]
    sft = read_sft(out / "rft.jsonl").records
    assert [r.response for r in sft] == [row["response"] for row in best if row["response"]]
    assert sft[-1].prompt[0] == Message("user", "hi") and len(sft[-1].prompt) == 3
    pairs = read_preferences(out / "pairs.jsonl").records
    assert 0 < len(pairs) <= len(best)
    for p in pairs:
        row = next(r for r in best if r["response"] == p.chosen)
        assert p.rejected in row["replies"]


def test_ceiling_samples_through_best_of_n(assets, monkeypatch):
    """The demo's ceiling table draws its candidates from `algos.bon.sample_candidates`."""
    root, base, tok = assets
    policy = load_policy(ModelConfig(name_or_path=str(base)))
    records = [PromptRecord(user(f"is it a {w}?")) for w in WORDS[:3]]
    cfg = RolloutConfig(max_new_tokens=8, batch_size=64)
    calls = []
    real = ceiling.bon.sample_candidates
    monkeypatch.setattr(
        ceiling.bon, "sample_candidates", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    gold, rm = ceiling.sample_candidates(policy, tok, records, cfg, 3, 11, count_a)
    direct = real(policy, tok, records, cfg, 3, 11, {"g": CallableScorer(count_a)})
    assert calls and rm is None and gold == direct.scores["g"]
    assert torch.is_tensor(torch.tensor(gold)) and len(gold[0]) == 3


def test_preset_validates():
    from rlhfkit.config import load_config

    cfg = load_config(BoNConfig, preset="bon_sim")
    assert cfg.reward_model and cfg.prompts and cfg.n == 4
    with pytest.raises(ValueError, match="reward_model"):
        BoNConfig(prompts="x")
