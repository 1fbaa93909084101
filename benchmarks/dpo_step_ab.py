"""Interleaved A/B of one DPO step: rlhfkit's against a plain PyTorch step shaped like TRL's.

On a loaded, shared machine, separate runs minutes apart measure the load as much as the code
(docs/dpo_bon.md). This script alternates the two steps in one process on the same 8-pair
batches of the anchor workload, so load drift hits both alike, and reports the median of each
and the median of the per-round ratios.

- A, the TRL-shaped step (what `DPOTrainer` computes with its defaults; not TRL itself, whose
  own figure comes from running TRL's `DPOTrainer` on the same assets): the 16 rows prompt + chosen, prompt + rejected,
  right-padded; the full policy forward with logits at every position and a float32
  log-softmax over the vocabulary; the same for a frozen reference under no_grad; summed
  response log-probs; the sigmoid loss; backward; AdamW.
- B, rlhfkit's step (`update.pairs.pair_logps`, `core.dpo_sigmoid_losses`): 8 shared-prompt
  rows, the LM head at response positions only, the reference log-probs cached (read from a
  tensor; `--live` also runs the reference forward every step).

Both in fp32, dropout off, 2 threads, same weights, lr 1e-6. `--cpu-time` runs 1 thread and
times each step by the CPU time of that thread (`time.thread_time`): the work done, which time
slices lost to other processes do not inflate (the measure to use on a loaded machine).

    python -m benchmarks.dpo_step_ab [--assets DIR] [--rounds 20] [--live] [--cpu-time]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

from benchmarks.assets import DEFAULT_DIR, anchor_assets
from benchmarks.common import load_avg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--assets", type=Path, default=DEFAULT_DIR, help="built by benchmarks.assets when absent"
    )
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--live", action="store_true", help="B also runs the reference every step")
    ap.add_argument("--cpu-time", action="store_true", help="1 thread, timed by its CPU time")
    args = ap.parse_args()
    anchor_assets(args.assets)
    if args.cpu_time:
        args.threads = 1
    clock = time.thread_time if args.cpu_time else time.perf_counter

    import torch
    import torch.nn.functional as F
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    from rlhfkit.core import dpo_sigmoid_losses
    from rlhfkit.data import collate_pairs, encode_pairs, read_preferences
    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer
    from rlhfkit.update.pairs import collate, pair_logps

    tok = load_tokenizer(args.assets / "tokenizer")
    pairs = read_preferences(args.assets / "preferences.jsonl").records
    n_batches = args.rounds + args.warmup
    items = encode_pairs(tok, pairs[: 8 * n_batches], 128, template="raw")
    batches = [items[8 * k : 8 * k + 8] for k in range(n_batches)]
    pad = tok.pad_token_id

    def models():
        policy = load_policy(ModelConfig(name_or_path=str(args.assets / "policy"))).eval()
        ref = copy.deepcopy(policy).requires_grad_(False)
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-6, fused=True)
        return policy, ref, opt

    a_policy, a_ref, a_opt = models()
    b_policy, b_ref, b_opt = models()
    with torch.no_grad():
        cached = [pair_logps(b_ref, collate(b, pad, True)) for b in batches]

    def full_logps(model, batch):
        ids, mask, resp = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
        logits = model(input_ids=ids, attention_mask=mask.long(), use_cache=False).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        tok_lp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        summed = (tok_lp * resp[:, 1:]).sum(-1)
        n = batch["num_pairs"]
        return summed[:n], summed[n:]

    def step_a(k):
        batch = collate_pairs(batches[k], pad)
        pc, pr = full_logps(a_policy, batch)
        with torch.no_grad():
            rc, rr = full_logps(a_ref, batch)
        loss = -F.logsigmoid(0.1 * ((pc - rc) - (pr - rr))).mean()
        loss.backward()
        a_opt.step()
        a_opt.zero_grad(set_to_none=True)
        return float(loss)

    def step_b(k):
        batch = collate(batches[k], pad, True)
        lp = pair_logps(b_policy, batch)
        if args.live:
            with torch.no_grad():
                ref = pair_logps(b_ref, batch)
        else:
            ref = cached[k]
        loss = dpo_sigmoid_losses(lp[0], lp[1], ref[0], ref[1], 0.1).losses.mean()
        loss.backward()
        b_opt.step()
        b_opt.zero_grad(set_to_none=True)
        return float(loss)

    ta, tb, losses = [], [], []
    for k in range(n_batches):
        order = (step_a, step_b) if k % 2 == 0 else (step_b, step_a)
        times = {}
        for fn in order:
            t = clock()
            losses.append((fn.__name__, fn(k)))
            times[fn.__name__] = clock() - t
        if k >= args.warmup:
            ta.append(times["step_a"])
            tb.append(times["step_b"])
    first = {name: value for name, value in losses[:2]}
    print(
        json.dumps(
            {
                "bench": "dpo_step_ab",
                "reference_b": "live" if args.live else "cached",
                "clock": "thread CPU time, 1 thread"
                if args.cpu_time
                else f"wall, {args.threads} threads",
                "rounds": len(ta),
                "trl_shaped_s_per_step": round(statistics.median(ta), 4),
                "rlhfkit_s_per_step": round(statistics.median(tb), 4),
                "median_ratio_a_over_b": round(
                    statistics.median(a / b for a, b in zip(ta, tb, strict=True)), 3
                ),
                "first_losses_equal": abs(first["step_a"] - first["step_b"]) < 1e-5,
                "load_avg_1min": load_avg(),
            }
        )
    )


if __name__ == "__main__":
    main()
