"""Collators: encoded items → dicts of tensors. Masks are `torch.bool`, True = valid token.

Padding polarity is decided here, once: training batches are right-padded (real tokens first),
prompt batches for generation are left-padded (real tokens last, so every row's next token is
generated at the same position). Masks come from the sequence lengths, never from comparing
ids with `pad_id`, so a pad id equal to EOS or UNK is safe.

`response_mask[b, t]` is True when token t of row b is a response token, i.e. a training target.
The next-token loss therefore pairs `logits[:, :-1]` with `input_ids[:, 1:]` and masks it with
`response_mask[:, 1:]`: the logit at position t predicts token t + 1, and only response tokens
are scored (the first response token is predicted from the last prompt position).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlhfkit.data.tokenize import EncodedPair, EncodedPrompt, EncodedRanked, EncodedSFT


def _right_pad(
    seqs: Sequence[list[int]], prompt_lengths: Sequence[int], pad_id: int
) -> dict[str, torch.Tensor]:
    if not seqs:
        raise ValueError("cannot collate an empty batch")
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    response_mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for b, (s, p) in enumerate(zip(seqs, prompt_lengths, strict=True)):
        input_ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention_mask[b, : len(s)] = True
        response_mask[b, p : len(s)] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
    }


def collate_sft(items: Sequence[EncodedSFT], pad_id: int) -> dict[str, torch.Tensor]:
    """`input_ids`, `attention_mask`, `response_mask`, all (B, T), right-padded."""
    return _right_pad([it.input_ids for it in items], [it.prompt_length for it in items], pad_id)


def collate_pairs(items: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor | int]:
    """One (2B, T) right-padded batch: rows 0..B−1 chosen, rows B..2B−1 rejected (row b + B is
    the rejected reply of pair b), so the reward model or DPO scores both in one forward pass.
    Also `num_pairs` = B and, when every pair has one, `margin` (B,) float32."""
    seqs = [it.chosen_ids for it in items] + [it.rejected_ids for it in items]
    prompts = [it.prompt_length for it in items] * 2
    batch: dict[str, torch.Tensor | int] = dict(_right_pad(seqs, prompts, pad_id))
    batch["num_pairs"] = len(items)
    margins = [it.margin for it in items]
    if all(m is not None for m in margins):
        batch["margin"] = torch.tensor(margins, dtype=torch.float32)
    elif any(m is not None for m in margins):
        raise ValueError("collate_pairs: some pairs have a margin and some do not")
    return batch


def collate_ranked(items: Sequence[EncodedRanked], pad_id: int) -> dict[str, torch.Tensor | int]:
    """A (B·K, T) right-padded batch, prompt-major: rows b·K … b·K + K − 1 are prompt b's
    replies, best first. K must be the same for every item (group batches by K)."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    ks = {len(it.sequences) for it in items}
    if len(ks) != 1:
        raise ValueError(f"collate_ranked: K differs within the batch ({sorted(ks)}); group by K")
    seqs = [s for it in items for s in it.sequences]
    prompts = [it.prompt_length for it in items for _ in it.sequences]
    batch: dict[str, torch.Tensor | int] = dict(_right_pad(seqs, prompts, pad_id))
    batch["num_prompts"] = len(items)
    batch["group_size"] = ks.pop()
    return batch


def collate_prompts(items: Sequence[EncodedPrompt], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded `input_ids` and `attention_mask` (B, T) for generation."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    width = max(len(it.input_ids) for it in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(items), width), dtype=torch.bool)
    for b, it in enumerate(items):
        n = len(it.input_ids)
        if n:
            input_ids[b, width - n :] = torch.tensor(it.input_ids, dtype=torch.long)
            attention_mask[b, width - n :] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def pack_sft(
    items: Sequence[EncodedSFT], max_length: int, pad_id: int = 0
) -> dict[str, torch.Tensor]:
    """Pack demonstrations into rows of at most `max_length` tokens (first-fit, in order).

    Returns `input_ids`, `attention_mask`, `response_mask` (N, T), `position_ids` restarting at 0
    for each sequence, and `segment_ids` (N, T): 1, 2, … per sequence in a row, 0 on padding.
    The response mask is False on the first token of every segment, so no token is predicted
    from the previous sequence. Limitation: with eager or SDPA attention, tokens still attend to
    earlier sequences in the row; only attention kernels that read `position_ids` as sequence
    boundaries (flash-attention 2 in transformers) isolate them. Items longer than `max_length`
    are an error (encode with `max_length` first).
    """
    rows: list[list[EncodedSFT]] = []
    room: list[int] = []
    for it in items:
        if it.length > max_length:
            raise ValueError(
                f"pack_sft: a sequence of {it.length} tokens > max_length={max_length}"
            )
        for r, free in enumerate(room):
            if it.length <= free:
                rows[r].append(it)
                room[r] -= it.length
                break
        else:
            rows.append([it])
            room.append(max_length - it.length)
    if not rows:
        raise ValueError("cannot pack an empty batch")
    width = max(max_length - free for free in room)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segment_ids = torch.zeros(shape, dtype=torch.long)
    response_mask = torch.zeros(shape, dtype=torch.bool)
    for r, row in enumerate(rows):
        start = 0
        for seg, it in enumerate(row, start=1):
            end = start + it.length
            input_ids[r, start:end] = torch.tensor(it.input_ids, dtype=torch.long)
            position_ids[r, start:end] = torch.arange(it.length)
            segment_ids[r, start:end] = seg
            # max(.., 1): the first token of a segment is never a target across segments.
            response_mask[r, start + max(it.prompt_length, 1) : end] = True
            start = end
    return {
        "input_ids": input_ids,
        "attention_mask": segment_ids > 0,
        "response_mask": response_mask,
        "position_ids": position_ids,
        "segment_ids": segment_ids,
    }
