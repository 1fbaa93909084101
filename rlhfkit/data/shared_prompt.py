"""Shared-prompt batches: the replies to one prompt packed in one row after a single copy of it.

A comparison's replies share their prompt token for token (`data.encode_pairs` cuts the prompt
once for all replies). Instead of B·K rows `prompt + reply_k`, one row per comparison holds
`prompt, reply_1, …, reply_K`; a block attention mask lets each reply token see the prompt and
the earlier tokens of its own reply only, and positions restart after the prompt for every
reply. Each reply's score is read at its last token. Every reply therefore gets exactly the
hidden states it gets in its own row (same inputs, same positions, same visible keys: the
equality is tested), and the prompt is computed once instead of K times. On the anchor
workload (prompt ≈ 30 tokens, replies ≈ 40) that is ≈ 20 % fewer tokens per pair.

Under dropout the prompt's hidden states get one dropout sample shared by the replies instead
of one each: the same expected loss, a different (equally valid) stochastic estimate.

Row layout (right-padded): [prompt | reply 1 | … | reply K | pad]; segment ids 1 for the
prompt, k + 1 for reply k, 0 for padding. `allowed[b, i, j]` = j ≤ i and segment j ∈ {1,
segment i}; pad queries see only themselves (no softmax over an empty row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlhfkit.data.tokenize import EncodedPair, EncodedRanked


def _replies(item: EncodedPair | EncodedRanked) -> list[list[int]]:
    p = item.prompt_length
    seqs = [item.chosen_ids, item.rejected_ids] if isinstance(item, EncodedPair) else item.sequences
    return [list(s[p:]) for s in seqs]


def shared_length(item: EncodedPair | EncodedRanked) -> int:
    """Tokens of the packed row: the prompt once plus every reply."""
    return item.prompt_length + sum(len(r) for r in _replies(item))


def collate_shared_prompt(
    items: Sequence[EncodedPair | EncodedRanked], pad_id: int
) -> dict[str, Any]:
    """Pack each comparison into one row (see the module docstring).

    Returns `input_ids`, `position_ids` (B, L); `attention_mask` (B, L) bool, True = real token;
    `allowed` (B, L, L) bool; `score_index` (N, 2) (row, position) of each reply's last token,
    in the order of `collate_pairs` (chosen of every pair, then rejected) or `collate_ranked`
    (prompt-major, best first); `response_mask` (B, L) True on the tokens of the chosen / best
    reply (what the LM term scores); `segment_ids` (B, L) as in the module docstring; `num_pairs` and `margin` for pairs, `group_size` for
    ranked lists.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    pairs = isinstance(items[0], EncodedPair)
    replies = [_replies(it) for it in items]
    k = len(replies[0])
    if any(len(r) != k for r in replies):
        raise ValueError("collate_shared_prompt: every item needs the same number of replies")
    width = max(shared_length(it) for it in items)
    n = len(items)
    rows_ids: list[list[int]] = []  # plain lists, one tensor each at the end (per-slice
    rows_pos: list[list[int]] = []  # tensor writes cost ~1 ms per batch of 16)
    rows_seg: list[list[int]] = []
    ends: list[list[int]] = []
    for it, reps in zip(items, replies, strict=True):
        p = it.prompt_length
        first = it.chosen_ids if pairs else it.sequences[0]
        ids, pos, seg, row_ends = list(first[:p]), list(range(p)), [1] * p, []
        for r, reply in enumerate(reps):
            if not reply:
                raise ValueError(f"{it.source}: an empty reply cannot be scored")
            ids += reply
            pos += range(p, p + len(reply))
            seg += [r + 2] * len(reply)
            row_ends.append(len(ids) - 1)
        pad = width - len(ids)
        rows_ids.append(ids + [pad_id] * pad)
        rows_pos.append(pos + [0] * pad)
        rows_seg.append(seg + [0] * pad)
        ends.append(row_ends)
    input_ids = torch.tensor(rows_ids, dtype=torch.long)
    position_ids = torch.tensor(rows_pos, dtype=torch.long)
    segment = torch.tensor(rows_seg, dtype=torch.long)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    seg_q, seg_k = segment[:, :, None], segment[:, None, :]
    allowed = causal & (seg_q > 0) & ((seg_k == 1) | (seg_k == seg_q))
    allowed |= torch.eye(width, dtype=torch.bool)
    rows = torch.arange(n).repeat_interleave(k)
    cols = torch.tensor(ends, dtype=torch.long).flatten()
    if pairs:  # collate_pairs order: all chosen, then all rejected
        order = torch.cat([torch.arange(0, n * k, k), torch.arange(1, n * k, k)])
        rows, cols = rows[order], cols[order]
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": segment > 0,
        "allowed": allowed,
        "score_index": torch.stack([rows, cols], dim=1),
        "response_mask": segment == 2,
        "segment_ids": segment,
    }
    if pairs:
        batch["num_pairs"] = n
        margins = [it.margin for it in items]
        if all(m is not None for m in margins):
            batch["margin"] = torch.tensor(margins, dtype=torch.float32)
    else:
        batch["group_size"] = k
    return batch
