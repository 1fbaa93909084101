#!/usr/bin/env python
"""CPU seconds of the anchor GRPO batch's prompt-shared work (16 prompts × 4 samples, ≤ 32 new
tokens at temperature 1; the anchor policy and reward model loaded as the trainers load them),
one torch thread, float32, each variant alternated round by round in one process so a slow
minute of the shared host hits both:

- `rollout`: `rollout.generate` with each distinct prompt prefilled once (`shared`) against
  every row prefilled on its own (`per_row`; the prefill before that change). The two must
  sample the same tokens with the same log-probs; the line says whether they did.
- `policy_fwd_bwd`: `rollout.response_logprobs` over that rollout with the entropy, then the
  backward of the summed valid log-probs, with each prompt run once (`shared`,
  `models.prompt_sharing`) against the full forward (`per_row`).
- `rm_score`: `RewardModelScorer` on it, the same two ways.

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
from benchmarks.common import command, load_avg, positive
from rlhfkit.engine import keep_freed_memory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--assets", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--rounds", type=positive, default=5)
    ap.add_argument("--calls", type=positive, default=4, help="calls per variant and round")
    args = ap.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as every trainer's Engine does: no page faults per fresh tensor
    assets = anchor_assets(args.assets)

    from rlhfkit.models import ModelConfig, load_policy, load_reward_model, load_tokenizer
    from rlhfkit.rollout import RewardModelScorer, response_logprobs
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
    reward_model = load_reward_model(str(assets / "reward"))

    def unshared(variant: str) -> contextlib.AbstractContextManager:
        """`per_row`: prompt sharing off where the policy and the scorer ask for it."""
        stack = contextlib.ExitStack()
        if variant == "per_row":
            for name in ("rlhfkit.rollout.forward", "rlhfkit.rollout.scorers"):
                no = mock.patch.object(sys.modules[name], "can_share_prompts", lambda body: False)
                stack.enter_context(no)
        return stack

    def policy_step(variant: str, call: int) -> None:
        with unshared(variant):
            lp, _ = response_logprobs(
                policy, a.input_ids, a.attention_mask, a.prompt_len, 1.0, True
            )
        (lp * a.response_mask).sum().backward()
        policy.zero_grad(set_to_none=True)

    def score(variant: str, call: int) -> None:
        with unshared(variant):
            RewardModelScorer(reward_model)(prompts, [""] * len(prompts), a)

    work = {"rollout": rollout, "policy_fwd_bwd": policy_step, "rm_score": score}
    seconds = {(w, v): [] for w in work for v in ("shared", "per_row")}
    for r in range(args.rounds):
        for (name, variant), times in seconds.items():
            start = time.process_time()
            for call in range(args.calls):
                work[name](variant, 1 + r * args.calls + call)
            times.append((time.process_time() - start) / args.calls)
    out = {
        name: {v: round(statistics.median(seconds[name, v]), 4) for v in ("shared", "per_row")}
        for name in work
    }
    print(json.dumps({
        "bench": "generate_cost", "cpu_s": out,
        "saved": {n: round(1 - o["shared"] / o["per_row"], 3) for n, o in out.items()},
        "same_tokens_and_logprobs": same, "load_avg": load_avg(), "command": command(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
