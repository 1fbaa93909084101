"""`core.head_logprobs` (chunked over tokens, closed-form backward) against the naive computation:
the full logits through `F.linear`, `log_softmax` and the entropy definition, under autograd."""

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.core import head_logprobs

B, T, H, V = 3, 7, 16, 50


def _inputs(dtype: torch.dtype, bias: bool = True, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g, dtype=dtype).requires_grad_()
    weight = (torch.randn(V, H, generator=g, dtype=dtype) * 0.5).requires_grad_()
    b = torch.randn(V, generator=g, dtype=dtype).requires_grad_() if bias else None
    ids = torch.randint(0, V, (B, T), generator=g)
    g_lp, g_ent = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    return hidden, weight, b, ids, g_lp, g_ent


def _naive(hidden, weight, bias, ids, temperature):
    logits = F.linear(hidden, weight, bias).double() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, ids[..., None]).squeeze(-1), entropy


def _values_and_grads(fn, hidden, weight, bias, g_lp, g_ent):
    lp, ent = fn()
    objective = (lp.double() * g_lp.double()).sum() + (ent.double() * g_ent.double()).sum()
    params = [p for p in (hidden, weight, bias) if p is not None]
    return lp.detach(), ent.detach(), torch.autograd.grad(objective, params)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk", [4, 5, 21, 1000])  # 5 does not divide B·T = 21; 1000: one piece
def test_float64_equals_naive_values_and_gradients(chunk, temperature):
    hidden, weight, bias, ids, g_lp, g_ent = _inputs(torch.float64)
    got = _values_and_grads(
        lambda: head_logprobs(
            hidden, weight, bias, ids, temperature=temperature, with_entropy=True, chunk_size=chunk
        ),
        hidden, weight, bias, g_lp, g_ent,
    )  # fmt: skip
    want = _values_and_grads(
        lambda: _naive(hidden, weight, bias, ids, temperature), hidden, weight, bias, g_lp, g_ent
    )
    assert got[0].dtype == torch.float64 and got[0].shape == (B, T)
    for a, b in zip([got[0], got[1], *got[2]], [want[0], want[1], *want[2]], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_float32_equals_naive_within_float32_rounding(bias):
    hidden, weight, b, ids, g_lp, g_ent = _inputs(torch.float32, bias=bias, seed=1)
    got = _values_and_grads(
        lambda: head_logprobs(hidden, weight, b, ids, with_entropy=True, chunk_size=5),
        hidden, weight, b, g_lp, g_ent,
    )  # fmt: skip
    want = _values_and_grads(
        lambda: _naive(hidden, weight, b, ids, 1.0), hidden, weight, b, g_lp, g_ent
    )
    assert got[0].dtype == torch.float32
    for a, w in zip([got[0], got[1], *got[2]], [want[0], want[1], *want[2]], strict=True):
        torch.testing.assert_close(a.double(), w.double(), rtol=1e-5, atol=2e-5)


def test_bf16_autocast_matmul_in_bf16_math_in_float32():
    """Under bf16 autocast the head's matmul runs in bf16 (as `nn.Linear` would) and the rest in
    float32: values and the hidden-state gradient equal the naive autocast computation; the
    weight and bias gradients (summed in float32 here, rounded to bf16 by the naive matmul) equal
    the exact gradient at those bf16 logits."""
    hidden, weight, bias, ids, g_lp, g_ent = _inputs(torch.float32, seed=2)

    def naive_autocast():
        logits = F.linear(hidden, weight, bias).float() / 0.7  # bf16 under autocast, then f32
        logp = torch.log_softmax(logits, dim=-1)
        return logp.gather(-1, ids[..., None]).squeeze(-1), -(logp.exp() * logp).sum(-1)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _values_and_grads(
            lambda: head_logprobs(
                hidden, weight, bias, ids, temperature=0.7, with_entropy=True, chunk_size=5
            ),
            hidden, weight, bias, g_lp, g_ent,
        )  # fmt: skip
        want = _values_and_grads(naive_autocast, hidden, weight, bias, g_lp, g_ent)
        logits = F.linear(hidden, weight, bias).detach().double().requires_grad_()
    assert got[0].dtype == torch.float32
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=2e-6)  # same bf16 logits
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(got[2][0], want[2][0], rtol=0, atol=0)  # bf16 matmul, as naive
    # exact ∂/∂logits at the bf16 logits (float64), then through the bf16-rounded hidden states
    logp = torch.log_softmax(logits / 0.7, dim=-1)
    obj = (logp.gather(-1, ids[..., None]).squeeze(-1) * g_lp.double()).sum()
    obj = obj + (-(logp.exp() * logp).sum(-1) * g_ent.double()).sum()
    (g_logits,) = torch.autograd.grad(obj, logits)
    exact_w = g_logits.reshape(-1, V).T @ hidden.detach().bfloat16().double().reshape(-1, H)
    torch.testing.assert_close(got[2][1].double(), exact_w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2][2].double(), g_logits.sum((0, 1)), rtol=1e-5, atol=1e-5)


def test_bf16_model_weights():
    """A bf16 model (no autocast): outputs float32, gradients bf16 like the parameters."""
    hidden, weight, bias, ids, g_lp, g_ent = _inputs(torch.bfloat16, seed=3)
    lp, ent, grads = _values_and_grads(
        lambda: head_logprobs(hidden, weight, bias, ids, with_entropy=True, chunk_size=5),
        hidden, weight, bias, g_lp, g_ent,
    )  # fmt: skip
    want = _naive(hidden, weight, bias, ids, 1.0)  # float64 math over the same bf16 logits
    assert lp.dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in grads)
    torch.testing.assert_close(lp.double(), want[0].detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(ent.double(), want[1].detach(), rtol=0, atol=1e-5)


def test_padding_positions_do_not_leak():
    """Masked-out tokens (any id, garbage hidden state) change neither the valid positions'
    values nor the gradients they send to the weights, once the caller masks their loss."""
    hidden, weight, bias, ids, g_lp, g_ent = _inputs(torch.float64, seed=4)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, :2] = False

    def masked_objective(h, i):
        out = head_logprobs(h, weight, bias, i, with_entropy=True, chunk_size=4)
        per_token = out.logprobs * g_lp.double() + out.entropy * g_ent.double()
        return out, torch.where(mask, per_token, 0.0).sum()

    clean, obj = masked_objective(hidden, ids)
    g_clean = torch.autograd.grad(obj, (weight, bias))
    noisy_h = torch.where(mask[..., None], hidden.detach(), 1e3).requires_grad_()
    noisy_ids = torch.where(mask, ids, V - 1)
    noisy, obj = masked_objective(noisy_h, noisy_ids)
    g_noisy = torch.autograd.grad(obj, (weight, bias))
    assert torch.equal(clean.logprobs[mask], noisy.logprobs[mask])
    assert torch.isfinite(noisy.logprobs).all()
    for a, b in zip(g_clean, g_noisy, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_frozen_weight_gets_no_gradient_and_logprobs_only():
    """LoRA-style: a frozen head, gradients to the hidden states only; without entropy."""
    hidden, weight, bias, ids, g_lp, _ = _inputs(torch.float64, seed=5)
    weight.requires_grad_(False)
    out = head_logprobs(hidden, weight, None, ids, chunk_size=4)
    assert out.entropy is None
    (g,) = torch.autograd.grad((out.logprobs * g_lp.double()).sum(), hidden)
    want_lp, _ = _naive(hidden, weight, None, ids, 1.0)
    (want,) = torch.autograd.grad((want_lp * g_lp.double()).sum(), hidden)
    torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)


def test_one_piece_is_bitwise_the_unchunked_code():
    """Fewer tokens than a chunk: the same operations as before chunking existed (recorded
    figures of the tiny models stay bitwise)."""
    from rlhfkit.core import entropy_from_logits, gather_logprobs

    hidden, weight, bias, ids, _, _ = _inputs(torch.float32, seed=6)
    out = head_logprobs(hidden, weight, bias, ids, temperature=0.7, with_entropy=True)
    logits = F.linear(hidden, weight, bias).float() / 0.7
    assert torch.equal(out.logprobs, gather_logprobs(logits, ids))
    assert torch.equal(out.entropy, entropy_from_logits(logits))


def test_rejects_bad_shapes_and_chunk():
    hidden, weight, bias, ids, _, _ = _inputs(torch.float32)
    with pytest.raises(ValueError, match="disagree"):
        head_logprobs(hidden, weight, bias, ids[:, :-1])
    with pytest.raises(ValueError, match="chunk_size"):
        head_logprobs(hidden, weight, bias, ids, chunk_size=0)


@pytest.mark.parametrize("used", ["logprobs", "entropy"])
def test_one_output_unused(used):
    """Entropy computed as a metric only (no gradient through it), or entropy alone."""
    hidden, weight, bias, ids, g_lp, g_ent = _inputs(torch.float64, seed=7)
    g_lp, g_ent = (g_lp, g_ent * 0) if used == "logprobs" else (g_lp * 0, g_ent)
    out = head_logprobs(hidden, weight, bias, ids, with_entropy=True, chunk_size=4)
    target = out.logprobs if used == "logprobs" else out.entropy
    grads = torch.autograd.grad((target * (g_lp + g_ent).double()).sum(), (hidden, weight, bias))
    want = _values_and_grads(
        lambda: _naive(hidden, weight, bias, ids, 1.0), hidden, weight, bias, g_lp, g_ent
    )[2]
    for a, b in zip(grads, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_default_chunk_is_the_smaller_of_the_token_and_memory_bounds():
    from rlhfkit.core.logprobs import LOGITS_CHUNK_ELEMENTS, LOGITS_CHUNK_TOKENS, default_chunk

    assert (LOGITS_CHUNK_TOKENS, LOGITS_CHUNK_ELEMENTS) == (256, 2**23)
    assert default_chunk(4096) == 256  # the anchor vocabulary: the token bound
    assert default_chunk(49152) == 170  # SmolLM2: the memory bound, 2**23 // 49152
    assert default_chunk(2**24) == 1
