"""Final hidden states at chosen positions only: the last transformer block computed where needed.

A reward model reads its head at one token per reply, a critic and a policy at the response
columns only. Every position still needs the first L − 1 blocks (later tokens attend to it),
but the last block's output is read only at those positions: there it needs the keys and values
of every position and nothing else. `final_hidden_at` computes the last block's query
projection, attention, output projection and MLP at the requested positions only: 10 of the
block's 12·d² weights per token, ≈ 20 % of a 4-layer body's forward and backward FLOPs when
one position per row is read (the anchor reward model), ≈ 10 % for the response half of a PPO
row. The result equals the full computation read at those positions, to float rounding (tested).

Supported: GPT-2 blocks (`GPT2Block` with the plain `Conv1D` projections; `sdpa` or `eager`
attention), without dropout in training. Under gradient checkpointing this partial last block
keeps its activations (it is not recomputed); the other L − 1 blocks are checkpointed. Anything else (other architectures, LoRA-wrapped
projections, active dropout, `reorder_and_upcast_attn`) runs the full body and reads the same
positions, so callers need no fallback of their own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rlhfkit.models.attention import SDPA_NAMES, attention

__all__ = ["final_hidden_at"]


def final_hidden_at(
    body: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    query: torch.Tensor | None = None,
) -> torch.Tensor:
    """Final-normed hidden states of a transformers decoder body (GPT-2 `transformer`, …).

    `attention_mask` (B, T) long / bool or (B, 1, T, T) as the body takes it; `position_ids`
    (B, T). `query` (B, Q) int64, distinct columns within each row: returns (B, Q, H), equal to
    the full (B, T, H) output gathered at `query` (computed with the last block at those
    columns only where supported, see the module docstring); None: the full (B, T, H).
    """

    def run() -> torch.Tensor:
        return body(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state

    if query is None:
        return run()
    blocks = _gpt2_blocks(body)
    if blocks is None:
        return _gather(run(), query)
    last = blocks[-1]
    blocks[-1] = _LastBlockAt(last, query)
    try:
        hidden = run()
    finally:
        blocks[-1] = last
    return _gather(hidden, query)


def _gather(hidden: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    return hidden.gather(1, query.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def _gpt2_blocks(body: nn.Module) -> nn.ModuleList | None:
    """The block list when the partial last block applies to `body`, else None."""
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block
    from transformers.pytorch_utils import Conv1D

    blocks = getattr(body, "h", None)
    if not isinstance(blocks, nn.ModuleList) or not len(blocks):
        return None
    last = blocks[-1]
    if type(last) is not GPT2Block or getattr(last, "crossattention", None) is not None:
        return None
    attn, config = last.attn, last.attn.config
    if not all(type(m) is Conv1D for m in (attn.c_attn, attn.c_proj)):
        return None  # LoRA (peft) or another wrapper around the projections
    if config._attn_implementation not in (*SDPA_NAMES, "eager") or attn.reorder_and_upcast_attn:
        return None
    # the dropout modules' own mode: a checkpointed block is in training mode even when the
    # model is in eval mode (`models.loading`, point 5)
    dropouts = (attn.attn_dropout, attn.resid_dropout, last.mlp.dropout)
    if any(m.training and m.p > 0 for m in dropouts):
        return None
    return blocks


class _LastBlockAt(nn.Module):
    """A GPT-2 block computed at `query` (B, Q) columns only; other columns pass their input
    through unchanged (they are never read: `final_hidden_at` gathers `query`)."""

    def __init__(self, block: nn.Module, query: torch.Tensor) -> None:
        super().__init__()
        self.block = block
        self.query = query

    def forward(
        self,
        hidden_states: torch.Tensor,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        block, attn = self.block, self.block.attn
        b, t, d = hidden_states.shape
        heads, head_dim = attn.num_heads, attn.head_dim
        query = self.query.to(hidden_states.device)
        q_len = query.shape[1]
        at_query = query.unsqueeze(-1).expand(-1, -1, d)

        normed = block.ln_1(hidden_states)
        weight, bias = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: (d, 3d), x @ W + b
        kv = torch.addmm(bias[d:], normed.reshape(-1, d), weight[:, d:]).view(b, t, 2 * d)
        key, value = (x.view(b, t, heads, head_dim).transpose(1, 2) for x in kv.split(d, -1))
        q_in = normed.gather(1, at_query)
        q = torch.addmm(bias[:d], q_in.reshape(-1, d), weight[:, :d])
        q = q.view(b, q_len, heads, head_dim).transpose(1, 2)

        if attention_mask is None:  # the body's causal fast path: no padding anywhere
            keys = torch.arange(t, device=query.device)
            mask = (keys[None, None, :] <= query[:, :, None])[:, None]
        else:  # (B or 1, 1, T, T) boolean (sdpa) or additive (eager): the query rows
            full = attention_mask.expand(b, -1, -1, -1)
            rows = query[:, None, :, None].expand(-1, full.shape[1], -1, t)
            mask = full.gather(2, rows)
        out = attention(q, key, value, attn_mask=mask, scale=attn.scaling)
        out = attn.c_proj(out.transpose(1, 2).reshape(b, q_len, d))
        x = hidden_states.gather(1, at_query) + out
        x = x + block.mlp(block.ln_2(x))
        return hidden_states.scatter(1, at_query, x)
