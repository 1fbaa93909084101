"""Rollout engine: sampling, stopping, log-probs reused from sampling, scoring placement, scorers,
and the LoRA reference (adapters disabled) — each against a naive oracle on tiny models."""

from __future__ import annotations

import copy
import operator

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from rlhfkit.core import gather_logprobs
from rlhfkit.models import ScalarModel
from rlhfkit.rollout import (
    CallableScorer,
    RetokenizingRewardModelScorer,
    Reward,
    RewardModelScorer,
    Rollout,
    RolloutConfig,
    generate,
    import_callable,
    make_experience,
    response_logprobs,
    trim_padding,
)
from rlhfkit.rollout.generate import _filter_logits, sample_rows

VOCAB, EOS, PAD = 12, 0, 1


def tiny_lm(seed: int = 0, vocab: int = VOCAB) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return GPT2LMHeadModel(cfg).eval()


def tiny_rm(seed: int = 1, vocab: int = VOCAB) -> GPT2ForSequenceClassification:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        num_labels=1,
        pad_token_id=PAD,
    )
    return GPT2ForSequenceClassification(cfg).eval()


def left_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = True
    return ids, mask


PROMPTS = [[3, 4, 5], [6, 7, 8, 9, 10], [2, 3], [11, 5, 6, 7]]


def naive_logprobs(model, prompt: list[int], response: list[int], temperature: float):
    """Unpadded full forward of one sequence; log-softmax(logits / T) of each response token."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(ids).logits[0].float() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    p = len(prompt)
    return torch.stack([logp[p - 1 + t, tok] for t, tok in enumerate(response)])


def test_sampling_logprobs_equal_full_forward_of_each_unpadded_row():
    policy = tiny_lm()
    ids, mask = left_padded(PROMPTS)
    cfg = RolloutConfig(max_new_tokens=10, temperature=0.7)
    out = generate(
        policy, ids, mask, cfg, torch.Generator().manual_seed(0), eos_token_id=EOS, pad_token_id=PAD
    )
    assert out.logprobs is not None
    for b, prompt in enumerate(PROMPTS):
        n = int(out.response_mask[b].sum())
        response = out.response_ids[b, :n].tolist()
        expected = naive_logprobs(policy, prompt, response, 0.7)
        torch.testing.assert_close(out.logprobs[b, :n], expected, rtol=0, atol=2e-5)
        assert (out.logprobs[b, n:] == 0).all()
    # the batched padded forward used in training agrees with sampling too
    full, _ = response_logprobs(policy, out.input_ids, out.attention_mask, out.prompt_len, 0.7)
    valid = out.response_mask
    torch.testing.assert_close(full[valid], out.logprobs[valid], rtol=0, atol=2e-5)


def test_responses_stop_after_first_eos_and_mask_is_a_prefix():
    policy = tiny_lm(seed=3, vocab=4)  # 4 tokens: EOS comes often
    ids, mask = left_padded([[2, 3], [3, 2, 2], [2], [3, 3, 3, 3]] * 4)
    cfg = RolloutConfig(max_new_tokens=6, temperature=1.0)
    out = generate(
        policy, ids, mask, cfg, torch.Generator().manual_seed(1), eos_token_id=EOS, pad_token_id=PAD
    )
    seen_eos = seen_truncated = False
    for ids_row, mask_row in zip(out.response_ids, out.response_mask, strict=True):
        n = int(mask_row.sum())
        assert mask_row[:n].all() and not mask_row[n:].any()  # valid tokens form a prefix
        assert (ids_row[n:] == PAD).all()
        eos_at = (ids_row[:n] == EOS).nonzero().flatten().tolist()
        if eos_at:
            assert eos_at == [n - 1]  # exactly one EOS, the last valid token
            seen_eos = True
        else:
            assert n == cfg.max_new_tokens  # no EOS: the response ran to the budget
            seen_truncated = True
    assert seen_eos and seen_truncated
    assert out.response_ids.shape[1] <= cfg.max_new_tokens


def test_generation_is_reproducible_from_the_generator_state():
    policy = tiny_lm()
    ids, mask = left_padded(PROMPTS)
    cfg = RolloutConfig(max_new_tokens=8, temperature=1.3, top_k=5, top_p=0.9)
    a = generate(
        policy, ids, mask, cfg, torch.Generator().manual_seed(7), eos_token_id=EOS, pad_token_id=PAD
    )
    b = generate(
        policy, ids, mask, cfg, torch.Generator().manual_seed(7), eos_token_id=EOS, pad_token_id=PAD
    )
    assert torch.equal(a.response_ids, b.response_ids)


def test_inverse_cdf_sampler_matches_softmax_frequencies():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -torch.inf]])
    n = 60_000
    u = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    draws = sample_rows(logits.expand(n, -1), u)
    freq = torch.bincount(draws, minlength=5).double() / n
    p = torch.softmax(logits[0].double(), dim=0)
    # 5 standard errors of a binomial proportion
    tol = 5 * torch.sqrt(p * (1 - p) / n) + 1e-12
    assert ((freq - p).abs() <= tol).all(), (freq, p)
    assert freq[4] == 0


def test_top_k_top_p_filter_matches_definition():
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0, 1.0, 0.5]])
    out = _filter_logits(logits, top_k=3, top_p=1.0)
    assert torch.isinf(out).sum() == 3 and set(
        torch.isfinite(out[0]).nonzero().flatten().tolist()
    ) == {1, 2, 4}
    # nucleus: smallest set of most likely tokens whose mass reaches top_p
    p = torch.softmax(logits[0], dim=0)
    order = torch.argsort(p, descending=True).tolist()
    top_p = 0.8
    kept, mass = [], 0.0
    for i in order:
        kept.append(i)
        mass += float(p[i])
        if mass >= top_p:
            break
    out = _filter_logits(logits, top_k=0, top_p=top_p)
    assert set(torch.isfinite(out[0]).nonzero().flatten().tolist()) == set(kept)


def test_stop_strings_end_a_response():
    class Decoder:
        def batch_decode(self, ids, skip_special_tokens=True):
            return ["".join("x" if t == 5 else "." for t in row.tolist()) for row in ids]

    policy = tiny_lm(seed=5, vocab=7)
    ids, mask = left_padded([[2, 3]] * 16)
    cfg = RolloutConfig(max_new_tokens=12, stop_strings=["x"])
    out = generate(
        policy,
        ids,
        mask,
        cfg,
        torch.Generator().manual_seed(0),
        eos_token_id=EOS,
        pad_token_id=PAD,
        tokenizer=Decoder(),
    )
    stopped = 0
    for ids_row, mask_row in zip(out.response_ids, out.response_mask, strict=True):
        valid = ids_row[mask_row].tolist()
        if 5 in valid:
            assert valid.index(5) == len(valid) - 1  # the stop token is the last valid token
            stopped += 1
    assert stopped > 0


def test_trim_padding_drops_only_all_padding_columns():
    ids = torch.arange(2 * 7).view(2, 7)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    t_ids, t_mask, p = trim_padding(ids, mask, prompt_len=4)
    assert p == 3 and torch.equal(t_ids, ids[:, 1:6]) and torch.equal(t_mask, mask[:, 1:6])


# -- score placement ------------------------------------------------------------------------------


def naive_score(rm, tokens: list[int]) -> float:
    with torch.no_grad():
        hidden = rm.transformer(torch.tensor([tokens])).last_hidden_state
        return float(rm.score(hidden[0, -1]))


def padded_rollout(prompts: list[list[int]], responses: list[list[int]], pad_side: str) -> Rollout:
    """Left-padded prompts and responses padded on `pad_side` ("right" or "left")."""
    width = max(map(len, responses))
    p_ids, p_mask = left_padded(prompts)
    r_ids = torch.full((len(responses), width), PAD)
    r_mask = torch.zeros((len(responses), width), dtype=torch.bool)
    for i, r in enumerate(responses):
        sl = slice(0, len(r)) if pad_side == "right" else slice(width - len(r), width)
        r_ids[i, sl] = torch.tensor(r)
        r_mask[i, sl] = True
    return Rollout(p_ids, p_mask, r_ids, r_mask)


@pytest.mark.parametrize("response_pad_side", ["right", "left"])
def test_reward_model_score_lands_on_the_last_real_token(response_pad_side):
    rm = tiny_rm()
    prompts = [[3, 4, 5], [6, 7], [2, 3, 4, 5]]
    # row 0 ends with EOS; row 1 is truncated without EOS; row 2 is short with EOS then padding
    responses = [[8, 9, EOS], [10, 11, 9, 8, 7], [4, EOS]]
    rollout = padded_rollout(prompts, responses, response_pad_side)
    scores = RewardModelScorer(rm)(["?"] * 3, ["?"] * 3, rollout)
    expected = torch.tensor(
        [naive_score(rm, p + r) for p, r in zip(prompts, responses, strict=True)]
    )
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("template", ["chat", "raw"])
def test_retokenizing_scorer_encodes_like_the_rm_trainer_and_scores_at_eos(template):
    """A reward model with its own tokenizer sees each (dialogue, reply) exactly as its trainer
    encoded the chosen reply of a pair (its template, reply + EOS), and scores it there."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rlhfkit.data import encode_pairs
    from rlhfkit.types import PreferencePair, PromptRecord, user

    vocab = {"<eos>": EOS, "<pad>": PAD, **{f"w{i}": i for i in range(2, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    rm = tiny_rm()
    records = [PromptRecord(user("w3 w4 w5")), PromptRecord(user("w6 w7"))]
    replies = ["w8 w9", "w10 w11 w9"]
    scorer = RetokenizingRewardModelScorer(rm, hf_tok, template=template)
    scores = scorer(["ignored"] * 2, replies, None, records)
    for b, (rec, reply) in enumerate(zip(records, replies, strict=True)):
        (pair,) = encode_pairs(
            hf_tok, [PreferencePair(rec.prompt, reply, "w2")], 64, template=template
        )
        assert scorer.encode(rec, reply) == pair.chosen_ids
        assert pair.chosen_ids[-1] == EOS
        assert scores[b].item() == pytest.approx(naive_score(rm, pair.chosen_ids), abs=1e-5)
    if template == "raw":  # plain ids: prompt words, reply words, EOS
        assert scorer.encode(records[0], replies[0]) == [3, 4, 5, 8, 9, EOS]


def test_retokenizing_scorer_truncates_like_the_rm_trainer_keeping_bos():
    """With a tokenizer that writes a BOS and a `max_length` shorter than prompt + reply, the
    scorer's ids are exactly `data.encode_pairs`'s chosen ids (the RM trainer's): BOS kept first,
    the prompt cut from the left, a long reply cut at its right end (no EOS), and the score is
    read on those ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from rlhfkit.data import encode_pairs
    from rlhfkit.types import PreferencePair, PromptRecord, user

    words = ["Human", "Assistant", ":"] + [f"w{i}" for i in range(20)]
    vocab = {"<eos>": 0, "<pad>": 1, "<bos>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 2)]
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    rm = tiny_rm(vocab=len(vocab))
    record = PromptRecord(user(" ".join(f"w{i}" for i in range(12))))
    short, long = "w13 w14 w15", " ".join(f"w{i}" for i in range(2, 16))
    max_length = 12
    scorer = RetokenizingRewardModelScorer(rm, hf_tok, max_length=max_length, template="chat")
    for reply in (short, long):  # the prompt cut; then the reply cut too
        (pair,) = encode_pairs(hf_tok, [PreferencePair(record.prompt, reply, "w3")], max_length)
        assert pair.truncated and pair.chosen_ids[0] == 2 and len(pair.chosen_ids) == max_length
        assert scorer.encode(record, reply) == pair.chosen_ids
        (score,) = scorer([""], [reply], None, [record]).tolist()
        assert score == pytest.approx(naive_score(rm, pair.chosen_ids), abs=1e-5)
    assert pair.chosen_ids[-1] != 0  # the long reply lost its EOS, as in training


def test_reward_is_the_weighted_sum_and_functions_can_read_records():
    from rlhfkit.rollout import Reward
    from rlhfkit.types import PromptRecord, user

    records = [
        PromptRecord(user("q"), meta={"answer": "4"}),
        PromptRecord(user("q"), meta={"answer": "5"}),
    ]

    def exact(prompts, responses, records):
        return [float(r == rec.meta["answer"]) for r, rec in zip(responses, records, strict=True)]

    reward = Reward(
        [
            ("exact", CallableScorer(exact), 2.0),
            ("length", CallableScorer(lambda p, r: [len(x) for x in r]), -0.5),
        ]
    )
    total, parts = reward(["p", "p"], ["4", "42"], None, records)
    assert parts["exact"].tolist() == [1.0, 0.0]
    assert parts["length"].tolist() == [1.0, 2.0]
    assert total.tolist() == [2.0 * 1.0 - 0.5 * 1.0, 2.0 * 0.0 - 0.5 * 2.0]
    with pytest.raises(ValueError, match="names must differ"):
        Reward([("a", CallableScorer(exact), 1.0), ("a", CallableScorer(exact), 1.0)])


def test_callable_scorer_and_import_by_name():
    scorer = CallableScorer(lambda p, r: [len(x) for x in r])
    assert scorer(["a", "b"], ["xyz", ""]).tolist() == [3.0, 0.0]
    with pytest.raises(ValueError, match="returned 1 scores for 2"):
        CallableScorer(lambda p, r: [1.0])(["a", "b"], ["x", "y"])
    assert import_callable("operator:add") is operator.add
    with pytest.raises(ValueError, match="expected 'package.module:function'"):
        import_callable("math.sqrt")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        import_callable("math:nope")


# -- scoring pass -----------------------------------------------------------------------------------


def test_make_experience_matches_naive_per_row_forwards():
    policy, ref = tiny_lm(0), tiny_lm(9)
    critic = ScalarModel(tiny_rm(4))
    rm = tiny_rm(5)
    ids, mask = left_padded(PROMPTS)
    cfg = RolloutConfig(max_new_tokens=6, temperature=0.8)
    out = generate(
        policy, ids, mask, cfg, torch.Generator().manual_seed(2), eos_token_id=EOS, pad_token_id=PAD
    )
    exp = make_experience(
        out,
        ["p"] * 4,
        ["r"] * 4,
        [],
        policy=policy,
        ref_policy=ref,
        critic=critic,
        reward=Reward([("rm", RewardModelScorer(rm), 1.0)]),
        temperature=0.8,
    )
    lean = make_experience(
        out, ["p"] * 4, ["r"] * 4, [], policy=policy, use_ref=False,
        reward=Reward([("rm", RewardModelScorer(rm), 1.0)]), temperature=0.8,
    )  # fmt: skip
    assert lean.ref_logprobs is None and lean.old_values is None  # no reference, no critic run
    torch.testing.assert_close(lean.old_logprobs, exp.old_logprobs, rtol=0, atol=0)
    for b, prompt in enumerate(PROMPTS):
        n = int(exp.response_mask[b].sum())
        response = exp.response_ids[b, :n].tolist()
        torch.testing.assert_close(
            exp.ref_logprobs[b, :n], naive_logprobs(ref, prompt, response, 0.8), rtol=0, atol=2e-5
        )
        torch.testing.assert_close(
            exp.old_logprobs[b, :n],
            naive_logprobs(policy, prompt, response, 0.8),
            rtol=0,
            atol=2e-5,
        )
        with torch.no_grad():
            h = critic.model.transformer(torch.tensor([prompt + response])).last_hidden_state[0]
            values = critic.model.score(h).squeeze(-1)
        p = len(prompt)
        torch.testing.assert_close(
            exp.old_values[b, :n], values[p - 1 : p - 1 + n], rtol=0, atol=2e-5
        )
        assert exp.scores[b].item() == pytest.approx(naive_score(rm, prompt + response), abs=1e-5)
        assert (exp.ref_logprobs[b, n:] == 0).all() and (exp.old_values[b, n:] == 0).all()


def test_lora_reference_with_adapters_disabled_equals_base_model():
    from peft import LoraConfig, get_peft_model

    base = tiny_lm(0)
    frozen_copy = copy.deepcopy(base)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], init_lora_weights=False)
    policy = get_peft_model(base, lora).eval()
    ids, mask = left_padded(PROMPTS)
    out = generate(
        policy,
        ids,
        mask,
        RolloutConfig(max_new_tokens=5),
        torch.Generator().manual_seed(0),
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    critic = ScalarModel(tiny_rm(4))
    exp = make_experience(
        out,
        ["p"] * 4,
        ["r"] * 4,
        [],
        policy=policy,
        ref_policy=None,
        critic=critic,
        reward=Reward([("zero", CallableScorer(lambda p, r: [0.0] * len(r)), 1.0)]),
        temperature=1.0,
    )
    with torch.no_grad():
        base_lp, _ = response_logprobs(
            frozen_copy, exp.input_ids, exp.attention_mask, exp.prompt_len
        )
    m = exp.response_mask
    torch.testing.assert_close(exp.ref_logprobs[m], base_lp[m], rtol=0, atol=1e-6)
    # the adapters are active again afterwards and do change the distribution
    assert (exp.old_logprobs[m] - base_lp[m]).abs().max() > 1e-3


def test_gather_logprobs_used_on_sliced_logits_matches_full_logits():
    """response_logprobs slices hidden states before the head: same numbers as slicing logits."""
    policy = tiny_lm()
    ids, mask = left_padded(PROMPTS)
    out = generate(
        policy,
        ids,
        mask,
        RolloutConfig(max_new_tokens=4),
        torch.Generator().manual_seed(0),
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    from rlhfkit.models import position_ids_from_mask

    with torch.no_grad():
        logits = policy(
            out.input_ids,
            attention_mask=out.attention_mask,
            position_ids=position_ids_from_mask(out.attention_mask),
        ).logits
        p = out.prompt_len
        expected = gather_logprobs(logits[:, p - 1 : -1], out.response_ids)
        got, entropy = response_logprobs(
            policy, out.input_ids, out.attention_mask, p, with_entropy=True
        )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    probs = torch.softmax(logits[:, p - 1 : -1].float(), -1)
    torch.testing.assert_close(entropy, -(probs * probs.log()).sum(-1), rtol=0, atol=1e-5)


def test_generation_in_several_batches_equals_one_batch_per_row():
    """rollout.batch_size only splits the work: each row's response and log-probs are the same
    as when that chunk is generated alone with the same generator state."""
    policy = tiny_lm(seed=3, vocab=6)
    ids, mask = left_padded([[2, 3], [3, 2, 2], [2], [3, 3, 3, 3], [4, 5], [5]])
    whole = generate(
        policy,
        ids,
        mask,
        RolloutConfig(max_new_tokens=7, batch_size=4),
        torch.Generator().manual_seed(4),
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    gen = torch.Generator().manual_seed(4)
    small = RolloutConfig(max_new_tokens=7, batch_size=64)
    a = generate(policy, ids[:4], mask[:4], small, gen, eos_token_id=EOS, pad_token_id=PAD)
    b = generate(policy, ids[4:], mask[4:], small, gen, eos_token_id=EOS, pad_token_id=PAD)
    for part, rows in ((a, slice(0, 4)), (b, slice(4, 6))):
        r = part.response_ids.shape[1]
        assert torch.equal(whole.response_ids[rows, :r], part.response_ids)
        assert torch.equal(whole.response_mask[rows, :r], part.response_mask)
        assert not whole.response_mask[rows, r:].any()
        torch.testing.assert_close(whole.logprobs[rows, :r], part.logprobs, rtol=0, atol=0)


def _sample(policy, ids, mask, cfg, seeds):
    return generate(policy, ids, mask, cfg, seeds, eos_token_id=EOS, pad_token_id=PAD)


def test_preallocated_kv_cache_samples_exactly_what_dynamic_cache_samples(monkeypatch):
    """The in-place KV cache hands attention the same keys and values as HF's `DynamicCache`:
    same tokens and bit-equal log-probs (left padding, EOS, several decode steps)."""
    import importlib

    from transformers import DynamicCache

    from rlhfkit.rollout.kvcache import PreallocatedCache

    generate_module = importlib.import_module("rlhfkit.rollout.generate")
    policy = tiny_lm(seed=5)
    ids, mask = left_padded(PROMPTS * 3)
    cfg = RolloutConfig(max_new_tokens=12, temperature=1.1)

    def run():
        return _sample(policy, ids, mask, cfg, torch.Generator().manual_seed(3))

    ours = run()
    monkeypatch.setattr(generate_module, "PreallocatedCache", lambda capacity: DynamicCache())
    reference = run()
    assert torch.equal(ours.response_ids, reference.response_ids)
    assert torch.equal(ours.response_mask, reference.response_mask)
    assert torch.equal(ours.logprobs, reference.logprobs)

    cache = PreallocatedCache(capacity=4)
    k = torch.randn(2, 1, 3, 8)
    keys, _ = cache.update(k, k.clone(), 0)
    torch.testing.assert_close(keys, k, rtol=0, atol=0)
    keys, _ = cache.update(k[:, :, :1] + 1, k[:, :, :1], 0)
    torch.testing.assert_close(keys, torch.cat([k, k[:, :, :1] + 1], dim=2), rtol=0, atol=0)
    assert cache.get_seq_length() == 4
    with pytest.raises(RuntimeError, match="capacity 4"):
        cache.update(k[:, :, :1], k[:, :, :1], 0)


def test_a_shared_prompt_is_prefilled_once_and_samples_what_per_row_prefill_samples(monkeypatch):
    """GRPO's G samples of one prompt share one prefill: the distinct prompts (ids and mask;
    what sits under the padding does not matter) are found, prefilled once, and each row starts
    from its prompt's keys and values. The rollout equals every row prefilled on its own, bit
    for bit, with the preallocated cache and with HF's `DynamicCache`."""
    import importlib

    from transformers import DynamicCache, GPT2Model

    generate_module = importlib.import_module("rlhfkit.rollout.generate")
    ids, mask = left_padded([PROMPTS[i] for i in (0, 1, 0, 2, 1, 0, 3, 2)])
    ids[2, 0] = 9  # under row 2's padding: still row 0's prompt
    first, inverse = generate_module.distinct_prompts(ids, mask)
    assert first.tolist() == [0, 1, 3, 6]
    assert inverse.tolist() == [0, 1, 0, 2, 1, 0, 3, 2]

    prefilled = []
    original_forward = GPT2Model.forward

    def counting_forward(self, *args, **kwargs):
        prefilled.append(kwargs["input_ids"].shape)
        return original_forward(self, *args, **kwargs)

    policy = tiny_lm(seed=6)
    cfg = RolloutConfig(max_new_tokens=9, temperature=0.9)

    def run():
        return _sample(policy, ids, mask, cfg, generate_module.row_seeds((2, 5), range(8)))

    monkeypatch.setattr(GPT2Model, "forward", counting_forward)
    shared = run()
    assert prefilled[0] == (4, ids.shape[1])  # four distinct prompts
    monkeypatch.setattr(
        generate_module, "distinct_prompts", lambda i, m: (torch.arange(8), torch.arange(8))
    )
    per_row = run()
    assert prefilled[-(per_row.response_ids.shape[1])] == (8, ids.shape[1])
    monkeypatch.undo()
    monkeypatch.setattr(generate_module, "PreallocatedCache", lambda capacity: DynamicCache())
    dynamic = run()
    for other in (per_row, dynamic):
        assert torch.equal(shared.response_ids, other.response_ids)
        assert torch.equal(shared.response_mask, other.response_mask)
        assert torch.equal(shared.logprobs, other.logprobs)
    # rows of one prompt differ only by their own seeds
    assert not torch.equal(shared.response_ids[0], shared.response_ids[2])


@pytest.mark.parametrize("response_pad_side", ["right", "left"])
def test_reward_model_scores_rows_that_share_a_prompt_as_the_full_forward(
    response_pad_side, monkeypatch
):
    """`RewardModelScorer` hands the reward model the prompt length; rows of one prompt then
    share its forward (`models.hidden_after_shared_prompts`, `own_columns`), and each score
    equals the unpadded row's own forward."""
    import importlib

    prompt_sharing = importlib.import_module("rlhfkit.models.prompt_sharing")
    shared = []
    real = prompt_sharing.hidden_after_shared_prompts

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        shared.append(out is not None)
        return out

    monkeypatch.setattr(
        importlib.import_module("rlhfkit.models.scalar"), "hidden_after_shared_prompts", spy
    )
    rm = tiny_rm()
    prompts = [[3, 4, 5], [6, 7], [3, 4, 5], [6, 7], [3, 4, 5]]
    responses = [[8, 9, EOS], [10, 11, 9, 8, 7], [4, EOS], [2], [9, 9, 9, 9]]
    rollout = padded_rollout(prompts, responses, response_pad_side)
    scores = RewardModelScorer(rm)(["?"] * 5, ["?"] * 5, rollout)
    assert shared == [True]
    expected = torch.tensor(
        [naive_score(rm, p + r) for p, r in zip(prompts, responses, strict=True)]
    )
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-5)
