"""The model-side log-prob paths (`rollout.next_token_logprobs`, `response_logprobs`,
`lm_head_logprobs`, DPO's `pair_logps`) equal the model's own full logits, values and gradients,
with the chunked head (`core.head_logprobs`) forced to several chunks."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import rlhfkit.core.logprobs as core_logprobs
from rlhfkit.models import position_ids_from_mask
from rlhfkit.rollout import lm_head_logprobs, next_token_logprobs, response_logprobs

VOCAB = 40


def _gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=32)
    return GPT2LMHeadModel(cfg).eval()  # no dropout: two forwards must agree


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def _batch():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, VOCAB, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, :3] = 0  # left padding
    mask[1, 7:] = 0  # right padding
    return ids, mask


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 5 tokens (B·T − 1 = 24 in the tests: 5 does not divide it)."""
    monkeypatch.setattr(core_logprobs, "LOGITS_CHUNK_ELEMENTS", 5 * VOCAB)


def _grads(model, loss):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("make", [_gpt2, _llama])
def test_next_token_logprobs_equal_full_logits(make, small_chunks):
    model = make()
    ids, mask = _batch()
    pos = position_ids_from_mask(mask)
    got = next_token_logprobs(model, ids, mask, pos)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    want = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    keep = mask[:, 1:].bool()
    torch.testing.assert_close(got[keep], want[keep], rtol=0, atol=2e-6)
    g_got = _grads(model, (got * keep).sum())
    g_want = _grads(model, (want * keep).sum())
    for a, b in zip(g_got, g_want, strict=True):  # the tied or separate head included
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_response_logprobs_and_entropy_equal_full_logits(small_chunks):
    model = _gpt2()
    ids, mask = _batch()
    prompt_len = 4
    lp, ent = response_logprobs(model, ids, mask, prompt_len, temperature=0.8, with_entropy=True)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    logits = logits.logits[:, prompt_len - 1 : -1].float() / 0.8
    logp = torch.log_softmax(logits, -1)
    want_lp = logp.gather(-1, ids[:, prompt_len:, None])[..., 0]
    want_ent = -(logp.exp() * logp).sum(-1)
    keep = mask[:, prompt_len:].bool()
    torch.testing.assert_close(lp[keep], want_lp[keep], rtol=0, atol=2e-6)
    torch.testing.assert_close(ent[keep], want_ent[keep], rtol=0, atol=2e-6)
    g_got = _grads(model, ((lp + 0.1 * ent) * keep).sum())
    g_want = _grads(model, ((want_lp + 0.1 * want_ent) * keep).sum())
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_lora_on_the_head_falls_back_to_the_full_logits(small_chunks):
    """A head that is not a plain `nn.Linear` (LoRA adapters on it) is applied whole."""
    model = get_peft_model(_llama(), LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    ids, mask = _batch()
    got = next_token_logprobs(model, ids, mask)
    logits = model(input_ids=ids, attention_mask=mask).logits
    want = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    keep = mask[:, 1:].bool()
    torch.testing.assert_close(got[keep], want[keep], rtol=0, atol=2e-6)


def test_lm_head_logprobs_plain_linear_uses_the_chunked_path(monkeypatch):
    """The plain head goes through `core.head_logprobs` (a call through the chunked path)."""
    head = torch.nn.Linear(8, VOCAB)
    calls = []
    real = core_logprobs._ChunkedHeadLogprobs.apply
    monkeypatch.setattr(core_logprobs, "LOGITS_CHUNK_ELEMENTS", 2 * VOCAB)
    monkeypatch.setattr(
        core_logprobs._ChunkedHeadLogprobs, "apply", lambda *a: calls.append(1) or real(*a)
    )
    hidden = torch.randn(2, 3, 8)
    ids = torch.randint(0, VOCAB, (2, 3))
    out = lm_head_logprobs(head, hidden, ids)
    want = torch.log_softmax(head(hidden), -1).gather(-1, ids[..., None])[..., 0]
    assert calls == [1]
    torch.testing.assert_close(out.logprobs, want, rtol=0, atol=2e-6)


def test_next_token_logprobs_of_a_soft_capping_model_use_its_own_logits():
    """A config with final-logit soft-capping (Gemma 2): `causal_lm_parts` refuses to slice the
    model, so its whole forward runs and its own logits are used (Llama ignores the setting, so
    this checks the route, not the capping)."""
    model = _llama()
    model.config.final_logit_softcapping = 2.0
    ids, mask = _batch()
    got = next_token_logprobs(model, ids, mask)
    logits = model(input_ids=ids, attention_mask=mask).logits
    want = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


def _grouped_batch():
    """Three prompts (one left-padded, one under padding that holds other ids) × 3 samples,
    responses of different lengths (right padding), interleaved in row order."""
    g = torch.Generator().manual_seed(5)
    prompt_len, resp_len = 5, 6
    prompts = torch.randint(2, VOCAB, (3, prompt_len), generator=g)
    prompt_mask = torch.ones(3, prompt_len, dtype=torch.long)
    prompt_mask[1, :2] = 0
    rows = torch.tensor([0, 1, 2, 0, 1, 2, 1, 0, 2])
    ids = torch.cat([prompts[rows], torch.randint(2, VOCAB, (9, resp_len), generator=g)], 1)
    ids[6, 0] = 0  # under row 6's padding (prompt 1): still prompt 1
    mask = torch.cat([prompt_mask[rows], torch.ones(9, resp_len, dtype=torch.long)], 1)
    for row, length in ((0, 2), (4, 5), (8, 1)):
        mask[row, prompt_len + length :] = 0
    return ids, mask, prompt_len


@pytest.mark.parametrize("make", [_gpt2, _llama])
def test_shared_prompt_forward_equals_the_full_forward(make, monkeypatch):
    """`response_logprobs` runs each distinct prompt once and every row's response after it:
    log-probs, entropies and parameter gradients equal the full forward of every row."""
    import importlib

    forward = importlib.import_module("rlhfkit.rollout.forward")
    model = make()
    ids, mask, prompt_len = _grouped_batch()
    calls = []
    real = forward.shared_prompt_hidden

    def spy(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(forward, "shared_prompt_hidden", spy)
    lp, ent = response_logprobs(model, ids, mask, prompt_len, 0.8, with_entropy=True)
    assert calls == [True]
    valid = mask[:, prompt_len:].bool()
    weights = torch.randn(lp.shape, generator=torch.Generator().manual_seed(6)) * valid
    grads = _grads(model, (lp * weights).sum() + (ent * weights).sum())

    monkeypatch.setattr(forward, "shared_prompt_hidden", lambda *args: None)
    lp_full, ent_full = response_logprobs(model, ids, mask, prompt_len, 0.8, with_entropy=True)
    grads_full = _grads(model, (lp_full * weights).sum() + (ent_full * weights).sum())
    torch.testing.assert_close(lp[valid], lp_full[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent[valid], ent_full[valid], rtol=1e-5, atol=1e-5)
    for g, g_full in zip(grads, grads_full, strict=True):
        torch.testing.assert_close(g, g_full, rtol=1e-4, atol=1e-5)

    # one response column: the prompt pass alone gives it
    monkeypatch.setattr(forward, "shared_prompt_hidden", spy)
    one, _ = response_logprobs(model, ids[:, :6], mask[:, :6], prompt_len, 0.8)
    torch.testing.assert_close(one, lp_full[:, :1], rtol=1e-5, atol=1e-5)
    assert calls[-1] is True


def test_shared_prompt_forward_stays_off_where_it_would_differ():
    """No shared prompt, active dropout, gradient checkpointing: the full forward (None)."""
    from rlhfkit.models.loading import enable_gradient_checkpointing
    from rlhfkit.rollout.forward import shared_prompt_hidden

    ids, mask, prompt_len = _grouped_batch()
    positions = position_ids_from_mask(mask)
    model = _gpt2()
    body = model.transformer
    assert shared_prompt_hidden(body, ids, mask, positions, prompt_len) is not None
    distinct = [0, 1, 2]
    args = (ids[distinct], mask[distinct], positions[distinct], prompt_len)
    assert shared_prompt_hidden(body, *args) is None
    model.train()  # GPT-2's dropout p = 0.1 is live
    assert shared_prompt_hidden(body, ids, mask, positions, prompt_len) is None
    model.eval()
    enable_gradient_checkpointing(model)
    assert shared_prompt_hidden(model.transformer, ids, mask, positions, prompt_len) is None
