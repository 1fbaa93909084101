#!/usr/bin/env python
"""Online DPO seconds per iteration on the anchor workload, rlhfkit and TRL's
`OnlineDPOTrainer` (TRL 1.16: `trl.experimental.online_dpo`) on the same assets.

Workload (the anchor assets, `benchmarks/README.md`): the tiny GPT-2 policy (4 layers, d = 256,
vocab 4096), its `GPT2ForSequenceClassification` reward model as the labeller, 8 prompts per
iteration (raw text, 24–32 tokens) × 2 replies each, ≤ 32 new tokens at temperature 1 stopping
at EOS, the better-scored reply chosen, one DPO step (sigmoid, β = 0.1, lr 5e-7: TRL
`OnlineDPOConfig` defaults) against a frozen reference (the initial policy), fp32, 2 torch
threads. One iteration = sample, score, one optimiser step (TRL: one `training_step`).

    python -m benchmarks.online_dpo_throughput [--iterations 8] [--warmup 2]    # rlhfkit
    $TRL_PYTHON -m benchmarks.online_dpo_throughput --trl [--iterations 8]       # TRL

(`$TRL_PYTHON`: the Python of a virtual environment with TRL 1.16, transformers and datasets.)

Both print one JSON line: `s_per_iter` (median seconds between consecutive iterations after
`--warmup`: rlhfkit's metric lines, TRL's `on_step_end` stamps), min / max, `iter_per_s`,
generated tokens per iteration and per second, peak RSS (MiB, the whole process), the GEMM rate
before and after (a loaded host shows as a lower rate). When TRL's trainer fails (e.g. on a
CPU), the line has `"status": "error"`, the stage and the error: that is the finding. The TRL
mode imports nothing from rlhfkit (TRL's own virtual environment need not have it).

Differences, on purpose: rlhfkit scores the policy's token ids with the reward model (same
tokenizer) where TRL decodes and re-encodes; rlhfkit's reference runs on the chosen and
rejected replies only, in one row per pair after a single copy of the prompt (docs/dpo_bon.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.assets import DEFAULT_DIR, anchor_assets
from benchmarks.common import gemm_gflops, load_avg, peak_rss_mib, run_child, step_gaps

PROMPTS, REPLIES, NEW_TOKENS, TEMPERATURE, BETA, LR, SEED = 8, 2, 32, 1.0, 0.1, 5e-7, 42


def _line(trainer: str, args: argparse.Namespace, per_iter: list[float], tokens: float) -> dict:
    s_iter = statistics.median(per_iter)
    return {
        "bench": "online_dpo_throughput",
        "trainer": trainer,
        "status": "ok",
        "precision": args.precision,
        "threads": args.threads,
        "iterations_measured": len(per_iter),
        "warmup": args.warmup,
        "s_per_iter": round(s_iter, 3),
        "s_per_iter_min": round(min(per_iter), 3),
        "s_per_iter_max": round(max(per_iter), 3),
        "iter_per_s": round(1 / s_iter, 4),
        "prompts_per_iter": PROMPTS,
        "replies_per_prompt": REPLIES,
        "gen_tokens_per_iter": round(tokens, 1),
        "tokens_per_s": round(tokens / s_iter, 1),
        "peak_rss_mib": peak_rss_mib(),
        "load_avg_1min": load_avg(),
    }


def rlhfkit_run(args: argparse.Namespace) -> dict:
    """`rlhfkit.algos.online_dpo.train` itself (what `rlhfkit online-dpo` runs)."""
    import torch
    import transformers

    from benchmarks.common import engine_settings
    from rlhfkit.algos.online_dpo import OnlineDPOConfig, train
    from rlhfkit.engine.metrics import read_metrics

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    assets = Path(args.assets)
    out = Path(tempfile.mkdtemp(prefix=f"online_dpo_bench_{args.precision}_"))
    cfg = OnlineDPOConfig.model_validate(
        {
            "out_dir": str(out),
            "policy": {"name_or_path": str(assets / "policy")},
            "tokenizer": str(assets / "tokenizer"),
            "reward_model": str(assets / "reward"),
            "data": {
                "train": str(assets / "prompts.jsonl"),
                "prompt_template": "raw",
                "max_prompt_length": 64,
            },
            "rollout": {
                "max_new_tokens": NEW_TOKENS, "temperature": TEMPERATURE,
                "batch_size": PROMPTS * REPLIES,
            },
            "iterations": args.warmup + args.iterations,
            "num_samples": REPLIES,
            "rollout_batch_size": PROMPTS,
            "mini_batch_size": PROMPTS,
            "ppo_epochs": 1,
            "loss_type": "sigmoid",
            "beta": BETA,
            "optim": {"lr": LR},
            "sample_every": 0,
            "engine": {**engine_settings(args.threads, args.precision), "seed": SEED},
        }
    )  # fmt: skip
    before = gemm_gflops()
    start = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - start
    after = gemm_gflops()
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "pairs/kept" in r]
    measured = rows[args.warmup :]
    tokens = statistics.median(r["response/length_mean"] * PROMPTS * REPLIES for r in measured)
    split = {
        k: round(statistics.median(r[f"time/{k}"] for r in measured), 3)
        for k in ("generation", "scoring", "training")
    }
    return {
        **_line("rlhfkit.algos.online_dpo", args, step_gaps(rows, args.warmup), tokens),
        "time_split_s": split,
        "pairs_kept_mean": round(statistics.fmean(r["pairs/kept"] for r in measured), 2),
        "gemm_gflops_before": before,
        "gemm_gflops_after": after,
        "process_wall_s": round(wall, 1),
    }


def trl_run(args: argparse.Namespace) -> dict:
    """TRL's `OnlineDPOTrainer` on the same workload (run with TRL's virtual environment).
    Every failure is returned as an error line naming the stage."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    stage = "import"
    result: dict = {"bench": "online_dpo_throughput", "trainer": "trl.OnlineDPOTrainer"}
    try:
        import torch
        import transformers
        import trl
        from datasets import Dataset
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
            AutoTokenizer,
            TrainerCallback,
        )

        try:
            from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer
        except ImportError:
            from trl import OnlineDPOConfig, OnlineDPOTrainer
        result["versions"] = {"trl": trl.__version__, "transformers": transformers.__version__,
                              "torch": torch.__version__}  # fmt: skip
        torch.set_num_threads(args.threads)
        transformers.logging.set_verbosity_error()
        transformers.set_seed(SEED)

        stage = "build trainer"
        assets = Path(args.assets)
        tok = AutoTokenizer.from_pretrained(assets / "tokenizer", padding_side="left")
        rm_tok = AutoTokenizer.from_pretrained(assets / "tokenizer")
        policy = AutoModelForCausalLM.from_pretrained(assets / "policy")
        ref = AutoModelForCausalLM.from_pretrained(assets / "policy")
        rm = AutoModelForSequenceClassification.from_pretrained(assets / "reward", num_labels=1)
        rm.config.pad_token_id = rm_tok.pad_token_id
        rows = [json.loads(line) for line in open(assets / "prompts.jsonl", encoding="utf-8")]
        out = tempfile.mkdtemp(prefix="trl_online_dpo_bench_")
        cfg = OnlineDPOConfig(
            output_dir=out, per_device_train_batch_size=PROMPTS, max_new_tokens=NEW_TOKENS,
            temperature=TEMPERATURE, beta=[BETA], loss_type="sigmoid", learning_rate=LR,
            max_steps=args.warmup + args.iterations, bf16=False, fp16=False,
            gradient_checkpointing=False, use_cpu=True, seed=SEED, data_seed=SEED,
            dataloader_num_workers=0, report_to=[], save_strategy="no", eval_strategy="no",
            logging_steps=1, disable_tqdm=True, gradient_accumulation_steps=1, use_vllm=False,
        )  # fmt: skip
        trainer = OnlineDPOTrainer(
            model=policy, ref_model=ref, reward_funcs=rm, args=cfg,
            train_dataset=Dataset.from_list(rows), processing_class=tok,
            reward_processing_classes=rm_tok,
        )  # fmt: skip
        eos = tok.eos_token_id
        stamps: list[float] = []
        generated: list[int] = []
        original = policy.generate

        def counting_generate(*a, **kw):  # replies' tokens up to and including the first EOS
            seqs = original(*a, **kw)
            ids = seqs if isinstance(seqs, torch.Tensor) else seqs.sequences
            inp = kw.get("input_ids", a[0] if a else None)
            new = ids[:, inp.shape[1] :] if inp is not None else ids
            is_eos = new == eos
            first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, new.shape[1])
            generated.append(int(first.sum()))
            return seqs

        policy.generate = counting_generate

        class Stamp(TrainerCallback):
            def on_train_begin(self, *a, **kw):
                stamps.append(time.perf_counter())

            def on_step_end(self, *a, **kw):
                stamps.append(time.perf_counter())

        trainer.add_callback(Stamp())

        stage = "train"
        before = gemm_gflops()
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
        after = gemm_gflops()
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)][args.warmup :]
        tokens = statistics.median(generated[args.warmup :]) if generated else 0.0
        return {
            **result,
            **_line("trl.OnlineDPOTrainer", args, gaps, tokens),
            "generate_calls": len(generated),
            "gemm_gflops_before": before,
            "gemm_gflops_after": after,
            "process_wall_s": round(wall, 1),
        }
    except Exception as e:  # noqa: BLE001 - the error is the finding: report it as the line
        return {
            **result, "status": "error", "error_stage": stage,
            "error": f"{type(e).__name__}: {e}"[:2000],
            "traceback_tail": traceback.format_exc()[-3000:],
            "peak_rss_mib": peak_rss_mib(),
        }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trl", action="store_true", help="time TRL's OnlineDPOTrainer instead")
    ap.add_argument(
        "--assets", type=Path, default=DEFAULT_DIR, help="built by benchmarks.assets when absent"
    )
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="rlhfkit only (TRL runs fp32)")  # fmt: skip
    ap.add_argument("--iterations", type=int, default=8, help="measured iterations")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trl:
        args.precision = "fp32"
        real_stdout = sys.stdout
        sys.stdout = sys.stderr  # everything the trainer prints goes to stderr
        line = trl_run(args)
        sys.stdout = real_stdout
        print(json.dumps(line), flush=True)
        sys.exit(0 if line["status"] == "ok" else 1)
    anchor_assets(args.assets)
    if args.child:
        print(json.dumps(rlhfkit_run(args)), flush=True)
        return
    argv = ["--child", "--assets", str(args.assets), "--precision", args.precision,
            "--iterations", str(args.iterations), "--warmup", str(args.warmup),
            "--threads", str(args.threads)]  # fmt: skip
    run_child("benchmarks.online_dpo_throughput", argv, f"online_dpo/{args.precision}")


if __name__ == "__main__":
    main()
