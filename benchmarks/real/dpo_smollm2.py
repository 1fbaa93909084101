"""DPO with LoRA from SmolLM2-135M-Instruct on the fixed HH split: implicit-reward accuracy on
the held-out pairs (Wilson 95 % interval), and the held-out win rate of the DPO policy against
the starting model under the SmolLM2 reward model(s) trained by `rm_smollm2.py`, queried in
both orders (`rlhfkit.eval.judge_both_orders`).

    python -m benchmarks.real.rm_smollm2 --lora     # the judge (runs/rm_smollm2_lora/model)
    python -m benchmarks.real.dpo_smollm2 [--prompts 32] [key=value ...]

One JSON line is appended to runs/real/results.jsonl.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks.common import emit, load_avg, peak_rss_mib
from benchmarks.real.realdata import held_out_prompts, hh_split, model_dir, win_rates

JUDGES = {"rm_lora": Path("runs/rm_smollm2_lora/model"), "rm_full": Path("runs/rm_smollm2/model")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-pairs", type=int, default=64)
    ap.add_argument("--held-out-pairs", type=int, default=96)
    ap.add_argument("--prompts", type=int, default=32, help="held-out prompts for win rates")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--out", type=Path, default=Path("runs/dpo_smollm2"))
    ap.add_argument("overrides", nargs="*", help="DPOConfig key=value overrides")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    from rlhfkit.algos.dpo import DPOConfig, train
    from rlhfkit.config import load_config
    from rlhfkit.eval.winrate import wilson_interval
    from rlhfkit.rollout import RolloutConfig

    train_file, held_file, counts = hh_split(
        Path("runs/real_split"), args.train_pairs, args.held_out_pairs
    )
    base = model_dir()
    cfg = load_config(
        DPOConfig,
        preset="dpo_smollm2",
        overrides=[
            f"out_dir={args.out}",
            f"model.name_or_path={base}",
            f"data.train={train_file}",
            f"data.validation={held_file}",
            *args.overrides,
        ],
    )
    t = time.perf_counter()
    result = train(cfg)
    train_wall = time.perf_counter() - t
    m = result.metrics
    n = int(m["eval/pairs"])
    acc = m["eval/rewards/accuracies"]
    figures = {
        "bench": "dpo_smollm2",
        **counts,
        "max_length": cfg.data.max_length,
        "beta": cfg.beta,
        "held_out_implicit_reward_accuracy": round(acc, 4),
        "held_out_implicit_reward_accuracy_ci95": [round(v, 4) for v in wilson_interval(acc, n)],
        "held_out_reward_margin": round(m.get("eval/rewards/margins", float("nan")), 4),
        "train_wall_s": round(train_wall, 1),
    }
    judges = {k: v for k, v in JUDGES.items() if (v / "config.json").is_file()}
    if judges:
        rollout = RolloutConfig(
            max_new_tokens=args.max_new_tokens, temperature=0.7, batch_size=args.prompts
        )
        figures["win_rate_vs_start"] = win_rates(
            result.model_dir,
            base,
            held_out_prompts(held_file, args.prompts),
            judges,
            rollout,
            cfg.data.max_length + args.max_new_tokens,
        )
    else:
        figures["win_rate_vs_start"] = "no judge: run rm_smollm2.py first"
    figures.update(
        wall_s=round(time.perf_counter() - t, 1),
        peak_rss_mib=peak_rss_mib(),
        load_avg_1m=load_avg(),
        model_dir=str(result.model_dir),
    )
    emit(figures, Path("runs/real/results.jsonl"), indent=True)


if __name__ == "__main__":
    main()
