"""Generation alone, engine against engine, on SmolLM2-135M-Instruct: the `grpo_smollm2` rollout
(8 arithmetic questions in the chat template × 8 replies, temperature 0.7, no EOS forced) with
the local sampler and with vLLM in this process, at several reply budgets.

Reported per (engine, budget): generated tokens, wall seconds, CPU seconds of this process (user
+ system), and tokens per wall second and per CPU second, the median of `--rounds` rounds after
one warm-up. Run it with `--threads 1` on a loaded machine: CPU seconds at one thread measure the
work each engine does and are far steadier than wall time there.

    python -m benchmarks.real.engine_generation --engine local --max-new-tokens 32 256
    python -m benchmarks.real.engine_generation --engine vllm --max-new-tokens 32 256   # vLLM venv

One JSON line per budget is appended to runs/real/engine_generation.jsonl.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from benchmarks.common import emit, load_avg, peak_rss_mib
from benchmarks.real.grpo_smollm2 import write_problems
from benchmarks.real.realdata import model_dir

OUT = Path("runs/real")


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--engine", choices=["local", "vllm"], default="local")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--max-new-tokens", type=int, nargs="+", default=[32, 256])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from rlhfkit.data import collate_prompts, encode_prompts, ensure_pad_token, read_prompts
    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer
    from rlhfkit.rollout import LocalEngine, RolloutConfig, VLLMConfig, policy_weights

    model = model_dir()
    train, _, _ = write_problems(OUT / "engine_arith", args.prompts, 8)
    tok = load_tokenizer(str(model))
    pad = ensure_pad_token(tok)
    records = read_prompts(str(train)).records[: args.prompts]
    encoded = encode_prompts(tok, [r for r in records for _ in range(args.group)], 64, "chat")
    batch = collate_prompts(encoded, pad)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    autocast = args.engine == "local" and args.precision == "bf16"
    if args.engine == "local":
        # float32 weights, bf16 autocast: what a trainer with engine.mixed_precision=bf16 runs
        engine = LocalEngine(load_policy(ModelConfig(name_or_path=str(model))).eval(), tok)
    else:
        from rlhfkit.rollout.engines.vllm import VLLMEngine

        name = {"fp32": "float32", "bf16": "bfloat16"}[args.precision]
        longest = 64 + max(args.max_new_tokens) + 8
        engine = VLLMEngine(str(model), tok, VLLMConfig(dtype=name, max_model_len=longest), seed=0)
        policy = load_policy(ModelConfig(name_or_path=str(model))).eval()
        t0 = time.perf_counter()
        engine.push_weights(policy_weights(policy), 1)
        push_s = time.perf_counter() - t0
    for budget in args.max_new_tokens:
        cfg = RolloutConfig(max_new_tokens=budget, temperature=0.7, batch_size=len(ids))
        walls, cpus, tokens = [], [], []
        for r in range(args.rounds + 1):
            seeds = torch.arange(len(ids)) + 1000 * r
            w0, c0 = time.perf_counter(), cpu_seconds()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = engine.generate(ids, mask, cfg, seeds)
            if r == 0:
                continue  # warm-up
            walls.append(time.perf_counter() - w0)
            cpus.append(cpu_seconds() - c0)
            tokens.append(int(out.response_mask.sum()))
        n = statistics.median(tokens)
        emit(
            {
                "engine": args.engine, "precision": args.precision, "threads": args.threads,
                "rows": len(ids), "max_new_tokens": budget, "tokens": n,
                "wall_s": round(statistics.median(walls), 3), "cpu_s": round(statistics.median(cpus), 3),
                "tokens_per_s": round(n / statistics.median(walls), 1),
                "tokens_per_cpu_s": round(n / statistics.median(cpus), 1),
                "weight_push_s": round(push_s, 3) if args.engine == "vllm" else None,
                "peak_rss_mib": peak_rss_mib(), "load_avg": load_avg(),
            },
            OUT / "engine_generation.jsonl",
        )  # fmt: skip
    engine.close()


if __name__ == "__main__":
    main()
