"""Reward-model training throughput on the anchor workload (`../shared/bench/README.md`).

The workload of TRL's `RewardTrainer` row: the anchor assets' GPT-2 reward model (4 layers,
d = 256, random init) on `preferences.jsonl`, 16 pairs per optimiser step, max length 128,
Bradley–Terry loss, 2 torch threads, fp32 (and bf16 autocast for the side row). This runs
`rlhfkit.algos.rm.train` itself (the same code `rlhfkit rm` runs) and prints one JSON line per
precision with the fields `bench_trl.py` reports: median s/step after 2 warm-up steps, pairs/s,
non-padding tokens/s, peak RSS (MiB, the whole process).

Step times are the differences between consecutive `metrics.jsonl` rows (logged every step, like
TRL's `on_step_end` timer). Each precision runs in its own process (peak RSS is per process).

    python /work/shared/bench/make_assets.py --out ~/.cache/rlhfkit-anchors/assets   # once
    .venv/bin/python benchmarks/rm_throughput.py [--assets DIR] [--steps 40] [--precision fp32 bf16]

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
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_ASSETS = Path.home() / ".cache" / "rlhfkit-anchors" / "assets"


def matmul_gflops(reps: int = 15, n: int = 1024) -> float:
    """The same machine-speed probe as bench_trl.py (median fp32 GEMM throughput)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return round(2 * n**3 / statistics.median(times) / 1e9, 1)


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
    from rlhfkit.engine.metrics import read_metrics

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
            "engine": {
                "seed": 42,
                "device": "cpu",
                "threads": threads,
                "mixed_precision": "bf16" if precision == "bf16" else "no",
                "resume": False,
            },
        }
    )
    before = matmul_gflops()
    t0 = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t0
    after = matmul_gflops()
    rows = [r for r in read_metrics(Path(out) / "metrics.jsonl") if "loss/rm" in r]
    times = [b["time"] - a["time"] for a, b in zip(rows, rows[1:], strict=False)]
    # the first row's time counts from the logger's start (model load); drop it with warm-up
    measured = times[warmup - 1 :] if warmup > 0 else times
    tok = [r["perf/tokens"] for r in rows[1:]]
    med = statistics.median(measured)
    tokens_per_step = statistics.fmean(tok[warmup - 1 :])
    return {
        "trainer": "rlhfkit.algos.rm",
        "variant": precision,
        "dropout": dropout,
        "prompt_template": "chat" if hh else "raw",
        "steps": steps,
        "warmup_steps": warmup,
        "measured_steps": len(measured),
        "threads": threads,
        "s_per_step": round(med, 4),
        "s_per_step_min": round(min(measured), 4),
        "s_per_step_max": round(max(measured), 4),
        "samples_per_step": 16,
        "sample_unit": "preference pairs",
        "samples_per_s": round(16 / med, 2),
        "train_tokens_per_step": round(tokens_per_step, 1),
        "tokens_per_s": round(tokens_per_step / med, 1),
        "tokens_per_s_basis": "non-padding tokens (chosen+rejected) per step / median s_per_step",
        "train_wall_s": round(wall, 2),
        "calib_gflops_before": before,
        "calib_gflops_after": after,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "load_avg_1min": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=Path, default=DEFAULT_ASSETS)
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
    args = ap.parse_args()
    if not (args.assets / "preferences.jsonl").is_file():
        sys.exit(
            f"no assets at {args.assets}: run /work/shared/bench/make_assets.py --out {args.assets}"
        )
    if args.one:  # child process: one precision, one JSON line on stdout
        result = run_one(
            args.assets, args.steps, args.warmup, args.one, args.threads, args.dropout, args.hh
        )
        print(json.dumps(result), flush=True)
        return
    for precision in args.precision:
        cmd = [sys.executable, __file__, "--assets", str(args.assets), "--steps", str(args.steps)]
        cmd += ["--warmup", str(args.warmup), "--threads", str(args.threads), "--one", precision]
        cmd += ["--dropout"] if args.dropout else []
        cmd += ["--hh"] if args.hh else []
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(proc.stderr[-3000:])
            sys.exit(f"{precision} run failed (exit {proc.returncode})")
        print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
