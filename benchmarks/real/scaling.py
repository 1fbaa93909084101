"""The cost of each stage as the model grows: seconds per SFT / RM / DPO optimiser step and per
GRPO / PPO iteration, and peak RSS, for the built-in micro and mini GPT-2s (with stories260K's
512-token tokenizer), stories260K and SmolLM2-135M-Instruct, fp32 and bf16 (CPU autocast), full
fine-tuning or LoRA.

Each case runs the real trainer (`rlhfkit.algos.*.train`, the code the CLI runs) in its own
process for a few steps and reads the step times from its `metrics.jsonl` (median of the
differences between consecutive rows after one warm-up step). The workloads are fixed: SFT, RM
and DPO take 8 HH pairs / demonstrations per step at max_length 128; GRPO samples 4 arithmetic
questions × 4 replies of at most 32 tokens; PPO 8 HH prompts × 32 tokens (its RM and critic: the
same-size model with a new scalar head). For the offline steps the script also gives the
fraction of the machine's fp32 matmul rate reached, 6·N·tokens / (step seconds × rate), with N
the parameters a token passes through (the LM head counted, the embedding lookup not; the RM has
no LM head) and the rate measured by a 2048² matmul on the same threads just before each case;
for the online iterations the split between generation, scoring and training.

    python -m benchmarks.real.scaling [--models micro mini stories260K smollm2]
        [--stages sft rm dpo grpo ppo] [--precision fp32 bf16] [--lora] [--grad-ckpt] [--steps 3]

One JSON line per case is appended to runs/real/scaling.jsonl; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import STORIES_DIR, gemm_gflops, load_avg, peak_rss_mib
from benchmarks.real.realdata import HH, hh_split, model_dir
from benchmarks.speed_switches import add_flags, engine_switches, export, switches

STORIES = STORIES_DIR
WORK = Path("runs/real/scaling")
OUT = Path("runs/real/scaling.jsonl")
LORA = "{r: 16, alpha: 32, dropout: 0.0}"


def model_path(name: str) -> Path:
    """The model folder of `name`; micro and mini are built once (seed 0) and saved."""
    if name == "smollm2":
        return model_dir()
    if name == "stories260K":
        return STORIES
    path = WORK / "models" / name
    if not (path / "config.json").is_file():
        from transformers import AutoTokenizer

        from rlhfkit.data import ensure_pad_token
        from rlhfkit.models.tiny import build_tiny_model, save_tiny_model

        tok = AutoTokenizer.from_pretrained(STORIES)
        ensure_pad_token(tok)
        save_tiny_model(build_tiny_model("gpt2", name, tokenizer=tok), path, tok)
    return path


def rm_path(name: str) -> Path:
    """A reward model of the same size (new scalar head) for the PPO case."""
    path = WORK / "models" / f"{name}_rm"
    if not (path / "config.json").is_file():
        from rlhfkit.models import ModelConfig, load_tokenizer
        from rlhfkit.models.scalar import build_scalar_model

        base = model_path(name)
        build_scalar_model(ModelConfig(name_or_path=str(base))).save(path, load_tokenizer(base))
    return path


def counts(path: Path) -> tuple[int, int]:
    """(all parameters, embedding parameters) from the folder's config (tied: counted once)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    total = sum(p.numel() for p in model.parameters())
    return total, model.get_input_embeddings().weight.numel()


def run_one(
    name: str, stage: str, precision: str, lora: bool, ckpt: bool, steps: int, threads: int
) -> dict:
    from rlhfkit.config import load_config

    base = model_path(name)
    out = (
        WORK
        / "runs"
        / f"{name}_{stage}_{precision}{'_lora' if lora else ''}{'_ckpt' if ckpt else ''}"
    )
    if out.exists():  # metrics.jsonl would gain a second run's rows
        shutil.rmtree(out)
    common = [
        f"out_dir={out}",
        "engine.device=cpu",
        f"engine.threads={threads}",
        "engine.resume=false",
        "engine.mixed_precision=" + ("bf16" if precision == "bf16" else "'no'"),  # YAML: no = false
        *(["engine.compile=true"] if engine_switches() else []),  # --compile / --no-chunk
    ]
    train_file, _, _ = hh_split(Path("runs/real_split"))
    offline_data = [
        f"data.train={HH}",
        "data.format=hh",
        "data.on_error=skip",
        "data.validation_fraction=0.0",
        "data.max_length=128",
        "data.max_prompt_length=64",
    ]
    model_key = "policy" if stage in ("grpo", "ppo") else "model"
    lora_opt = [f"{model_key}.lora={LORA}"] if lora else []
    # gradient checkpointing of the trained model (the policy in GRPO / PPO)
    lora_opt += [f"{model_key}.gradient_checkpointing=true"] if ckpt else []
    if stage == "sft":
        from rlhfkit.algos.sft import SFTConfig, train

        cfg = load_config(
            SFTConfig,
            overrides=[
                *common,
                *offline_data,
                f"model.name_or_path={base}",
                *lora_opt,
                "data.max_tokens=1024",
                f"max_steps={steps + 1}",
                "log_every=1",
            ],
        )
    elif stage in ("rm", "dpo"):
        if stage == "rm":
            from rlhfkit.algos.rm import RMConfig as Config
            from rlhfkit.algos.rm import train
        else:
            from rlhfkit.algos.dpo import DPOConfig as Config
            from rlhfkit.algos.dpo import train
        cfg = load_config(
            Config,
            overrides=[
                *common,
                *offline_data,
                f"model.name_or_path={base}",
                *lora_opt,
                "data.max_tokens=4096",
                "data.max_pairs=8",
                f"max_steps={steps + 1}",
                "log_every=1",
                *(["normalize=none"] if stage == "rm" else ["reference=live"]),
            ],
        )
    elif stage == "grpo":
        from rlhfkit.algos.pg import PGConfig as Config
        from rlhfkit.algos.pg import train

        problems = Path("runs/real_arith/train.jsonl")
        if not problems.is_file():
            raise SystemExit("run benchmarks/real/grpo_smollm2.py once (it writes the problems)")
        cfg = load_config(
            Config,
            preset="grpo_smollm2",
            overrides=[
                *common,
                f"policy.name_or_path={base}",
                "policy.lora=null",
                *lora_opt,
                f"data.train={problems}",
                "eval_prompts=null",
                f"iterations={steps + 1}",
                "sample_every=0",
            ],
        )
    else:
        from rlhfkit.algos.ppo import PPOConfig as Config
        from rlhfkit.algos.ppo import train

        rm = rm_path(name)
        cfg = load_config(
            Config,
            preset="ppo_smollm2",
            overrides=[
                *common,
                f"policy.name_or_path={base}",
                "policy.lora=null",
                *lora_opt,
                f"reward_model={rm}",
                f"critic.name_or_path={rm}",
                f"critic.lora={LORA if lora else 'null'}",
                f"data.train={train_file}",
                "eval_prompts=null",
                "critic_warmup_iters=0",
                f"iterations={steps + 1}",
                "sample_every=0",
            ],
        )
    import torch

    torch.set_num_threads(threads)
    rate = gemm_gflops("fp32", n=2048, repeats=8)
    t = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "time" in r and "perf/tokens_per_s" in r]
    times = [b["time"] - a["time"] for a, b in zip(rows, rows[1:], strict=False)]
    step_s = statistics.median(times[-steps:]) if times else float("nan")
    total, embed = counts(base)
    row = {
        "model": name,
        "params_m": round(total / 1e6, 2),
        "stage": stage,
        "precision": precision,
        "lora": lora,
        "grad_ckpt": ckpt,
        "step_s": round(step_s, 3),
        "peak_rss_mib": peak_rss_mib(),
        "matmul_gflops": round(rate, 1),
        "wall_s": round(wall, 1),
        "load_avg_1m": load_avg(),
        **switches(),
    }
    last = rows[-1] if rows else {}
    if stage in ("sft", "rm", "dpo") and "perf/tokens_per_s" in last:
        tokens = statistics.median(r["perf/tokens_per_s"] for r in rows[1:]) * step_s
        n = total - embed if stage == "rm" else total
        passes = 6 if stage != "dpo" else 8  # DPO: + the live reference forward (2·N)
        row["tokens_per_step"] = round(tokens)
        row["matmul_fraction"] = round(passes * n * tokens / (step_s * rate * 1e9), 3)
    for key in ("time/generation", "time/scoring", "time/training"):
        if key in last:
            row[key.split("/")[1] + "_s"] = round(
                statistics.median(r[key] for r in (rows[1:] or rows) if key in r), 2
            )
    shutil.rmtree(out, ignore_errors=True)  # checkpoints and weights: up to 2 GiB a SmolLM2 case
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["micro", "mini", "stories260K", "smollm2"])
    ap.add_argument("--stages", nargs="+", default=["sft", "rm", "dpo", "grpo", "ppo"])
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--lora", action="store_true", help="LoRA r = 16 instead of full fine-tuning")
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing on")
    ap.add_argument(
        "--steps", type=int, default=3, help="measured steps after one warm-up (0: peak RSS only)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table", action="store_true", help=f"only print the table of {OUT}")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    add_flags(ap)
    args = ap.parse_args()
    export(args)
    if args.table:
        print_table([json.loads(x) for x in OUT.read_text().splitlines()])
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    if args.one:
        row = run_one(*args.one, args.lora, args.grad_ckpt, args.steps, args.threads)
        print("ROW " + json.dumps(row))
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        for stage in args.stages:
            for precision in args.precision:
                cmd = [sys.executable, __file__, "--one", name, stage, precision]
                cmd += ["--steps", str(args.steps), "--threads", str(args.threads)]
                cmd += ["--lora"] if args.lora else []
                cmd += ["--grad-ckpt"] if args.grad_ckpt else []
                proc = subprocess.run(cmd, capture_output=True, text=True)
                found = [x for x in proc.stdout.splitlines() if x.startswith("ROW ")]
                if proc.returncode or not found:
                    print(f"{name} {stage} {precision}: failed\n{proc.stderr[-2000:]}")
                    continue
                row = json.loads(found[-1][4:])
                row["command"] = "python " + " ".join(sys.argv)
                rows.append(row)
                with OUT.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    print(
        "| model | stage | precision | LoRA | grad. ckpt | s/step | peak RSS MiB | matmul fraction | gen / score / train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        split = " / ".join(str(r.get(k, "")) for k in ("generation_s", "scoring_s", "training_s"))
        print(
            f"| {r['model']} ({r['params_m']} M) | {r['stage']} | {r['precision']} | {r['lora']} "
            f"| {r.get('grad_ckpt', False)} | {r['step_s']} | {r['peak_rss_mib']} | {r.get('matmul_fraction', '')} "
            f"| {split if r.get('training_s') is not None else ''} |"
        )


if __name__ == "__main__":
    main()
