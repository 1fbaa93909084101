"""Padding saved by token-budget batching on real preference data.

    python -m benchmarks.data_padding [--data FILE] [--tokenizer DIR] [--max-length 1024] \
        [--pairs-per-batch 8]

By default the HH-RLHF helpful-online test split and the stories260K tokenizer under
$RLHFKIT_DATA_DIR (`benchmarks.common.HH_FILE`, `STORIES_DIR`).

Reads the pairs (bad rows skipped and counted), tokenizes them, and compares, on the (2B, T)
pair batches `collate_pairs` builds: fixed batches of `--pairs-per-batch` pairs in random order
(mean over 5 seeds) against `TokenBudgetSampler` with the budget that gives the same number of
batches or fewer (`max_tokens` = pairs-per-batch × the mean pair length × 2 rows, found by
doubling search). Prints real tokens, padded tokens, the padding fraction and the saving.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import HH_FILE, STORIES_DIR
from rlhfkit.data import (
    TokenBudgetSampler,
    encode_pairs,
    ensure_pad_token,
    fixed_batches,
    read_preferences,
)


def padded_cost(lc: list[int], lr: list[int], batches: list[list[int]]) -> tuple[int, int]:
    """(real tokens, padded tokens) of (2B, T) pair batches: T is the longest of both sides."""
    real = sum(lc[i] + lr[i] for b in batches for i in b)
    padded = sum(2 * len(b) * max(max(lc[i], lr[i]) for i in b) for b in batches)
    return real, padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(HH_FILE))
    ap.add_argument("--tokenizer", default=str(STORIES_DIR))
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--pairs-per-batch", type=int, default=8)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    ensure_pad_token(tok)
    res = read_preferences(args.data, on_error="skip")
    t0 = time.perf_counter()
    items = encode_pairs(tok, res.records, max_length=args.max_length)
    t_enc = time.perf_counter() - t0
    lc = [len(it.chosen_ids) for it in items]
    lr = [len(it.rejected_ids) for it in items]
    lengths = [it.length for it in items]
    n = len(items)
    print(
        f"{args.data}: {res.n_rows} rows, {n} pairs, {res.n_skipped} skipped, notes {dict(res.notes)}"
    )
    print(
        f"tokenized in {t_enc:.1f}s; {sum(it.truncated for it in items)} truncated to {args.max_length}"
    )

    b = args.pairs_per_batch
    fixed = [padded_cost(lc, lr, fixed_batches(n, b, seed=s)) for s in range(5)]
    n_fixed = len(fixed_batches(n, b))
    real = fixed[0][0]
    fixed_padded = sum(p for _, p in fixed) / len(fixed)

    # Smallest budget (in 2-row pair tokens) that needs no more batches than the fixed plan.
    budget = max(lengths)
    while len(TokenBudgetSampler(lengths, budget, seed=0)) > n_fixed:
        budget = int(budget * 1.1) + 1
    sampler = TokenBudgetSampler(lengths, budget, seed=0)
    _, dyn_padded = padded_cost(lc, lr, sampler.batches())

    def frac(padded: float) -> float:
        return 1 - real / padded

    print(f"real tokens: {real}")
    print(
        f"fixed {b} pairs/batch: {n_fixed} batches, {fixed_padded:.0f} padded tokens,"
        f" padding fraction {frac(fixed_padded):.3f}"
    )
    print(
        f"token budget {budget} per pair-row (x2 rows): {len(sampler)} batches,"
        f" {dyn_padded} padded tokens, padding fraction {frac(dyn_padded):.3f}"
    )
    floor = sum(2 * max(c, r) for c, r in zip(lc, lr, strict=True))
    print(
        f"floor (chosen and rejected padded to each other only): padding fraction {frac(floor):.3f}"
    )
    print(f"padded tokens saved: {1 - dyn_padded / fixed_padded:.1%}")


if __name__ == "__main__":
    main()
