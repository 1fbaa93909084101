#!/usr/bin/env python
"""CPU seconds of one rollout on the anchor GRPO workload: 16 prompts × 4 samples, ≤ 32 new
tokens at temperature 1, the anchor policy loaded as the trainers load it
(`models.load_policy`), one torch thread, float32. Variants, alternated round by round in one
process so a slow minute of the shared host hits both:

- `shared`: what `rollout.generate` does: each distinct prompt prefilled once, its keys and
  values copied to its samples (`generate` docstring, point 5);
- `per_row`: every row prefilled on its own (the prefill before that change).

The two must sample the same tokens with the same log-probs; the script checks it and says so.

    python -m benchmarks.generate_cost [--assets DIR] [--rounds 5] [--calls 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

from benchmarks.assets import DEFAULT_DIR, anchor_assets
from benchmarks.common import command, load_avg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--assets", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=4, help="rollouts per variant and round")
    args = ap.parse_args()
    torch.set_num_threads(1)
    assets = anchor_assets(args.assets)

    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer
    from rlhfkit.rollout.generate import RolloutConfig, generate, row_seeds

    module = sys.modules["rlhfkit.rollout.generate"]  # the package re-exports the function

    tok = load_tokenizer(str(assets / "tokenizer"))
    tok.padding_side = "left"
    policy = load_policy(ModelConfig(name_or_path=str(assets / "policy")), tok).eval()
    lines = (assets / "prompts.jsonl").read_text().splitlines()[:16]
    prompts = [json.loads(line)["prompt"] for line in lines for _ in range(4)]
    enc = tok(prompts, return_tensors="pt", padding=True)
    cfg = RolloutConfig(max_new_tokens=32, temperature=1.0, batch_size=64)

    def per_row(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(ids.shape[0])
        return rows, rows

    def rollout(variant: str, call: int):
        seeds = row_seeds((0, call), range(64))
        patch = mock.patch.object(module, "distinct_prompts", per_row)
        with patch if variant == "per_row" else contextlib.nullcontext():
            return generate(
                policy, enc.input_ids, enc.attention_mask, cfg, seeds,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            )  # fmt: skip

    a, b = rollout("shared", 0), rollout("per_row", 0)
    same = torch.equal(a.response_ids, b.response_ids) and torch.equal(a.logprobs, b.logprobs)
    seconds: dict[str, list[float]] = {"shared": [], "per_row": []}
    for r in range(args.rounds):
        for variant in seconds:
            start = time.process_time()
            for call in range(args.calls):
                rollout(variant, 1 + r * args.calls + call)
            seconds[variant].append((time.process_time() - start) / args.calls)
    out = {v: round(statistics.median(s), 4) for v, s in seconds.items()}
    print(json.dumps({
        "bench": "generate_cost", "cpu_s_per_rollout": out,
        "saved": round(1 - out["shared"] / out["per_row"], 3),
        "same_tokens_and_logprobs": same, "load_avg": load_avg(), "command": command(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
