"""What every benchmark measures the same way: the machine's matrix-multiply rate, peak memory,
step times read back from a run's `metrics.jsonl`, timing rounds of a function, one fresh process
per variant, and the JSON line a benchmark prints; then the timed training runs the throughput
benchmarks share (offline: `timed_steps`; online: `iteration_times` and `result_line`).

- `HH_FILE`, `STORIES_DIR`: the real data the real-data benchmarks read, under
  `$RLHFKIT_DATA_DIR` (not in the repository).
- `gemm_gflops`: GFLOP/s of an n×n×n matmul (2·n³ FLOPs), median (or best) of `repeats` timed
  calls after one untimed call; measured before and after a run, it says how fast the machine
  was while the run was timed (a loaded host shows as a lower rate).
- `peak_rss_mib`: the process's peak resident memory (`ru_maxrss`, KiB on Linux), so a variant
  that needs its own peak runs in its own process (`run_child`).
- `step_gaps`: the seconds between consecutive metric lines after `warmup` of them (the first
  line's time counts from the logger's start, model loading included, so it always goes with the
  warm-up).
- `median_us`: median microseconds of `fn()` over `repeats` calls after one warm call.
- `run_child`: one variant in a fresh process, its JSON line passed on.
- `emit`: print the figures as one JSON line (with the command that reproduces them) and append
  that line to a results file when given.
- `engine_settings`, `timed_steps`: the engine block and one timed offline training run
  (`rm_throughput`, `dpo_throughput`).
- `timed_online_run`, `iteration_times`, `policy_shape`, `result_line`, `run_children`: the
  online throughput benchmarks' timed run, iteration times, FLOP-count inputs and JSON fields
  (`ppo_throughput`, `pg_throughput`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Real data and models that are not part of the repository (their size and licences): the
# HH-RLHF helpful-online test split and llama2.c's stories260K as a Hugging Face folder, kept in
# one folder given by RLHFKIT_DATA_DIR (default: `shared` beside the checkout, the developers').
DATA_DIR = Path(os.environ.get("RLHFKIT_DATA_DIR", ROOT.parent / "shared"))
HH_FILE = DATA_DIR / "data" / "hh-rlhf" / "helpful-online-test.jsonl.gz"
STORIES_DIR = DATA_DIR / "models" / "stories260K"


def gemm_gflops(dtype: str = "fp32", n: int = 1024, repeats: int = 15, best: bool = False) -> float:
    """GFLOP/s of `a @ b` for n×n `dtype` ("fp32" or "bf16") matrices: the median time of
    `repeats` calls (the fastest with `best`)."""
    import torch

    kind = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a, b = torch.randn(n, n).to(kind), torch.randn(n, n).to(kind)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    seconds = min(times) if best else statistics.median(times)
    return round(2 * n**3 / seconds / 1e9, 1)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def load_avg() -> float:
    """The host's 1-minute load average (a figure taken at load ≫ cores measures the load)."""
    return round(os.getloadavg()[0], 2)


def step_gaps(rows: Sequence[dict[str, Any]], warmup: int) -> list[float]:
    """Seconds between consecutive metric lines (`time` field), the first `warmup` gaps left out
    (the gap before line k + 1 is step k + 1's time)."""
    gaps = [b["time"] - a["time"] for a, b in zip(rows, rows[1:], strict=False)]
    return gaps[warmup - 1 :] if warmup > 0 else gaps


def median_us(fn: Callable[[], Any], repeats: int) -> float:
    """Median microseconds of one `fn()` call over `repeats` calls, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e6, 1)


def positive(text: str) -> int:
    """argparse type: an int ≥ 1 (a bad value is one usage line, not a traceback)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def command() -> str:
    """The command line that ran this benchmark, as `python -m benchmarks.NAME ARGS`."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None) or sys.argv[0]
    return " ".join(["python", "-m", name, *(shlex.quote(a) for a in sys.argv[1:])])


def emit(figures: dict[str, Any], results: Path | None = None, indent: bool = False) -> None:
    """Print `figures` + the command as one JSON line (after an indented copy when `indent`),
    and append the line to `results` when given."""
    figures = {**figures, "command": command()}
    if indent:
        print(json.dumps(figures, indent=2))
    line = json.dumps(figures)
    print(line, flush=True)
    if results is not None:
        results.parent.mkdir(parents=True, exist_ok=True)
        with results.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


def run_child(module: str, argv: Sequence[str], label: str) -> bool:
    """Run `python -m module argv` from the repository root in a fresh process (its own peak
    RSS and thread pool) and print its last JSON line; when it fails, print
    `{"bench": label, "status": "error", "stderr_tail": ...}` instead and return False."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", module, *argv], capture_output=True, text=True, env=env, cwd=ROOT
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        print(lines[-1], flush=True)
        return True
    error = {"bench": label, "status": "error", "exit": proc.returncode}
    print(json.dumps({**error, "stderr_tail": proc.stderr[-2000:]}), flush=True)
    return False


# -- training runs timed from their metrics.jsonl ------------------------------------------


def engine_settings(threads: int, precision: str) -> dict[str, Any]:
    """The benchmarks' engine settings, with this process's `--compile` / `--no-chunk`
    (`benchmarks.speed_switches`)."""
    from benchmarks.speed_switches import engine_switches

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

    before = gemm_gflops()
    t0 = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t0
    after = gemm_gflops()
    rows = [r for r in read_metrics(Path(cfg.out_dir) / "metrics.jsonl") if loss_key in r]
    measured = step_gaps(rows, warmup)
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
        "peak_rss_mib": peak_rss_mib(),
        "load_avg_1min": load_avg(),
    }


# -- online trainers (ppo_throughput, pg_throughput, ppo_scaling) -----------------------------

GEMM = dict(n=2048, repeats=6, best=True)  # the large-matmul rate the FLOP floor is set by


def iteration_times(rows: list[dict], warmup: int, replies: int) -> dict:
    """From a run's metric lines: the seconds between consecutive iterations after `warmup`,
    the median generated tokens per iteration and the median time split."""
    per_iter = step_gaps(rows, warmup)
    measured = rows[warmup:]
    split = {
        k: statistics.median(r[f"time/{k}"] for r in measured)
        for k in ("generation", "scoring", "training")
    }
    tokens = statistics.median(r["response/length_mean"] * replies for r in measured)
    return {"per_iter": per_iter, "tokens": tokens, "split": split}


def policy_shape(assets: Path) -> dict:
    """Mean prompt length and the policy's sizes, for the FLOP count."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets / "tokenizer")
    prompts = [json.loads(line)["prompt"] for line in open(assets / "prompts.jsonl")]
    p_mean = statistics.mean(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    model = AutoModelForCausalLM.from_pretrained(assets / "policy")
    d, vocab = model.config.n_embd, model.config.vocab_size
    n_body = sum(q.numel() for q in model.transformer.h.parameters())
    return {
        "p": p_mean,
        "n_body": n_body,
        "head": d * vocab,
        "layers": model.config.n_layer,
        "d": d,
    }


def result_line(bench: str, trainer: str, args: Any, t: dict, flops: dict, gemm: tuple) -> dict:
    """The JSON fields every throughput benchmark reports."""
    before, after = gemm
    s_iter = statistics.median(t["per_iter"])
    floor_s = flops["total"] / (max(before[args.precision], after[args.precision]) * 1e9)
    return {
        "bench": bench,
        "trainer": trainer,
        "precision": args.precision,
        "threads": args.threads,
        "iterations_measured": len(t["per_iter"]),
        "warmup": args.warmup,
        "s_per_iter": round(s_iter, 3),
        "s_per_iter_min": round(min(t["per_iter"]), 3),
        "s_per_iter_max": round(max(t["per_iter"]), 3),
        "iter_per_s": round(1 / s_iter, 4),
        "gen_tokens_per_iter": round(t["tokens"], 1),
        "tokens_per_s": round(t["tokens"] / s_iter, 1),
        "time_split_s": {k: round(v, 3) for k, v in t["split"].items()},
        "peak_rss_mib": peak_rss_mib(),
        "gemm_gflops_before": {k: round(v, 1) for k, v in before.items()},
        "gemm_gflops_after": {k: round(v, 1) for k, v in after.items()},
        "gflop_per_iter": {k: round(v / 1e9, 2) for k, v in flops.items()},
        "floor_s": round(floor_s, 3),
        "achieved_fraction": round(floor_s / s_iter, 3),
        "load_avg_1min": load_avg(),
    }


def timed_online_run(
    train: Callable[[], Any], run_dir: Path, threads: int
) -> tuple[list[dict[str, Any]], float, tuple[dict[str, float], dict[str, float]]]:
    """Run `train()` (an online trainer writing `run_dir/metrics.jsonl`) on `threads` torch
    threads between two GEMM probes; return (its iteration lines, wall seconds, (GEMM GFLOP/s
    before, after) for fp32 and bf16)."""
    import torch
    from transformers.utils import logging as hf_logging

    from rlhfkit.engine.metrics import read_metrics

    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.set_verbosity_error()
    before = {k: gemm_gflops(k, **GEMM) for k in ("fp32", "bf16")}
    start = time.perf_counter()
    train()
    wall = time.perf_counter() - start
    after = {k: gemm_gflops(k, **GEMM) for k in ("fp32", "bf16")}
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "reward/score_mean" in r]
    return rows, wall, (before, after)


def run_children(module: str, bench: str, args: Any, extra: list[str]) -> None:
    """Run each precision in a fresh process (`--child`) and print its JSON line (or the error)."""
    for precision in args.precision:
        argv = [
            "--child", "--assets", str(args.assets), "--precision", precision,
            "--iterations", str(args.iterations), "--warmup", str(args.warmup),
            "--threads", str(args.threads), *extra,
        ]  # fmt: skip
        run_child(module, argv, f"{bench}/{precision}")


def offline_reference_main(
    module: str, doc: str, run_one: Callable[..., dict], fp: list[str]
) -> None:
    """The command line of the offline preference benchmarks (`dpo_throughput`,
    `kto_throughput`): each precision × reference mode in a fresh process (`--one`), whose
    `run_one(assets, steps, warmup, precision, reference, threads)` result is printed as one JSON
    line with the speed switches. `fp`: the default precisions."""
    import argparse

    from benchmarks.assets import DEFAULT_DIR, anchor_assets
    from benchmarks.speed_switches import add_flags, export, switches

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument(
        "--assets", type=Path, default=DEFAULT_DIR, help="built by benchmarks.assets when absent"
    )
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", nargs="+", default=fp, choices=["fp32", "bf16"])
    ap.add_argument(
        "--reference", nargs="+", default=["cached", "live"], choices=["cached", "live"]
    )
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    add_flags(ap)
    args = ap.parse_args()
    if args.steps <= args.warmup:
        ap.error("--steps must exceed --warmup")
    export(args)
    anchor_assets(args.assets)
    if args.one:  # child process: one run, one JSON line on stdout
        precision, reference = args.one
        result = run_one(args.assets, args.steps, args.warmup, precision, reference, args.threads)
        print(json.dumps({**result, **switches()}), flush=True)
        return
    for precision in args.precision:
        for reference in args.reference:
            argv = ["--assets", str(args.assets), "--steps", str(args.steps)]
            argv += ["--warmup", str(args.warmup), "--threads", str(args.threads)]
            run_child(module, [*argv, "--one", precision, reference], f"{precision}/{reference}")
