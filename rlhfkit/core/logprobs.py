"""Token log-probabilities and entropies from logits, in float32.

Implementation details and their sources:

1. Log-prob math runs in float32 whatever the model's dtype (bf16 log-softmax loses about two
   digits; OpenRLHF and TRL both upcast).
2. `gather_logprobs` computes logit[id] − logsumexp(logits) one batch row at a time instead of
   materialising the full (B, T, V) log-softmax and gathering from it (TRL `selective_log_softmax`
   uses the same identity, and the row loop for bf16). The float32 copy is then (T, V), not
   (B, T, V), and on CPU the row loop is also the fastest: B·T = 64·64, V = 4096, 1 thread,
   torch 2.13, median of 7 calls on a shared 2-core machine: float32 input: row loop 20-29 ms,
   full log_softmax + gather 53-60 ms, full logsumexp form 78-82 ms; bf16 input: row loop
   28-88 ms, log_softmax + gather 78-108 ms (timings noisy from other jobs; the order held).
3. Entropy uses H = logsumexp(l) − Σ softmax(l)·l, which needs no log of small probabilities
   (TRL `entropy_from_logits`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from rlhfkit.core.stats import masked_sum

__all__ = [
    "LOGITS_CHUNK_ELEMENTS",
    "LOGITS_CHUNK_TOKENS",
    "HeadLogprobs",
    "default_chunk",
    "entropy_from_logits",
    "gather_logprobs",
    "head_logprobs",
    "perplexity",
]

_FULL_PRECISION = (torch.float32, torch.float64)


def gather_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each chosen token: log p(ids[b, t]) = l[ids] − logsumexp_v l[v].

    Shapes: `logits` (B, T, V) any float dtype; `ids` (B, T) int64 → (B, T) float32 (float64
    stays float64). The caller aligns them: `logits[:, t]` must be the distribution over `ids[:, t]`
    (i.e. logits already shifted left by one for next-token prediction). No mask: positions that
    are padding still get a (meaningless, finite) value; mask them downstream.
    Reference: TRL `selective_log_softmax`.
    """
    if logits.shape[:-1] != ids.shape:
        raise ValueError(
            f"gather_logprobs: logits {tuple(logits.shape)} and ids {tuple(ids.shape)} disagree"
        )
    if ids.shape[0] == 0:
        dtype = logits.dtype if logits.dtype in _FULL_PRECISION else torch.float32
        return torch.zeros(ids.shape, dtype=dtype, device=logits.device)
    rows = []
    for row_logits, row_ids in zip(logits, ids, strict=True):
        if row_logits.dtype not in _FULL_PRECISION:
            row_logits = row_logits.float()
        picked = row_logits.gather(-1, row_ids.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row_logits, dim=-1))
    return torch.stack(rows)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position, in nats.

    H = −Σ_v p_v log p_v = logsumexp(l) − Σ_v softmax(l)_v · l_v. Shapes: (..., V) any float dtype
    → (...) float32. Reference: TRL `entropy_from_logits`.
    """
    logits = logits.float() if logits.dtype not in _FULL_PRECISION else logits
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def perplexity(logprobs: torch.Tensor, response_mask: torch.Tensor) -> float:
    """Token-level perplexity exp(−Σ m·log p / Σ m) over every valid token of the batch.

    Shapes: (B, T) each; mask True = valid. Raises ValueError if no token is valid.
    """
    n = int((response_mask != 0).sum())
    if n == 0:
        raise ValueError("perplexity: the mask has no valid token")
    return math.exp(-float(masked_sum(logprobs.double(), response_mask)) / n)


# -- log-probs straight from hidden states, chunked over tokens ------------------------------------

LOGITS_CHUNK_ELEMENTS = 2**23
"""Memory bound of `head_logprobs`' default chunk: at most this many logits (tokens × vocabulary)
exist at once, ≈ 32 MiB in float32 (SmolLM2's 49,152-token vocabulary: 170 tokens a chunk)."""

LOGITS_CHUNK_TOKENS = 256
"""Speed bound of the default chunk: at most this many tokens a chunk, whatever the vocabulary.
A chunk's logits then stay near the CPU's caches through the log-softmax, entropy and gradient
passes. `python -m benchmarks.logits_memory --chunk-sweep ...` (forward + backward as the
policy step runs it, one thread, commit 080b381): the anchor head (2,048 tokens, vocabulary
4,096, hidden 256) took 253 ms in one piece, 162 ms in one chunk of 2,047 tokens, 138 ms at 512,
133 ms at 256 and 127 ms at 128 (256 and 128 within the host's noise); SmolLM2's (1,024 tokens,
49,152, 576) took 1.86 s at its memory-bound 170 tokens, 1.88 s at 128, 2.45 s at 64 and 4.35 s
at 21: below ~128 tokens the head's matmul streams its weight too often, so the token bound
does not go lower. A forward of at most one chunk runs in one piece, with exactly the
operations of the unchunked code."""


def default_chunk(vocab: int) -> int:
    """Tokens a chunk of `head_logprobs` by default: min(LOGITS_CHUNK_TOKENS,
    LOGITS_CHUNK_ELEMENTS // vocab), at least 1."""
    return max(1, min(LOGITS_CHUNK_TOKENS, LOGITS_CHUNK_ELEMENTS // vocab))


class HeadLogprobs(NamedTuple):
    logprobs: torch.Tensor  # (...) float32: log p(ids)
    entropy: torch.Tensor | None  # (...) float32, nats; None unless asked for


def head_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_size: int | None = None,
) -> HeadLogprobs:
    """Log-probs (and entropies) of `ids` under the LM head `l = (hidden · weightᵀ + bias) / τ`,
    without holding the (tokens × vocabulary) logits.

    logprobs = l[ids] − logsumexp(l); entropy = logsumexp(l) − Σ_v softmax(l)_v · l_v.
    Shapes: `hidden` (..., H) (the final-normed states that predict `ids`, already aligned),
    `weight` (V, H), `bias` (V,) or None, `ids` (...) int64 → (...) float32 each. The matmul runs in
    the autocast dtype when autocast is on (as `nn.Linear` would), everything after it in float32.
    No mask: padding positions get finite meaningless values.

    Tokens are taken `chunk_size` at a time (None: `default_chunk(V)`); the backward
    recomputes each chunk's logits and forms the gradient in closed form,
    ∂/∂l_v = g_lp · (1[v = id] − p_v) − g_H · p_v · (l_v − Σ_u p_u l_u), so it too holds one
    chunk at a time plus a float32 (V, H) gradient of `weight`. When all tokens fit in one chunk
    this is plain autograd over `gather_logprobs` / `entropy_from_logits`.
    Sources: Liger-Kernel fused linear cross-entropy, verl / OpenRLHF chunked entropy (same
    idea; the closed-form entropy gradient is derived here and checked against autograd).
    """
    if hidden.shape[:-1] != ids.shape:
        raise ValueError(
            f"head_logprobs: hidden {tuple(hidden.shape)} and ids {tuple(ids.shape)} disagree"
        )
    vocab = weight.shape[0]
    chunk = chunk_size if chunk_size is not None else default_chunk(vocab)
    if chunk < 1:
        raise ValueError(f"head_logprobs: chunk_size must be ≥ 1, got {chunk}")
    if ids.numel() <= chunk:
        logits = F.linear(hidden, weight, bias)
        if temperature != 1.0:
            logits = logits.to(_math_dtype(logits.dtype)) / temperature
        rows = ids.reshape(-1, ids.shape[-1] if ids.dim() else 1)  # gather_logprobs: (B, T)
        logprobs = gather_logprobs(logits.reshape(*rows.shape, vocab), rows).view(ids.shape)
        entropy = entropy_from_logits(logits) if with_entropy else None
        return HeadLogprobs(logprobs, entropy)
    logprobs, entropy = _ChunkedHeadLogprobs.apply(
        hidden.reshape(-1, hidden.shape[-1]),
        weight,
        bias,
        ids.reshape(-1),
        float(temperature),
        with_entropy,
        chunk,
    )
    return HeadLogprobs(logprobs.view(ids.shape), entropy.view(ids.shape) if with_entropy else None)


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype `F.linear(hidden, …)` would run in: the autocast dtype when autocast is on."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return hidden.dtype


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in _FULL_PRECISION else torch.float32


def _chunk_logits(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, t: float
) -> torch.Tensor:
    """(c, H) → (c, V) logits / τ in float32 (float64 stays float64); `weight` and `bias`
    already in the matmul's `dtype`."""
    logits = F.linear(h.to(dtype), weight, bias).to(_math_dtype(dtype))
    return logits.div_(t) if t != 1.0 else logits


class _ChunkedHeadLogprobs(torch.autograd.Function):
    """(N, H) hidden → (N,) log-probs and entropies, one chunk of tokens at a time (see
    `head_logprobs`); the backward recomputes each chunk's logits. In-place operations keep a
    chunk to about three (chunk, V) buffers."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, temperature, with_entropy, chunk):
        dtype = _compute_dtype(hidden)
        n, math_dtype = ids.shape[0], _math_dtype(dtype)
        logprobs = torch.empty(n, dtype=math_dtype, device=hidden.device)
        entropy = torch.empty(n if with_entropy else 0, dtype=math_dtype, device=hidden.device)
        lse = torch.empty(n, dtype=math_dtype, device=hidden.device)
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, n, chunk):  # 1. one chunk of tokens at a time
                rows = slice(start, start + chunk)
                logits = _chunk_logits(hidden[rows], w, b, dtype, temperature)
                lse[rows] = torch.logsumexp(logits, dim=-1)
                logprobs[rows] = logits.gather(-1, ids[rows, None]).squeeze(-1) - lse[rows]
                if with_entropy:  # 2. H = lse − Σ p·l
                    probs = torch.sub(logits, lse[rows, None]).exp_()
                    entropy[rows] = lse[rows] - probs.mul_(logits).sum(dim=-1)
        ctx.save_for_backward(hidden, weight, bias, ids, lse)
        ctx.dtype, ctx.temperature, ctx.chunk = dtype, temperature, chunk
        ctx.set_materialize_grads(False)  # an unused output (entropy as a metric): None
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        hidden, weight, bias, ids, lse = ctx.saved_tensors
        dtype, t, chunk = ctx.dtype, ctx.temperature, ctx.chunk
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        acc = lse.dtype  # float32 (float64 for float64 inputs): the weight gradient's sum
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = None
        if need_b and bias is not None:
            grad_b = torch.zeros(weight.shape[0], dtype=acc, device=weight.device)
        if grad_entropy is not None and not grad_entropy.numel():
            grad_entropy = None
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, ids.shape[0], chunk):  # 1. recompute the chunk's logits
                rows = slice(start, start + chunk)
                h = hidden[rows].to(dtype)
                logits = _chunk_logits(h, w, b, dtype, t)
                probs = torch.sub(logits, lse[rows, None]).exp_()
                # 2. ∂loss/∂l = g_lp·(1[v = id] − p) − g_H·p·(l − Σ p·l), built in place
                if grad_entropy is not None:
                    mean = (probs * logits).sum(dim=-1, keepdim=True)
                    coef = logits.sub_(mean).mul_(grad_entropy[rows, None])
                    if grad_logprobs is not None:
                        coef.add_(grad_logprobs[rows, None])
                    grad = probs.mul_(coef).neg_()
                elif grad_logprobs is not None:
                    grad = probs.mul_(grad_logprobs[rows, None]).neg_()
                else:
                    grad = probs.zero_()
                if grad_logprobs is not None:
                    grad.scatter_add_(-1, ids[rows, None], grad_logprobs[rows, None])
                if t != 1.0:  # ∂l/∂z = 1/τ
                    grad.div_(t)
                # 3. through the matmul: the hidden gradient in its dtype (as autograd would), the
                # weight gradient summed over chunks in float32
                if grad_h is not None:
                    grad_h[rows] = (grad.to(dtype) @ w).to(hidden.dtype)
                if grad_w is not None:
                    grad_w.addmm_(grad.t(), h.to(acc))
                if grad_b is not None:
                    grad_b += grad.sum(dim=0)
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_h, grad_w, grad_b, None, None, None, None
