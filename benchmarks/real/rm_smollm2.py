"""Reward model from SmolLM2-135M-Instruct on real HH-RLHF pairs: held-out accuracy (Wilson
95 % interval), calibration (ECE), tokens/s, peak RSS, wall time.

The split is fixed by dialogue (`realdata.hh_split`: 80 / 20, seed 0; 906 training and 226
held-out pairs); `--train-pairs` / `--held-out-pairs` cut each side to its first N pairs for a
shorter run (the same split). One epoch of all pairs takes about 30 min on 2 CPU cores. Preset
`rm_smollm2` (full fine-tuning) or `rm_smollm2_lora` (`--lora`). Also printed: the held-out
accuracy of "the longer reply wins", the baseline a length-biased RM reaches for free.

    python -m benchmarks.real.fetch_smollm2          # once
    python -m benchmarks.real.rm_smollm2 [--lora] [--train-pairs N] [--held-out-pairs N] [key=value ...]

One JSON line is appended to runs/real/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.common import emit, load_avg, peak_rss_mib
from benchmarks.real.realdata import hh_split, model_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lora", action="store_true", help="preset rm_smollm2_lora (else full)")
    ap.add_argument("--train-pairs", type=int, default=None, help="default: all 906")
    ap.add_argument("--held-out-pairs", type=int, default=None, help="default: all 226")
    ap.add_argument("--out", type=Path, default=None, help="run directory")
    ap.add_argument("overrides", nargs="*", help="RMConfig key=value overrides")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    from rlhfkit.algos.rm import RMConfig, train
    from rlhfkit.config import load_config
    from rlhfkit.eval.winrate import wilson_interval

    preset = "rm_smollm2_lora" if args.lora else "rm_smollm2"
    out = args.out or Path("runs") / preset
    train_file, held_file, counts = hh_split(
        Path("runs/real_split"), args.train_pairs, args.held_out_pairs
    )
    cfg = load_config(
        RMConfig,
        preset=preset,
        overrides=[
            f"out_dir={out}",
            f"model.name_or_path={model_dir()}",
            f"data.train={train_file}",
            f"data.validation={held_file}",
            *args.overrides,
        ],
    )
    t = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t

    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    tokens = sum(x.get("perf/tokens", 0) for x in lines)
    seconds = sum(x["perf/tokens"] / x["perf/tokens_per_s"] for x in lines if "perf/tokens" in x)
    held = [json.loads(x) for x in held_file.read_text().splitlines()]
    longer = sum(len(p["chosen"]) > len(p["rejected"]) for p in held) / len(held)
    m = result.metrics
    n = int(m["eval/pairs"])
    steps = max(x.get("step", 0) for x in lines)
    # Held-out accuracy as training goes on (eval_every > 0): how it moves with the pairs seen.
    curve = [
        {
            "step": x["step"],
            "pairs_seen": round(counts["train_pairs"] * x["step"] / max(steps, 1)),
            "accuracy": round(x["eval/accuracy"], 4),
            "ci95": [round(v, 3) for v in wilson_interval(x["eval/accuracy"], n)],
        }
        for x in lines
        if "eval/accuracy" in x
    ]
    low, high = wilson_interval(m["eval/accuracy"], n)
    emit(
        {
            "bench": "rm_smollm2",
            "variant": "lora r=16" if args.lora else "full",
            **counts,
            "max_length": cfg.data.max_length,
            "max_prompt_length": cfg.data.max_prompt_length,
            "precision": {"no": "fp32"}.get(cfg.engine.mixed_precision, cfg.engine.mixed_precision),
            "steps": steps,
            "held_out_accuracy": round(m["eval/accuracy"], 4),
            "held_out_accuracy_ci95": [round(low, 4), round(high, 4)],
            "held_out_margin": round(m["eval/margin"], 4),
            "held_out_ece": round(m["eval/ece"], 4),
            "held_out_curve": curve,
            "baseline_longer_reply_wins": round(longer, 4),
            "train_tokens": tokens,
            "train_tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
            "peak_rss_mib": peak_rss_mib(),
            "wall_s": round(wall, 1),
            "load_avg_1m": load_avg(),
            "model_dir": str(result.model_dir),
        },
        Path("runs/real/results.jsonl"),
        indent=True,
    )


if __name__ == "__main__":
    main()
