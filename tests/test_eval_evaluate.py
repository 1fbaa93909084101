"""evaluate_policy / compare_policies on a tiny random model and a tiny simulated world."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from rlhfkit.data import encode_prompts, read_prompts
from rlhfkit.eval.evaluate import compare_policies, evaluate_policy
from rlhfkit.eval.judges import gold_judge
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.rollout import RolloutConfig
from rlhfkit.sim import make_world

SMALL = dict(
    n_sft=20, n_sft_val=5, n_pref=20, n_pref_val=5, n_pref_test=5, n_ranked=3, n_ranked_test=3,
    n_prompts=8, n_eval_prompts=10, vocab_size=400,
)  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    make_world(root, seed=3, **SMALL)
    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    prompts = read_prompts(root / "prompts" / "eval.jsonl").records
    policy = build_tiny_model("gpt2", "micro", tokenizer=tok, seed=1).train()
    ref = build_tiny_model("gpt2", "micro", tokenizer=tok, seed=2).train()
    return tok, prompts, policy, ref


class CountingRM:
    """A reward 'model' whose score is the number of real tokens: an oracle for the wiring."""

    def score(self, input_ids, attention_mask):
        return attention_mask.float().sum(dim=1)


def _naive_logprob_sum(model, prompt_ids, response_ids):
    """Σ log p(response | prompt) from one unpadded forward pass per sequence."""
    ids = torch.tensor([prompt_ids + response_ids])
    model.eval()  # no dropout
    logits = model(input_ids=ids).logits[0].double().log_softmax(-1)
    p = len(prompt_ids)
    return sum(float(logits[p + t - 1, tok]) for t, tok in enumerate(response_ids))


def test_evaluate_policy_measures_what_it_says(world):
    tok, prompts, policy, ref = world
    cfg = RolloutConfig(max_new_tokens=12, temperature=1.0, batch_size=4)
    res = evaluate_policy(
        policy, tok, prompts, cfg, seed=0, ref_policy=ref, reward_model=CountingRM(), gold=True
    )
    assert len(res.replies) == len(prompts) == 10
    assert res.gold == gold_judge([p.prompt for p in prompts], res.replies)
    encoded = encode_prompts(tok, prompts, 256)
    assert policy.training and ref.training  # the caller's train/eval mode is restored
    assert all(n <= 12 for n in res.n_tokens)
    # the counting RM saw prompt + response tokens (EOS included)
    assert res.rm_scores == [
        float(len(e.input_ids) + n) for e, n in zip(encoded, res.n_tokens, strict=True)
    ]
    s = res.summary()
    assert s["gold_mean"] == pytest.approx(sum(res.gold) / 10)
    assert set(s["per_family"]) == set(res.families)
    assert 0.0 <= s["over_refusal_rate"] <= 1.0
    assert len(res.rows()) == 10 and res.rows()[0]["prompt"] == prompts[0].prompt[-1].content


def test_kl_matches_unpadded_naive_computation(world):
    tok, prompts, policy, ref = world
    # stop strings give replies of different lengths, so padding sits inside the batch
    cfg = RolloutConfig(max_new_tokens=8, temperature=1.0, batch_size=5, stop_strings=["e", "a"])
    res = evaluate_policy(
        policy, tok, prompts, cfg, seed=4, ref_policy=ref, reward_model=CountingRM()
    )
    encoded = encode_prompts(tok, prompts, 256)
    # regenerate the same samples to get their ids: same seed, same batches → same tokens
    from rlhfkit.data import collate_prompts
    from rlhfkit.rollout import generate

    g = torch.Generator().manual_seed(4)
    policy.eval()
    ref.eval()
    checked = 0
    for start in range(0, 10, 5):
        batch = collate_prompts(encoded[start : start + 5], tok.pad_token_id)
        out = generate(
            policy,
            batch["input_ids"],
            batch["attention_mask"],
            cfg,
            g,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tokenizer=tok,
            keep_logprobs=False,
        )
        for b in range(out.response_ids.shape[0]):
            i = start + b
            resp = out.response_ids[b][out.response_mask[b]].tolist()
            assert len(resp) == res.n_tokens[i]
            with torch.no_grad():
                naive = _naive_logprob_sum(policy, encoded[i].input_ids, resp) - _naive_logprob_sum(
                    ref, encoded[i].input_ids, resp
                )
            assert res.kl[i] == pytest.approx(naive, abs=1e-4)
            checked += 1
    assert checked == 10
    assert len(set(res.n_tokens)) > 2
    policy.train()
    ref.train()


def test_self_comparison_is_all_ties_and_reference_kl_is_zero(world):
    tok, prompts, policy, _ = world
    cfg = RolloutConfig(max_new_tokens=6, batch_size=10)
    a = evaluate_policy(policy, tok, prompts, cfg, seed=7, ref_policy=policy, gold=True, name="a")
    b = evaluate_policy(policy, tok, prompts, cfg, seed=7, gold=True, name="b")
    assert a.replies == b.replies  # reproducible from the seed
    assert a.kl == [0.0] * 10
    wr = compare_policies(a, b)
    assert (wr.rate, wr.ties) == (0.5, 10)
    # a pairwise judge that prefers the shorter reply, asked both ways, also sees ties
    wr = compare_policies(a, b, judge=lambda x, r1, r2: 1.0 if len(r1) < len(r2) else 0.0)
    assert wr.rate == 0.5
    with pytest.raises(ValueError, match="different prompts"):
        compare_policies(a, evaluate_policy(policy, tok, prompts[:3], cfg))
