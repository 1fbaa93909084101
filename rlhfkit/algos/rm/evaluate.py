"""Reward-model evaluation on held-out comparisons: accuracy, margin, calibration, gold agreement.

- accuracy: fraction of pairs whose chosen reply scores higher (ties count as wrong).
- margin: mean of r(chosen) − r(rejected).
- calibration: the RM's Bradley–Terry probability that the reply it prefers is the labelled
  one, p = σ(|r_c − r_r|) ∈ [0.5, 1), against how often it is (a reliability diagram, Guo et al.
  2017; for RMs as in Bai et al. 2022 Fig. 10 and Stiennon et al. 2020). Bins of equal width over
  [0.5, 1]; ECE = Σ_bins (n_bin / N)·|mean p − accuracy|.
- gold agreement (simulated world, when pairs carry `meta["chosen_gold"]` and
  `meta["rejected_gold"]`): on pairs whose gold scores differ, the fraction where the RM ranks
  the gold-better reply higher; next to it the gold scorer's own agreement with the noisy labels
  (`eval/label_ceiling`), the best label accuracy a perfect model of the gold preference gets.
- gold agreement by group (`eval/gold_agreement_by`, when pairs carry groups, `groups_of`): the
  same agreement on each group of pairs separately, {"aspect/helpful", "aspect/harmless",
  "family/<family>", "source/<source>"} → {"rate", "agree", "n"}, and the two aspects as scalars
  `eval/gold_agreement_helpful` and `eval/gold_agreement_harmless` (curves during training).
  Anthropic evaluated its preference models on helpfulness and harmlessness test sets separately
  (Bai et al. 2022, arXiv:2204.05862, §3): one pooled accuracy hides an RM that ranks helpful
  replies well and harmful ones badly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from rlhfkit.data import EncodedPair, TokenBudgetSampler, collate_pairs
from rlhfkit.types import PreferencePair


def calibration_table(gaps: torch.Tensor, bins: int = 10) -> list[dict[str, float]]:
    """Reliability table of a Bradley–Terry RM from score gaps r_c − r_r (B,).

    For each pair the predicted probability of the RM's own pick is p = σ(|gap|) and the pick
    is right when gap > 0. Rows: {"lo", "hi", "count", "confidence" (mean p), "accuracy"} for
    the equal-width bins of [0.5, 1]; empty bins are left out.
    """
    gaps = gaps.detach().double().flatten()
    p = torch.sigmoid(gaps.abs())
    right = (gaps > 0).double()
    edges = torch.linspace(0.5, 1.0, bins + 1, dtype=torch.float64)
    index = torch.clamp(torch.bucketize(p, edges, right=True) - 1, 0, bins - 1)
    rows = []
    for k in range(bins):
        sel = index == k
        n = int(sel.sum())
        if n:
            rows.append(
                {
                    "lo": float(edges[k]),
                    "hi": float(edges[k + 1]),
                    "count": n,
                    "confidence": float(p[sel].mean()),
                    "accuracy": float(right[sel].mean()),
                }
            )
    return rows


def expected_calibration_error(table: Sequence[dict[str, float]]) -> float:
    """ECE = Σ (count / N)·|confidence − accuracy| over the rows of `calibration_table`."""
    total = sum(r["count"] for r in table)
    if total == 0:
        return 0.0
    return sum(r["count"] / total * abs(r["confidence"] - r["accuracy"]) for r in table)


def pair_metrics(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    gold_gaps: torch.Tensor | None = None,
    bins: int = 10,
    groups: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Metrics of scored pairs: chosen/rejected (P,) scores; gold_gaps (P,) gold_c − gold_r with
    NaN where unknown; groups: per pair the names of the groups it belongs to (`groups_of`).
    Keys: eval/accuracy, eval/margin, eval/ece, eval/pairs, eval/calibration (the table), and
    with gold: eval/gold_agreement, eval/label_ceiling, eval/gold_pairs, and with groups
    eval/gold_agreement_by and eval/gold_agreement_{helpful,harmless} (module docstring)."""
    gaps = (chosen.double() - rejected.double()).flatten()
    table = calibration_table(gaps, bins)
    out: dict[str, Any] = {
        "eval/accuracy": float((gaps > 0).double().mean()),
        "eval/margin": float(gaps.mean()),
        "eval/ece": expected_calibration_error(table),
        "eval/pairs": int(gaps.numel()),
        "eval/calibration": table,
    }
    if gold_gaps is not None:
        gold = gold_gaps.double().flatten()
        decided = torch.isfinite(gold) & (gold != 0)
        if bool(decided.any()):
            rm_says_chosen = gaps[decided] > 0
            gold_says_chosen = gold[decided] > 0
            out["eval/gold_agreement"] = float((rm_says_chosen == gold_says_chosen).double().mean())
            out["eval/label_ceiling"] = float(gold_says_chosen.double().mean())
            out["eval/gold_pairs"] = int(decided.sum())
        if groups is not None:
            by = agreement_by_group(gaps, gold, groups)
            out["eval/gold_agreement_by"] = by
            for aspect in ("helpful", "harmless"):
                if f"aspect/{aspect}" in by:
                    out[f"eval/gold_agreement_{aspect}"] = by[f"aspect/{aspect}"]["rate"]
    return out


def agreement_by_group(
    gaps: torch.Tensor, gold_gaps: torch.Tensor, groups: Sequence[Sequence[str]]
) -> dict[str, dict[str, float | int]]:
    """Per group g: over pairs i in g whose gold gap is finite and non-zero, agree = #{sign of the
    RM gap (P,) = sign of the gold gap (P,)}, n = #pairs, rate = agree / n (an RM gap of 0 reads as
    "rejected", as in eval/gold_agreement). Groups with no decided
    pair are left out; keys sorted."""
    if not len(groups) == gaps.numel() == gold_gaps.numel():
        raise ValueError(
            f"agreement_by_group: {gaps.numel()} RM gaps, {gold_gaps.numel()} gold gaps, "
            f"{len(groups)} group lists; they must be the same length"
        )
    counts: dict[str, list[int]] = {}
    for i, names in enumerate(groups):
        g = float(gold_gaps[i])
        if not math.isfinite(g) or g == 0:
            continue
        agree = int((float(gaps[i]) > 0) == (g > 0))
        for name in names:
            tally = counts.setdefault(name, [0, 0])
            tally[0] += agree
            tally[1] += 1
    return {k: {"rate": a / n, "agree": a, "n": n} for k, (a, n) in sorted(counts.items())}


def groups_of(pairs: Sequence[PreferencePair]) -> list[list[str]] | None:
    """Per pair its groups from meta: aspect/<meta aspect> ("harmless" for a harmful-family pair
    without one, else "helpful"), family/<meta family>, source/<meta source>; None when no pair
    has a family or aspect."""
    if not any("family" in p.meta or "aspect" in p.meta for p in pairs):
        return None
    out = []
    for p in pairs:
        family = p.meta.get("family")
        aspect = p.meta.get("aspect") or ("harmless" if family == "harmful" else "helpful")
        names = [f"aspect/{aspect}"]
        if family is not None:
            names.append(f"family/{family}")
        if p.meta.get("source") is not None:
            names.append(f"source/{p.meta['source']}")
        out.append(names)
    return out


def gold_gaps_of(pairs: Sequence[PreferencePair]) -> torch.Tensor | None:
    """gold_c − gold_r from each pair's meta (NaN where missing); None when no pair has it."""
    values = []
    for p in pairs:
        c, r = p.meta.get("chosen_gold"), p.meta.get("rejected_gold")
        ok = isinstance(c, (int, float)) and isinstance(r, (int, float))
        values.append(float(c) - float(r) if ok else float("nan"))
    gaps = torch.tensor(values, dtype=torch.float64)
    return gaps if bool(torch.isfinite(gaps).any()) else None


@torch.no_grad()
def score_pairs(
    reward_model: torch.nn.Module,
    items: Sequence[EncodedPair],
    pad_id: int,
    max_tokens: int,
    device: torch.device,
    process_index: int = 0,
    num_processes: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores of chosen and rejected replies (length-bucketed token-budget batches, one forward
    per batch over both). Returns (indices, chosen, rejected) of this process's share."""
    sampler = TokenBudgetSampler([it.length for it in items], max(max_tokens // 2, 1), False)
    idx, chosen, rejected = [], [], []
    for k, b in enumerate(sampler):
        if k % num_processes != process_index:
            continue
        batch = collate_pairs([items[i] for i in b], pad_id)
        scores = reward_model(
            batch["input_ids"].to(device), batch["attention_mask"].to(device)
        ).scores.float()
        n = len(b)
        idx.append(torch.tensor(b, dtype=torch.long))
        chosen.append(scores[:n].cpu())
        rejected.append(scores[n:].cpu())
    if not idx:
        empty = torch.zeros(0)
        return torch.zeros(0, dtype=torch.long), empty, empty
    return torch.cat(idx), torch.cat(chosen), torch.cat(rejected)
