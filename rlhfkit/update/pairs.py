"""Summed response log-probs of both replies of every pair, from one forward pass (DPO and its
variants, KTO, online DPO).

A micro-batch is either shared-prompt rows (one row per pair: prompt, chosen, rejected;
`data.collate_shared_prompt`) or plain rows (2 per pair: prompt + chosen, prompt + rejected;
`data.collate_pairs`). `collate` adds to either the *targets*: each response token, the column
whose hidden state predicts it, and the pair and side it belongs to. In a shared row the first
token of *both* replies is predicted from the last prompt column (the rejected reply does not
see the chosen one); every other token from the column before it.

`pair_logps` runs the body, reads the final hidden states at the predicting columns only (the
last GPT-2 block computed there only, `models.final_hidden_at`), takes each target's log-prob
from the LM head there only (response positions: no vocabulary projection for prompt tokens;
`rollout.lm_head_logprobs`: float32, chunked over tokens, no (tokens × vocabulary) tensor) and
sums each reply's token log-probs: (2, n) = chosen row, rejected row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from rlhfkit.data import EncodedPair, collate_pairs, collate_shared_prompt
from rlhfkit.engine import wrapped_forward
from rlhfkit.models import block_mask, final_hidden_at, position_ids_from_mask
from rlhfkit.rollout import causal_lm_parts, lm_head_logprobs

__all__ = ["PAIR_STAT_KEYS", "collate", "pair_logps", "pair_loss", "pair_metrics"]

# what `pair_loss` sums over a micro-batch's pairs
PAIR_STAT_KEYS = ("loss", "chosen", "rejected", "correct", "logps_chosen", "logps_rejected")


def _targets(rows: list[list[tuple[int, int, int]]], width: int) -> dict[str, torch.Tensor]:
    """rows[r] = [(predicting column, target column, group), …] → padded tensors: `query`
    (R, Q) distinct predicting columns (padded with unused columns), `slot` (R, N) index of each
    target's predictor in `query`, `target_col`, `group` (R, N), `target_mask` (R, N)."""
    q_len = max(len({c for c, _, _ in row}) for row in rows)
    n_len = max(len(row) for row in rows)
    query, slot, tcol, group, tmask = [], [], [], [], []
    for row in rows:
        used = {c for c, _, _ in row}
        cols = sorted(used)
        spare = (c for c in range(width) if c not in used)
        cols += [next(spare) for _ in range(q_len - len(cols))]
        where = {c: i for i, c in enumerate(cols)}
        pad = n_len - len(row)
        query.append(cols)
        slot.append([where[c] for c, _, _ in row] + [0] * pad)
        tcol.append([t for _, t, _ in row] + [0] * pad)
        group.append([g for _, _, g in row] + [0] * pad)
        tmask.append([True] * len(row) + [False] * pad)
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return {
        "query": as_long(query),
        "slot": as_long(slot),
        "target_col": as_long(tcol),
        "group": as_long(group),
        "target_mask": torch.tensor(tmask, dtype=torch.bool),
    }


def collate(items: Sequence[EncodedPair], pad_id: int, share_prompt: bool) -> dict[str, Any]:
    """A micro-batch of pairs with its targets (see the module docstring). Also `num_pairs` and
    `counts` (2, n) float32: response tokens scored per chosen / rejected reply."""
    n = len(items)
    rows: list[list[tuple[int, int, int]]] = []
    if share_prompt:
        batch = collate_shared_prompt(items, pad_id)
        for i, it in enumerate(items):
            p = it.prompt_length
            lc, lr = len(it.chosen_ids) - p, len(it.rejected_ids) - p
            row = [(c - 1, c, i) for c in range(p, p + lc)]
            row += [(p - 1 if k == 0 else p + lc + k - 1, p + lc + k, n + i) for k in range(lr)]
            rows.append([t for t in row if t[0] >= 0])
    else:
        batch = collate_pairs(items, pad_id)
        for r in range(2 * n):
            it = items[r % n]
            length = len(it.chosen_ids if r < n else it.rejected_ids)
            rows.append([(c - 1, c, r) for c in range(max(it.prompt_length, 1), length)])
    batch.update(_targets(rows, batch["input_ids"].shape[1]))
    counts = torch.zeros(2 * n).index_add_(
        0, batch["group"][batch["target_mask"]], torch.ones(int(batch["target_mask"].sum()))
    )
    batch["counts"] = counts.view(2, n)
    batch["num_pairs"] = n
    return batch


def pair_logps(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """(2, n) float32: Σ log π(token) over the chosen (row 0) and rejected (row 1) reply of
    each pair. Gradients flow unless called under no_grad / inference_mode; then the forward
    runs through the distributed wrapper if there is one (`engine.wrapped_forward`)."""
    return wrapped_forward(model, _pair_logps, batch)


def _pair_logps(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    backbone, head = causal_lm_parts(model)
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    if "allowed" in batch:
        config = backbone.config
        dtype = next(model.parameters()).dtype
        mask = block_mask(batch["allowed"].to(device), config._attn_implementation, dtype)
        positions = batch["position_ids"].to(device)
    else:
        mask = batch["attention_mask"].to(device).long()
        positions = position_ids_from_mask(mask)
    query = batch["query"].to(device)
    hidden = final_hidden_at(backbone, ids, mask, positions, query)  # (R, Q, H)
    slot = batch["slot"].to(device)
    hidden = hidden.gather(1, slot[..., None].expand(-1, -1, hidden.shape[-1]))  # (R, N, H)
    tokens = ids.gather(1, batch["target_col"].to(device))
    picked = lm_head_logprobs(head, hidden, tokens).logprobs  # (R, N)
    tmask = batch["target_mask"].to(device)
    picked = torch.where(tmask, picked, torch.zeros_like(picked))
    n = batch["num_pairs"]
    sums = torch.zeros(2 * n, dtype=picked.dtype, device=device)
    sums = sums.index_add(0, batch["group"].to(device).flatten(), picked.flatten())
    return sums.view(2, n)


def pair_loss(
    model: nn.Module,
    batch: dict[str, Any],
    ref: Callable[[dict[str, Any]], torch.Tensor] | None,
    losses: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Any],
    token_mean: bool,
    n_pairs: float,
    world: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch's summed per-pair preference loss divided by the step's *global* pair
    count over W processes (`core.aggregate_loss` docstring): the step of `rlhfkit dpo` and
    `rlhfkit online-dpo`.

    `ref(batch)` gives the (2, n) reference log-probs (None: a reference-free loss, zeros);
    `losses(policy chosen, policy rejected, ref chosen, ref rejected)` returns per-pair
    `losses`, `chosen_rewards`, `rejected_rewards` (`core.PreferenceLosses`); with `token_mean`
    it gets token-mean log-probs. Stats are sums over the batch's pairs (`PAIR_STAT_KEYS`: loss
    share, rewards, correct pairs, summed policy log-probs).
    """
    logps = pair_logps(model, batch)
    ref_logps = ref(batch).to(logps) if ref is not None else torch.zeros_like(logps)
    summed = logps.detach()
    if token_mean:
        counts = batch["counts"].to(logps).clamp(min=1)
        logps, ref_logps = logps / counts, ref_logps / counts
    out = losses(logps[0], logps[1], ref_logps[0], ref_logps[1])
    loss = out.losses.sum() / (n_pairs / world)
    stats = {
        "loss": loss.detach(),
        "chosen": out.chosen_rewards.sum(),
        "rejected": out.rejected_rewards.sum(),
        "correct": (out.chosen_rewards > out.rejected_rewards).sum(),
        "logps_chosen": summed[0].sum(),
        "logps_rejected": summed[1].sum(),
    }
    return loss, stats


def pair_metrics(sums: dict[str, float], n: float, prefix: str = "") -> dict[str, float]:
    """TRL's DPO metric names from `pair_loss` stats summed over n pairs."""
    return {
        f"{prefix}rewards/chosen": sums["chosen"] / n,
        f"{prefix}rewards/rejected": sums["rejected"] / n,
        f"{prefix}rewards/accuracies": sums["correct"] / n,
        f"{prefix}rewards/margins": (sums["chosen"] - sums["rejected"]) / n,
        f"{prefix}logps/chosen": sums["logps_chosen"] / n,
        f"{prefix}logps/rejected": sums["logps_rejected"] / n,
    }
