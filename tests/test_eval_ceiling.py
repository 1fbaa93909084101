"""Best-of-n ceilings (`rlhfkit.eval.ceiling`).

Oracles: the KL bound's closed form; a naive loop from the definition for the selection and the
win rates; invariants (the gold oracle never loses to RM selection; it never gets worse with n).
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from rlhfkit.eval.ceiling import (
    best_of_n_kl_bound,
    ceiling_rows,
    row_near_kl,
    sample_candidates,
)
from rlhfkit.models import ModelConfig, build_scalar_model, load_policy, load_reward_model
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.rollout import RolloutConfig
from rlhfkit.sim.tokenizer import train_tokenizer
from rlhfkit.types import PromptRecord, user


def test_kl_bound_closed_form():
    assert best_of_n_kl_bound(1) == 0.0
    assert best_of_n_kl_bound(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl_bound(7) == pytest.approx(math.log(7) - 6 / 7)
    with pytest.raises(ValueError, match="n must be"):
        best_of_n_kl_bound(0)


def _naive(gold, rm, ref, n):
    oracle_out, rm_out, oracle_gold, rm_gold = [], [], [], []
    for g, r, s in zip(gold, rm, ref, strict=True):
        best_gold = max(g[:n])
        pick = 0
        for i in range(1, n):  # first index of the highest RM score
            if r[i] > r[pick]:
                pick = i
        for value, outs, golds in (
            (best_gold, oracle_out, oracle_gold),
            (g[pick], rm_out, rm_gold),
        ):
            outs.append(1.0 if value > s else 0.0 if value < s else 0.5)
            golds.append(value)
    return oracle_out, rm_out, sum(oracle_gold) / len(gold), sum(rm_gold) / len(gold)


def test_rows_equal_the_definition_on_random_scores():
    rng = random.Random(0)
    levels = [-1.0, 0.0, 0.5, 1.0]  # discrete, like the gold scorer: ties happen
    gold = [[rng.choice(levels) for _ in range(8)] for _ in range(300)]
    rm = [[rng.choice([0.1, 0.2, 0.3]) for _ in range(8)] for _ in range(300)]  # RM ties too
    ref = [rng.choice(levels) for _ in range(300)]
    rows = ceiling_rows(gold, ref, [4, 1, 8, 2], rm)
    assert [r.n for r in rows] == [1, 2, 4, 8]
    for row in rows:
        oracle_out, rm_out, oracle_mean, rm_mean = _naive(gold, rm, ref, row.n)
        assert row.oracle.rate == pytest.approx(sum(oracle_out) / 300)
        assert (row.oracle.wins, row.oracle.ties) == (oracle_out.count(1.0), oracle_out.count(0.5))
        assert row.rm.rate == pytest.approx(sum(rm_out) / 300)
        assert (row.rm.wins, row.rm.losses) == (rm_out.count(1.0), rm_out.count(0.0))
        assert row.oracle_gold_mean == pytest.approx(oracle_mean)
        assert row.rm_gold_mean == pytest.approx(rm_mean)
        assert row.kl_bound == best_of_n_kl_bound(row.n)
    # invariants: n = 1 is one plain sample either way; the oracle never loses to the RM and
    # never gets worse with more candidates
    assert rows[0].oracle.rate == rows[0].rm.rate
    assert all(r.oracle.rate >= r.rm.rate for r in rows)
    assert all(a.oracle.rate <= b.oracle.rate for a, b in zip(rows, rows[1:], strict=False))


def test_rows_without_rm_and_bad_input():
    (row,) = ceiling_rows([[0.0, 1.0]], [0.5], [2])
    assert row.rm is None and row.oracle.wins == 1 and row.as_dict()["rm"] is None
    with pytest.raises(ValueError, match="n=3 needs 3 candidates"):
        ceiling_rows([[0.0, 1.0]], [0.5], [3])
    with pytest.raises(ValueError, match="2 prompts with candidates, 1 reference"):
        ceiling_rows([[0.0], [1.0]], [0.5], [1])


def test_row_near_kl():
    rows = [r.as_dict() for r in ceiling_rows([[0.0] * 16], [0.0], [2, 4, 7, 16])]
    assert row_near_kl(rows, 1.03)["n"] == 7
    assert row_near_kl(rows, 0.0)["n"] == 2
    with pytest.raises(ValueError):
        row_near_kl([], 1.0)


def test_sample_candidates_shapes_order_and_seed(tmp_path):
    tok = train_tokenizer(["the cat sat on the mat", "a dog ran far"] * 20, vocab_size=120)
    folder = save_tiny_model(
        build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0), tmp_path / "m", tok
    )
    policy = load_policy(ModelConfig(name_or_path=str(folder)))
    build_scalar_model(ModelConfig(name_or_path=str(folder))).save(tmp_path / "rm", tok)
    rm = load_reward_model(tmp_path / "rm")
    records = [PromptRecord(user(t)) for t in ("the cat", "a dog", "the mat")]
    seen = []

    def gold(prompts, replies):
        seen.extend(prompts)
        return [float(len(r)) for r in replies]

    cfg = RolloutConfig(max_new_tokens=6, temperature=1.0, batch_size=4)
    g1, r1 = sample_candidates(policy, tok, records, cfg, 5, 3, gold, rm)
    assert [len(x) for x in g1] == [5, 5, 5] and [len(x) for x in r1] == [5, 5, 5]
    assert seen == [rec.prompt for rec in records for _ in range(5)]  # prompt-major order
    g2, r2 = sample_candidates(policy, tok, records, cfg, 5, 3, gold, rm)
    assert g1 == g2 and r1 == r2  # reproducible from the seed
    g3, _ = sample_candidates(policy, tok, records, cfg, 5, 4, gold, None)
    assert g3 != g1
    assert all(torch.isfinite(torch.tensor(r)).all() for r in r1)
