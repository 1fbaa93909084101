"""Reward-model training throughput on the anchor workload (`benchmarks/README.md`).

The workload of TRL's `RewardTrainer` row: the anchor assets' GPT-2 reward model (4 layers,
d = 256, random init) on `preferences.jsonl`, 16 pairs per optimiser step, max length 128,
Bradley–Terry loss, 2 torch threads, fp32 (and bf16 autocast for the side row). This runs
`rlhfkit.algos.rm.train` itself (the same code `rlhfkit rm` runs) and prints one JSON line per
precision with the fields the TRL side of the comparison reports: median s/step after 2 warm-up steps, pairs/s,
non-padding tokens/s, peak RSS (MiB, the whole process).

Step times are the differences between consecutive `metrics.jsonl` rows (logged every step, like
TRL's `on_step_end` timer). Each precision runs in its own process (peak RSS is per process).

    python -m benchmarks.rm_throughput [--assets DIR] [--steps 40] [--precision fp32 bf16]

(the assets are built into runs/bench_assets by `benchmarks.assets` on first use).

The texts are TRL's: `data.prompt_template=raw` feeds prompt + reply + EOS as they are, the
sequences TRL's `RewardTrainer` builds from a non-conversational row (`--hh` formats the prompt
in the HH "\\n\\nHuman: …\\n\\nAssistant:" format instead, ≈ 14 more tokens per comparison with
the anchor tokenizer, what this benchmark measured before). Differences from TRL's run, on
purpose: a comparison's two replies share one copy of the prompt (`data.share_prompt`, exact),
and batches are length-sorted within the epoch (`data.max_pairs`); tokens/s counts what each
trainer actually processed. Dropout is off, as
in TRL's `RewardTrainer` (`disable_dropout=True`, its default); `--dropout` keeps the model's
dropout (rlhfkit's `disable_dropout: false` default, what this benchmark ran before).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.assets import DEFAULT_DIR, anchor_assets
from benchmarks.common import engine_settings, run_child, timed_steps
from benchmarks.speed_switches import add_flags, export, switches


def run_one(
    assets: Path,
    steps: int,
    warmup: int,
    precision: str,
    threads: int,
    dropout: bool,
    hh: bool = False,
) -> dict:
    import torch

    torch.set_num_threads(threads)
    import transformers

    transformers.logging.set_verbosity_error()
    from rlhfkit.algos.rm import RMConfig, train

    out = tempfile.mkdtemp(prefix="rlhfkit_rm_bench_")
    cfg = RMConfig.model_validate(
        {
            "out_dir": out,
            "model": {"name_or_path": str(assets / "reward"), "dtype": "float32"},
            "tokenizer": str(assets / "tokenizer"),
            "data": {
                "train": str(assets / "preferences.jsonl"),
                "validation_fraction": 0.0,
                "max_length": 128,
                "max_tokens": 1_000_000,  # no token cap: exactly 16 pairs per step
                "max_pairs": 16,
                "prompt_template": "chat" if hh else "raw",
            },
            "optim": {"lr": 1e-5},
            "max_steps": steps,
            "log_every": 1,
            "normalize": "none",
            "disable_dropout": not dropout,  # TRL's RewardTrainer disables dropout by default
            "engine": engine_settings(threads, precision),
        }
    )
    timing = timed_steps(train, cfg, "loss/rm", warmup, 16, "preference pairs")
    return {
        "trainer": "rlhfkit.algos.rm",
        "variant": precision,
        "dropout": dropout,
        "prompt_template": "chat" if hh else "raw",
        "threads": threads,
        **timing,
        "tokens_per_s_basis": "non-padding tokens (chosen+rejected) per step / median s_per_step",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--assets", type=Path, default=DEFAULT_DIR, help="built by benchmarks.assets when absent"
    )
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument(
        "--dropout",
        action="store_true",
        help="train with the model's dropout (rlhfkit's default) instead of without it (TRL's)",
    )
    ap.add_argument(
        "--hh", action="store_true", help="HH-format the prompts (longer rows than TRL's)"
    )
    ap.add_argument("--one", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    add_flags(ap)
    args = ap.parse_args()
    export(args)
    anchor_assets(args.assets)
    if args.one:  # child process: one precision, one JSON line on stdout
        result = run_one(
            args.assets, args.steps, args.warmup, args.one, args.threads, args.dropout, args.hh
        )
        print(json.dumps({**result, **switches()}), flush=True)
        return
    for precision in args.precision:
        argv = ["--assets", str(args.assets), "--steps", str(args.steps)]
        argv += ["--warmup", str(args.warmup), "--threads", str(args.threads), "--one", precision]
        argv += ["--dropout"] if args.dropout else []
        argv += ["--hh"] if args.hh else []
        run_child("benchmarks.rm_throughput", argv, precision)


if __name__ == "__main__":
    main()
