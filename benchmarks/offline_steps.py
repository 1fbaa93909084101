"""Shared measuring code of the offline-trainer benchmarks (`rm_throughput.py`,
`dpo_throughput.py`): the machine-speed probe, the engine block, one timed training run read back
from its `metrics.jsonl`, and the one-child-process-per-variant driver."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speed_switches import engine_switches


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


def engine_settings(threads: int, precision: str) -> dict[str, Any]:
    return {
        "seed": 42,
        "device": "cpu",
        "threads": threads,
        "mixed_precision": "bf16" if precision == "bf16" else "no",
        "resume": False,
        **engine_switches(),
    }


def timed_steps(
    train: Callable[[Any], Any],
    cfg: Any,
    loss_key: str,
    warmup: int,
    samples_per_step: int,
    sample_unit: str,
) -> dict[str, Any]:
    """Run `train(cfg)`; the step time is the median gap between consecutive metric lines with
    `loss_key` after `warmup` steps (the first line's time counts from the logger's start, model
    loading included, so it is always dropped with the warm-up)."""
    from rlhfkit.engine.metrics import read_metrics

    before = matmul_gflops()
    t0 = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t0
    after = matmul_gflops()
    rows = [r for r in read_metrics(Path(cfg.out_dir) / "metrics.jsonl") if loss_key in r]
    times = [b["time"] - a["time"] for a, b in zip(rows, rows[1:], strict=False)]
    measured = times[warmup - 1 :] if warmup > 0 else times
    tokens_per_step = statistics.fmean([r["perf/tokens"] for r in rows[1:]][warmup - 1 :])
    med = statistics.median(measured)
    return {
        "steps": len(rows),
        "warmup_steps": warmup,
        "measured_steps": len(measured),
        "s_per_step": round(med, 4),
        "s_per_step_min": round(min(measured), 4),
        "s_per_step_max": round(max(measured), 4),
        "samples_per_step": samples_per_step,
        "sample_unit": sample_unit,
        "samples_per_s": round(samples_per_step / med, 2),
        "train_tokens_per_step": round(tokens_per_step, 1),
        "tokens_per_s": round(tokens_per_step / med, 1),
        "train_wall_s": round(wall, 2),
        "calib_gflops_before": before,
        "calib_gflops_after": after,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "load_avg_1min": os.getloadavg()[0],
    }


def run_child(script: str, argv: list[str], label: str) -> None:
    """Run `script argv` in a fresh process (peak RSS per variant) and print its JSON line."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-3000:])
        sys.exit(f"{label} run failed (exit {proc.returncode})")
    print(lines[-1], flush=True)
