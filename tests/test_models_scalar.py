"""rlhfkit.models: the reward model / critic reads the last real token; saving, loading, LoRA.

Oracles: a row scored alone without any padding (the definition of its score); the head applied
by hand to the body's hidden state; `AutoModelForSequenceClassification` on a folder we saved.
"""

from __future__ import annotations

import pytest
import torch
from checkpointing_helpers import count_recomputes, saved_bytes
from transformers import AutoModelForSequenceClassification

from rlhfkit.models import (
    LoraSettings,
    ModelConfig,
    build_scalar_model,
    load_critic,
    load_policy,
    load_reward_model,
    load_tokenizer,
)
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.sim.tokenizer import train_tokenizer

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "what is two plus two"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300, min_frequency=1)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm_dir(request, tmp_path_factory, tokenizer):
    model = build_tiny_model(request.param, "nano", tokenizer=tokenizer, seed=1)
    return save_tiny_model(model, tmp_path_factory.mktemp(request.param), tokenizer)


def _rows(n: int = 4, lo: int = 3, hi: int = 9, vocab: int = 250, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi, (n,), generator=g).tolist()
    return [torch.randint(7, vocab, (k,), generator=g) for k in lengths]


def _pad(rows, pad_id: int, side: str):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, r in enumerate(rows):
        if side == "right":
            ids[b, : len(r)], mask[b, : len(r)] = r, True
        else:
            ids[b, width - len(r) :], mask[b, width - len(r) :] = r, True
    return ids, mask


def _alone(rm, rows):
    """The oracle: each row scored by itself, no padding anywhere."""
    return torch.cat([rm.score(r[None], torch.ones(1, len(r), dtype=torch.bool)) for r in rows])


@pytest.mark.parametrize("side", ["right", "left"])
def test_score_reads_last_real_token_under_padding(lm_dir, tokenizer, side):
    rm = build_scalar_model(ModelConfig(name_or_path=str(lm_dir))).eval()
    rows = _rows()
    ids, mask = _pad(rows, tokenizer.pad_token_id, side)
    torch.testing.assert_close(rm.score(ids, mask), _alone(rm, rows), atol=1e-5, rtol=1e-5)


def test_score_with_pad_equal_to_eos_and_replies_ending_in_eos(lm_dir, tokenizer):
    rm = build_scalar_model(ModelConfig(name_or_path=str(lm_dir))).eval()
    eos = tokenizer.eos_token_id
    rows = [torch.cat([r, torch.tensor([eos])]) for r in _rows(seed=3)]
    for side in ("right", "left"):
        ids, mask = _pad(rows, eos, side)
        torch.testing.assert_close(rm.score(ids, mask), _alone(rm, rows), atol=1e-5, rtol=1e-5)
    # garbage in the padded positions changes nothing
    ids, mask = _pad(rows, eos, "right")
    noisy = torch.where(mask, ids, torch.randint_like(ids, 7, 250))
    torch.testing.assert_close(rm.score(noisy, mask), rm.score(ids, mask))


def test_values_equal_head_on_hidden_and_score_at_last_token(lm_dir, tokenizer):
    rm = build_scalar_model(ModelConfig(name_or_path=str(lm_dir))).eval()
    rm.set_normalization(offset=0.3, scale=2.5)
    ids, mask = _pad(_rows(seed=5), tokenizer.pad_token_id, "right")
    hidden = rm.hidden_states(ids, mask)
    raw = hidden.float() @ rm.head.weight.float().T  # the head by hand (no bias in these heads)
    expected = 2.5 * (raw.squeeze(-1) - 0.3)
    values = rm.values(ids, mask)
    assert values.dtype == torch.float32 and values.shape == ids.shape
    torch.testing.assert_close(values, expected, atol=1e-5, rtol=1e-5)
    last = mask.long().sum(1) - 1
    torch.testing.assert_close(rm.score(ids, mask), values[torch.arange(len(last)), last])


def test_saved_reward_model_reloads_with_same_scores_and_hf_reads_them(lm_dir, tokenizer, tmp_path):
    rm = build_scalar_model(ModelConfig(name_or_path=str(lm_dir))).eval()
    ids, mask = _pad(_rows(seed=7), tokenizer.pad_token_id, "right")
    raw = rm.score(ids, mask)
    rm.set_normalization(offset=-0.7, scale=1.5)
    rm.save(tmp_path / "rm", tokenizer)
    again = load_reward_model(tmp_path / "rm")
    assert not any(p.requires_grad for p in again.parameters())
    torch.testing.assert_close(again.score(ids, mask), rm.score(ids, mask))
    torch.testing.assert_close(again.score(ids, mask), 1.5 * (raw + 0.7))
    # HF's own class reads the normalised score: all of it folded into the weights for GPT-2
    # (ln_f has a bias); Llama's RMSNorm and bias-free head leave the offset in config.json
    # (`models.scalar`, point 7)
    remaining = again.score_offset
    assert remaining == (0.0 if again.config.model_type == "gpt2" else pytest.approx(1.5 * -0.7))
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    with torch.no_grad():
        logits = hf(input_ids=ids, attention_mask=mask.long()).logits.squeeze(-1)
    torch.testing.assert_close(logits - remaining, rm.score(ids, mask), atol=1e-5, rtol=1e-5)
    critic = load_critic(tmp_path / "rm")
    assert critic.training and all(p.requires_grad for p in critic.parameters())
    torch.testing.assert_close(critic.eval().score(ids, mask), again.score(ids, mask))


def test_lora_trains_only_adapters_and_head_and_saves_merged(lm_dir, tokenizer, tmp_path):
    cfg = ModelConfig(name_or_path=str(lm_dir), lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    rm = build_scalar_model(cfg)
    trainable = {n for n, p in rm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".score." in n for n in trainable), trainable
    assert any(".score." in n for n in trainable)  # the head trains in full
    ids, mask = _pad(_rows(seed=9), tokenizer.pad_token_id, "left")
    opt = torch.optim.SGD([p for p in rm.parameters() if p.requires_grad], lr=0.5)
    before = {n: p.detach().clone() for n, p in rm.named_parameters()}
    rm.score(ids, mask).square().mean().backward()
    opt.step()
    for n, p in rm.named_parameters():
        moved = not torch.equal(before[n], p.detach())
        lora_b_zero_grad = "lora_A" in n  # B starts at 0, so A gets no gradient on step one
        if n in trainable and not lora_b_zero_grad:
            assert moved, f"trainable {n} did not move"
        if n not in trainable:
            assert not moved, f"frozen {n} moved"
    rm.eval()
    rm.save(tmp_path / "merged", tokenizer)
    torch.testing.assert_close(
        load_reward_model(tmp_path / "merged").score(ids, mask),
        rm.score(ids, mask),
        atol=1e-5,
        rtol=1e-5,
    )


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(lm_dir, tokenizer, mode):
    """Checkpointing is really on (every layer recomputed once in the backward pass, fewer
    bytes saved for it) in training mode and in eval mode (PPO, DPO and the RM with
    `disable_dropout` train in eval mode), and the gradients equal those without it."""
    ids, mask = _pad(_rows(seed=11), tokenizer.pad_token_id, "right")
    grads, counts, saved = [], [], []
    for ckpt in (False, True):
        policy = load_policy(ModelConfig(name_or_path=str(lm_dir), gradient_checkpointing=ckpt))
        policy.train(mode == "train")  # the tiny models have dropout 0.1: same masks both runs
        torch.manual_seed(0)
        with count_recomputes() as count, saved_bytes() as nbytes:
            policy(input_ids=ids, attention_mask=mask.long()).logits.sum().backward()
        grads.append({n: p.grad.clone() for n, p in policy.named_parameters()})
        counts.append(count)
        saved.append(nbytes[0])
    layers = policy.config.num_hidden_layers
    assert (counts[0].layer_calls, counts[0].recomputed) == (layers, 0)
    assert (counts[1].layer_calls, counts[1].recomputed) == (layers, layers)
    assert saved[1] < 0.5 * saved[0]
    # the same float32 ops, but gradients reach shared leaves (tied embeddings) in another
    # order: equal to float32 summation rounding (measured ≤ 3e-5 relative)
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-5, rtol=1e-4)


def test_scalar_model_checkpoints_in_eval_mode(lm_dir, tokenizer):
    """The reward model / critic too: values and scores with checkpointing recompute every
    layer and give the same gradients."""
    ids, mask = _pad(_rows(seed=12), tokenizer.pad_token_id, "left")
    grads, counts = [], []
    for ckpt in (False, True):
        cfg = ModelConfig(name_or_path=str(lm_dir), gradient_checkpointing=ckpt)
        torch.manual_seed(0)  # the new scalar head's init
        critic = load_critic(cfg).eval()
        with count_recomputes() as count:
            out = critic(ids, mask, return_values=True)
            (out.values[mask].sum() + out.scores.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in critic.named_parameters()})
        counts.append(count)
    layers = critic.config.num_hidden_layers
    assert (counts[0].recomputed, counts[1].recomputed) == (0, layers)
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-5, rtol=1e-4)


def test_lm_head_shares_the_body_for_tied_models(lm_dir, tokenizer):
    """The MOSS-RLHF LM term: the RM's LM head on its body equals the causal LM's logits."""
    rm = build_scalar_model(ModelConfig(name_or_path=str(lm_dir))).eval()
    rm.attach_lm_head(lm_dir)
    policy = load_policy(ModelConfig(name_or_path=str(lm_dir))).eval()
    ids, mask = _pad(_rows(seed=13), tokenizer.pad_token_id, "right")
    out = rm(ids, mask, return_hidden=True)
    expected = policy(input_ids=ids, attention_mask=mask.long()).logits
    got = rm.lm_logits(out.hidden)
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-4, rtol=1e-4)


def test_load_tokenizer_guarantees_a_pad_token(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    assert load_tokenizer(tmp_path / "tok").pad_token_id == tokenizer.pad_token_id
    # stories260K-like: no pad token; the pad then comes from UNK/EOS, never a new row
    bare = train_tokenizer(TEXTS, vocab_size=300, min_frequency=1)
    bare.pad_token = None
    bare.save_pretrained(tmp_path / "bare")
    loaded = load_tokenizer(tmp_path / "bare")
    assert loaded.pad_token_id == loaded.eos_token_id
    assert len(loaded) == len(bare)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local model folder"):
        build_scalar_model(ModelConfig(name_or_path=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="name_or_path is empty"):
        load_policy(ModelConfig())


def test_gpt2_loads_with_the_fused_gelu_computing_the_same_function(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    model = build_tiny_model("gpt2", "nano", tokenizer=tokenizer, seed=2)
    assert model.config.activation_function == "gelu_new"
    path = save_tiny_model(model, tmp_path / "g", tokenizer)
    ours = load_policy(ModelConfig(name_or_path=str(path))).eval()
    assert ours.config.activation_function == "gelu_pytorch_tanh"
    original = AutoModelForCausalLM.from_pretrained(path).eval()
    assert original.config.activation_function == "gelu_new"
    ids, mask = _pad(_rows(seed=17), tokenizer.pad_token_id, "right")
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask.long()).logits
        b = original(input_ids=ids, attention_mask=mask.long()).logits
    torch.testing.assert_close(a[mask], b[mask], atol=1e-5, rtol=1e-5)
