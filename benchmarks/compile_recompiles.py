"""How many graphs `engine.compile` builds over batches of changing length, per `dynamic` mode.

A 3-block GPT-2 (d = 32) runs forward + backward on batches of 3 rows and lengths 10, 13, 17, 9
(as the trainers' batches change length), its blocks compiled as `engine.compile` does
(`rlhfkit.engine.compile.compile_blocks`), in three ways, each in its own process:

- `auto`: `dynamic=None`, PyTorch's automatic dynamic shapes (static first, symbolic after the
  first change);
- `dynamic`: `dynamic=True`, symbolic from the first call;
- `bucket`: `dynamic=False` with lengths padded up to a multiple of 16 (static length buckets).

Prints per batch the graphs compiled so far and, at the end, the seconds spent compiling
(meaningful only on a quiet machine; the graph counts are deterministic).

    OMP_NUM_THREADS=1 python -m benchmarks.compile_recompiles [--mode auto dynamic bucket]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

LENGTHS = (10, 13, 17, 9)


def _run(mode: str) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import rlhfkit.engine.compile as comp

    comp.DYNAMIC = {"auto": None, "dynamic": True, "bucket": False}[mode]
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=2, n_positions=64)
    model = GPT2LMHeadModel(cfg).eval()
    comp.compile_blocks(model, print)
    graphs = []
    for length in LENGTHS:
        padded = -(-length // 16) * 16 if mode == "bucket" else length
        ids = torch.randint(0, 64, (3, padded))
        model(input_ids=ids, use_cache=False).logits.sum().backward()
        graphs.append(comp.compiled_graphs())
    return {
        "mode": mode,
        "lengths": LENGTHS,
        "graphs_after_each_batch": graphs,
        "compile_s": round(comp.compile_seconds(), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", nargs="+", default=["auto", "dynamic", "bucket"])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_run(args.one)))
        return
    for mode in args.mode:
        out = subprocess.run(
            [sys.executable, __file__, "--one", mode], check=True, capture_output=True, text=True
        )
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
