"""Batched sampling from a causal LM with a KV cache: the rollout half of PPO, GRPO and best-of-N.

Implementation details and their sources:

1. A small sampling loop over the model's backbone and a KV cache written in place
   (`rollout.kvcache.PreallocatedCache`: one prefill of the left-padded prompts, then one token
   per step, without `DynamicCache`'s per-token concatenation), rather than `model.generate`: it returns the
   log-prob of each sampled token under softmax(logits / temperature) from the logits it already
   computed, so PPO's `old_logprobs` need no second forward pass (tested equal to a full forward
   within float tolerance), and it avoids `generate`'s per-step logits-processor machinery.
   Positions come from the attention mask, as in HF `generate` for left padding.
2. Temperature, then top-k, then top-p (nucleus, Holtzman et al. 2020) filtering of the scaled
   logits, in the order HF's `TopKLogitsWarper`/`TopPLogitsWarper` apply them; the recorded
   log-probs are those of the *unfiltered* tempered distribution, the one PPO's ratio uses
   (TRL `PPOTrainer`, OpenRLHF likewise).
3. Stopping: a row is finished after its first EOS (or after the token that completes a stop
   string); later columns are padding, masked False, and never scored. The loop ends when every
   row has finished or after `max_new_tokens`; no column beyond the longest response is kept.
4. Randomness per row: row b draws its token at step t by inverting the CDF of its (filtered)
   distribution at a uniform u[b, t], and the uniforms of row b come from its own seed. The
   sampled tokens of a row therefore do not depend on which other rows share its batch, process
   or generation chunk: under `accelerate launch` the online trainers seed row i of iteration k
   from (run seed, k, i) (`row_seeds`), so 2 processes sample what 1 process samples. A
   `torch.Generator` passed instead gives one seed per row from its stream (the in-loop
   evaluation and `rlhfkit eval`), so a rollout is reproducible from the generator's state.
   Cost: one seeded `torch.rand` per row and generation, one float64 cumsum per token step.
5. A prompt that several rows share (GRPO's and RLOO's G samples of one prompt) is prefilled
   once: the prefill runs over the distinct prompts, then every row copies its prompt's keys,
   values and first-token logits (`Cache.batch_select_indices`), as vLLM's prefix caching
   shares a prompt's KV blocks. Causal attention makes a prompt's keys and values independent
   of what is sampled after it, so the rollout is the same (tests/test_rollout.py checks it
   bitwise); on the anchor GRPO workload (16 prompts × 4 samples) a rollout took 0.368 instead
   of 0.457 CPU s (one thread, commit 40d37bd, `python -m benchmarks.generate_cost`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rlhfkit.config import ConfigBase
from rlhfkit.models import cache_kwarg, distinct_prompts, position_ids_from_mask
from rlhfkit.rollout.engines.config import EngineName, VLLMConfig
from rlhfkit.rollout.forward import causal_lm_parts
from rlhfkit.rollout.kvcache import PreallocatedCache

__all__ = [
    "Rollout",
    "RolloutConfig",
    "as_seeds",
    "generate",
    "row_seeds",
    "row_uniforms",
    "sample_rows",
]


class RolloutConfig(ConfigBase):
    max_new_tokens: int = 32
    """Longest response, in tokens (a response that reaches it without EOS is truncated)."""
    temperature: float = 1.0
    """Softmax temperature for sampling; PPO divides training logits by the same value."""
    top_k: int = 0
    """Keep only the k most likely tokens before sampling (0: off)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens with probability ≥ top_p (1.0: off)."""
    stop_strings: list[str] = []
    """Finish a response at the token that completes any of these strings (besides EOS)."""
    batch_size: int = 64
    """Prompts sampled together in one generation batch (memory/speed trade-off only)."""
    engine: EngineName = "local"
    """What samples: local (rlhfkit's KV-cached sampler, the default), vllm (a vLLM engine in
    this process) or vllm_server (`rlhfkit rollout serve` at vllm.url). docs/rollout.md."""
    vllm: VLLMConfig = VLLMConfig()
    """Settings of the vllm / vllm_server engines."""


@dataclass
class Rollout:
    """Prompts and sampled responses, ready to be scored.

    `prompt_ids`/`prompt_mask` (B, P) left-padded; `response_ids`/`response_mask` (B, R)
    right-padded, mask True up to and including the first EOS; `logprobs` (B, R) float32 of the
    sampled tokens under softmax(logits / temperature) (0 at padding), or None when not kept;
    `finish_reasons` (B,) "stop" (EOS or a stop string) or "length" (the budget), when known.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor | None = None
    finish_reasons: list[str] | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def prompt_len(self) -> int:
        return self.prompt_ids.shape[1]


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / nucleus to −inf (HF `TopKLogitsWarper`, `TopPLogitsWarper`)."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop the low tail whose total mass is ≤ 1 − top_p; the most likely token always stays
        drop_sorted = cumulative <= 1.0 - top_p
        drop_sorted[:, -1] = False
        drop = drop_sorted.scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, -torch.inf)
    return logits


_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """SplitMix64's finaliser (Steele et al. 2014): a bijection of 64-bit ints that scatters
    nearby inputs (seed, seed + 1, ...) to unrelated outputs."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def row_seeds(key: Sequence[int], rows: Sequence[int]) -> torch.Tensor:
    """One seed per row: a pure function of `key` (e.g. run seed, iteration) and the row's
    global number, so a row's random stream is the same on whichever process samples it."""
    base = 0
    for k in key:
        base = _mix64(base ^ (int(k) & _MASK64))
    return torch.tensor([_mix64(base ^ int(r)) >> 1 for r in rows], dtype=torch.long)


def as_seeds(generator: torch.Generator | torch.Tensor | None, n: int) -> torch.Tensor:
    """(n,) per-row seeds: `generator` itself when it is already a seed tensor, else n draws
    from it (None: torch's global generator). Every rollout engine is seeded this way."""
    if isinstance(generator, torch.Tensor):
        if generator.shape != (n,):
            raise ValueError(f"generate: {tuple(generator.shape)} seeds for {n} prompts")
        return generator
    return torch.randint(0, 2**62, (n,), generator=generator)


def row_uniforms(seeds: torch.Tensor, steps: int, device: torch.device) -> torch.Tensor:
    """(B, steps) float64 uniforms in [0, 1), row b from its own seed."""
    rows = [
        torch.rand(steps, dtype=torch.float64, generator=torch.Generator().manual_seed(int(s)))
        for s in seeds.tolist()
    ]
    return torch.stack(rows).to(device) if rows else torch.zeros(0, steps, device=device)


def sample_rows(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One draw per row from softmax(logits) by inverting its CDF at u (B,) ∈ [0, 1): the first
    token v with CDF(v) > u · CDF(V). A token of probability 0 (filtered to −inf) never has a
    CDF step, so it is never drawn. The CDF is summed in float64 (a float32 running sum over a
    150k vocabulary drifts by ~1e-5)."""
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1, dtype=torch.float64)
    target = (u.to(cdf.device) * cdf[:, -1]).unsqueeze(1)
    token = torch.searchsorted(cdf, target, right=True).squeeze(1)
    return token.clamp(max=logits.shape[-1] - 1)


def _hits_stop_string(texts: Sequence[str], stop_strings: Sequence[str]) -> list[bool]:
    return [any(s in text for s in stop_strings) for text in texts]


@torch.no_grad()
def generate(
    policy: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    cfg: RolloutConfig,
    generator: torch.Generator | torch.Tensor | None,
    *,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    tokenizer: object | None = None,
    keep_logprobs: bool = True,
) -> Rollout:
    """Sample one response per prompt with a KV cache; stop at EOS, a stop string or the budget.

    Shapes: `prompt_ids`, `prompt_mask` (B, P), left-padded, mask True = valid → a `Rollout`
    with `response_ids`, `response_mask`, `logprobs` (B, R), R ≤ `cfg.max_new_tokens` the length
    of the longest response. `tokenizer` (anything with `batch_decode`) is needed only for
    `cfg.stop_strings`. `generator`: a (B,) int64 tensor of per-row seeds (`row_seeds`), or a
    `torch.Generator` (None: torch's global one) from which one seed per row is drawn. Runs in
    `no_grad`; the caller picks eval mode and autocast.
    """
    if prompt_ids.shape != prompt_mask.shape or prompt_ids.dim() != 2:
        raise ValueError(
            f"generate: prompt_ids {tuple(prompt_ids.shape)} and prompt_mask "
            f"{tuple(prompt_mask.shape)} must both be (B, P)"
        )
    if cfg.stop_strings and tokenizer is None:
        raise ValueError("generate: rollout.stop_strings needs a tokenizer to decode responses")
    prompt_mask = prompt_mask.bool()
    if not bool(prompt_mask[:, -1].all()):
        raise ValueError("generate: prompts must be left-padded (last column valid in every row)")
    seeds = as_seeds(generator, prompt_ids.shape[0])
    uniforms = row_uniforms(seeds, cfg.max_new_tokens, prompt_ids.device)
    if prompt_ids.shape[0] > cfg.batch_size:  # several generation batches, one result
        parts = [
            _generate_batch(
                policy,
                ids,
                mask,
                cfg,
                u,
                eos_token_id,
                pad_token_id,
                tokenizer,
                keep_logprobs,
            )
            for ids, mask, u in zip(
                prompt_ids.split(cfg.batch_size),
                prompt_mask.split(cfg.batch_size),
                uniforms.split(cfg.batch_size),
                strict=True,
            )
        ]
        return _concat(parts, pad_token_id)
    return _generate_batch(
        policy,
        prompt_ids,
        prompt_mask,
        cfg,
        uniforms,
        eos_token_id,
        pad_token_id,
        tokenizer,
        keep_logprobs,
    )


def _concat(parts: list[Rollout], pad_token_id: int) -> Rollout:
    """Stack rollouts of one prompt width; responses right-padded to the longest."""
    width = max(p.response_ids.shape[1] for p in parts)

    def pad(x: torch.Tensor, value: float | bool) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    return Rollout(
        prompt_ids=torch.cat([p.prompt_ids for p in parts]),
        prompt_mask=torch.cat([p.prompt_mask for p in parts]),
        response_ids=torch.cat([pad(p.response_ids, pad_token_id) for p in parts]),
        response_mask=torch.cat([pad(p.response_mask, False) for p in parts]),
        logprobs=None
        if parts[0].logprobs is None
        else torch.cat([pad(p.logprobs, 0.0) for p in parts]),
        finish_reasons=[r for p in parts for r in p.finish_reasons or []],
    )


def _generate_batch(
    policy: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    cfg: RolloutConfig,
    uniforms: torch.Tensor,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    tokenizer: object | None,
    keep_logprobs: bool,
) -> Rollout:
    backbone, head = causal_lm_parts(policy)
    eos_ids = torch.tensor(
        [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id),
        device=prompt_ids.device,
    )
    batch = prompt_ids.shape[0]
    kv = PreallocatedCache(prompt_ids.shape[1] + cfg.max_new_tokens)
    cache = {cache_kwarg(backbone): kv}
    attention = prompt_mask.long()
    positions = position_ids_from_mask(attention)
    first, inverse = distinct_prompts(prompt_ids, prompt_mask)
    out = backbone(  # the prefill: each distinct prompt once
        input_ids=prompt_ids[first],
        attention_mask=attention[first],
        position_ids=positions[first],
        use_cache=True,
        **cache,
    )
    next_pos = positions[:, -1:] + 1
    logits = head(out.last_hidden_state[:, -1])
    if first.shape[0] < batch:  # every sample of a prompt starts from its prompt's cache
        kv.batch_select_indices(inverse)
        logits = logits[inverse]

    done = torch.zeros(batch, dtype=torch.bool, device=prompt_ids.device)
    tokens, valid, logprobs = [], [], []
    pad = torch.full((batch,), pad_token_id, dtype=prompt_ids.dtype, device=prompt_ids.device)
    for step in range(cfg.max_new_tokens):
        scaled = logits.float()
        if cfg.temperature != 1.0:
            scaled = scaled / cfg.temperature
        log_dist = torch.log_softmax(scaled, dim=-1)
        sample_logits = _filter_logits(scaled, cfg.top_k, cfg.top_p)
        token = sample_rows(sample_logits, uniforms[:, step])
        token = torch.where(done, pad, token)
        alive = ~done
        tokens.append(token)
        valid.append(alive)
        if keep_logprobs:
            picked = log_dist.gather(1, token.unsqueeze(1)).squeeze(1)
            logprobs.append(torch.where(alive, picked, torch.zeros_like(picked)))
        done = done | (alive & torch.isin(token, eos_ids))
        if cfg.stop_strings:
            texts = tokenizer.batch_decode(torch.stack(tokens, dim=1), skip_special_tokens=True)
            done = done | (alive & torch.tensor(_hits_stop_string(texts, cfg.stop_strings)))
        if bool(done.all()) or step == cfg.max_new_tokens - 1:
            break
        attention = torch.cat([attention, alive.long().unsqueeze(1)], dim=1)
        out = backbone(
            input_ids=token.unsqueeze(1),
            attention_mask=attention,
            position_ids=next_pos,
            use_cache=True,
            **cache,
        )
        next_pos = next_pos + 1
        logits = head(out.last_hidden_state[:, -1])

    response_ids = torch.stack(tokens, dim=1)
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response_ids,
        response_mask=torch.stack(valid, dim=1),
        logprobs=torch.stack(logprobs, dim=1) if keep_logprobs else None,
        finish_reasons=["stop" if d else "length" for d in done.tolist()],
    )
