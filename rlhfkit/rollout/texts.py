"""Sampling replies to prompt records as text, batch by batch: what evaluation and feedback
collection share (PPO keeps the token tensors instead, see `generate`).

`sample_batches` encodes the prompts (chat template, keeping the last `max_prompt_length` tokens),
samples one reply per prompt with a rollout engine (a policy module given instead means the
local sampler on it) in batches of `cfg.batch_size`, and yields each batch's
`Rollout` with its decoded replies (special tokens skipped, surrounding whitespace stripped: the
text any judge sees). A reply that hit `max_new_tokens` without EOS is kept as it is. Randomness
comes only from `generator`; the caller picks eval mode and `inference_mode`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from rlhfkit.data import collate_prompts, encode_prompts, ensure_pad_token
from rlhfkit.data.chat import Template
from rlhfkit.rollout.engines.base import RolloutEngine
from rlhfkit.rollout.engines.local import LocalEngine
from rlhfkit.rollout.generate import Rollout, RolloutConfig, as_seeds
from rlhfkit.types import PromptRecord

__all__ = ["decode_responses", "sample_batches"]


def decode_responses(
    tokenizer: Any, response_ids: torch.Tensor, response_mask: torch.Tensor
) -> list[str]:
    """Reply texts: valid tokens only, special tokens (EOS) dropped, surrounding whitespace
    stripped — the one decoding every reward, judge and sample file sees."""
    rows = [ids[mask].tolist() for ids, mask in zip(response_ids, response_mask, strict=True)]
    return [t.strip() for t in tokenizer.batch_decode(rows, skip_special_tokens=True)]


def sample_batches(
    policy: torch.nn.Module | RolloutEngine,
    tokenizer: Any,
    prompts: Sequence[PromptRecord],
    cfg: RolloutConfig,
    generator: torch.Generator,
    max_prompt_length: int = 256,
    template: Template = "chat",
) -> Iterator[tuple[int, Rollout, list[str]]]:
    """Yield (index of the batch's first prompt, rollout, decoded replies) per batch."""
    pad_id = ensure_pad_token(tokenizer)
    if tokenizer.eos_token_id is None:
        raise ValueError("sample_batches: the tokenizer has no EOS token")
    engine = LocalEngine(policy, tokenizer) if isinstance(policy, torch.nn.Module) else policy
    encoded = encode_prompts(tokenizer, list(prompts), max_prompt_length, template)
    for start in range(0, len(encoded), cfg.batch_size):
        batch = collate_prompts(encoded[start : start + cfg.batch_size], pad_id)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        seeds = as_seeds(generator, ids.shape[0])
        out = engine.generate(ids, mask, cfg, seeds, keep_logprobs=False)
        yield start, out, decode_responses(tokenizer, out.response_ids, out.response_mask)
