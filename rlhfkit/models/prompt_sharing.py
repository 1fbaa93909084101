"""One forward per distinct prompt: rows that share a prompt share its hidden states.

GRPO and RLOO sample G replies per prompt, so a batch holds each prompt G times. Causal attention
makes a prompt's hidden states, keys and values the same in each of its rows, so a forward over
(prompt | reply) rows can run the distinct prompts once, with a KV cache, and then each row's
reply columns with its prompt's keys and values as their past (vLLM's prefix caching shares a
prompt's KV blocks the same way when sampling). With gradients on, the cached keys and values
are copies (an index_select) of the prompt pass's, so each prompt's activations receive the sum
of its rows' gradients, as in the full forward.

- `distinct_prompts(ids, mask)`: which rows hold which prompt.
- `cache_kwarg(body)`: the name a transformers body takes its cache by.
- `hidden_after_shared_prompts(...)`: the final hidden states of the reply columns, computed so.

Equal to the full forward to float rounding (tests/test_forward_logprobs.py,
tests/test_models_scalar.py: values and gradients; GPT-2 and Llama). The caller decides whether
sharing computes what the full forward would (`rollout.forward.can_share_prompts`: not under
gradient checkpointing or live dropout).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import DynamicCache

__all__ = ["cache_kwarg", "distinct_prompts", "hidden_after_shared_prompts"]


def distinct_prompts(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, inverse): `first` (U,) the first row of each distinct prompt, in row order, and
    `inverse` (B,) the position in `first` of each row's prompt, so rows[first][inverse] equals
    rows. Two rows hold the same prompt when their masks and their ids under the mask agree
    (what sits under the padding does not matter)."""
    batch = prompt_ids.shape[0]
    key = prompt_ids.masked_fill(~prompt_mask.bool(), -1)
    _, labels = torch.unique(key, dim=0, return_inverse=True)
    rows = torch.arange(batch, device=prompt_ids.device)
    firsts = torch.full((batch,), batch, device=prompt_ids.device).scatter_reduce(
        0, labels, rows, reduce="amin"
    )
    first = firsts[firsts < batch].sort().values
    position = torch.empty(batch, dtype=torch.long, device=prompt_ids.device)
    position[first] = torch.arange(first.shape[0], device=prompt_ids.device)
    return first, position[firsts[labels]]


def cache_kwarg(body: nn.Module) -> str:
    """The name the body's forward takes its KV cache by: transformers 5.x renames
    `past_key_values` to `cache` (the old name warns, and is removed in 5.40); earlier 5.x
    releases know only `past_key_values`."""
    params = inspect.signature(body.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def hidden_after_shared_prompts(
    body: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    prompt_len: int,
    *,
    own_columns: bool = False,
) -> torch.Tensor | None:
    """Final hidden states of the reply columns, each distinct prompt run once; None when no two
    rows share a prompt (or there is no reply column).

    Shapes: `input_ids`, `attention_mask`, `position_ids` (B, T = P + R), the first P columns
    the (left-padded) prompt. Returns (B, R, H): by default the states at columns P − 1 … T − 2,
    those that predict the reply tokens (a causal LM's log-probs); with `own_columns` the states
    at P … T − 1, each reply token's own (a reward model's score, a critic's values).

    Two passes of `body`: the U distinct prompts (U × P) with a `DynamicCache`, whose keys and
    values are then copied to every row of their prompt (`batch_select_indices`), and the B rows'
    reply columns with that cache as their past.
    """
    batch, total = input_ids.shape
    if prompt_len < 1 or total <= prompt_len:
        return None
    mask = attention_mask.long()
    first, inverse = distinct_prompts(input_ids[:, :prompt_len], mask[:, :prompt_len])
    if first.shape[0] == batch:
        return None
    cache = DynamicCache()
    key = cache_kwarg(body)
    prompts = body(
        input_ids=input_ids[first, :prompt_len],
        attention_mask=mask[first, :prompt_len],
        position_ids=position_ids[first, :prompt_len],
        use_cache=True,
        **{key: cache},
    ).last_hidden_state
    end = total if own_columns else total - 1
    if end == prompt_len:  # one reply column, predicted from the prompt's last state
        return prompts[inverse, -1:]
    cache.batch_select_indices(inverse)
    replies = body(
        input_ids=input_ids[:, prompt_len:end],
        attention_mask=mask[:, :end],
        position_ids=position_ids[:, prompt_len:end],
        use_cache=True,
        **{key: cache},
    ).last_hidden_state
    if own_columns:
        return replies
    return torch.cat([prompts[inverse, -1:], replies], dim=1)
