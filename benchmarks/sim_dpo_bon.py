#!/usr/bin/env python
"""DPO and best-of-n on the simulated world, from a finished demo run, judged as the demo judges.

From the demo's SFT policy, reward model and on-policy feedback (the rankings the demo's RM was
trained on, expanded to their pairs):

1. DPO (`rlhfkit.algos.dpo`, sigmoid loss unless `--loss`) on that feedback, evaluated as the
   demo evaluates PPO (`evaluate_policy`, the demo's held-out prompts, sampling settings and
   evaluation seed) and judged against the SFT replies the demo's own win rate used
   (`DEMO/eval/sft.jsonl`): gold win rate with its Wilson interval, harmful compliance,
   over-refusal, KL to SFT, next to the demo's PPO row (read from `DEMO/summary.json`).
2. Best-of-n from SFT (`rlhfkit.algos.bon`) on the same prompts, selected by the demo's RM and
   by the gold scorer (an oracle), at the analytic KL log n − (n − 1)/n, against the same SFT
   replies. With the demo's ceiling seed this reproduces the demo's ceiling table.
3. Rejection-sampling fine-tuning: `bon` with the RM on the world's training prompts writes the
   best replies; SFT from the SFT model on them; evaluated and judged as in 1.

Wall time of every part is reported. One JSON line per row, then a Markdown table.

    python -m benchmarks.sim_dpo_bon --demo runs/demo [--out DIR] [--loss sigmoid]
        [--dpo-max-steps N] [--bon-n 4 16] [--rft-prompts 2000] [--rft-n 8]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a finished demo dir")
    ap.add_argument("--out", type=Path, help="run directory (default: DEMO/dpo_bon)")
    ap.add_argument("--loss", default="sigmoid", choices=["sigmoid", "ipo", "simpo"])
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--dpo-lr", type=float, default=1e-4)
    ap.add_argument("--dpo-epochs", type=int, default=1)
    ap.add_argument("--dpo-max-steps", type=int, default=None)
    ap.add_argument("--bon-n", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--rft-prompts", type=int, default=2000, help="0: skip RFT")
    ap.add_argument("--rft-n", type=int, default=8)
    ap.add_argument("--rft-lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    import yaml
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    from rlhfkit.algos import bon, dpo, sft
    from rlhfkit.eval.ceiling import ceiling_rows
    from rlhfkit.eval.evaluate import evaluate_policy
    from rlhfkit.eval.judges import gold_judge, score_outcomes
    from rlhfkit.eval.winrate import win_rate
    from rlhfkit.models import ModelConfig, load_policy, load_reward_model, load_tokenizer
    from rlhfkit.rollout import CallableScorer, RewardModelScorer, RolloutConfig
    from rlhfkit.types import Message, PromptRecord

    demo = args.demo
    if not (demo / "summary.json").is_file():
        raise SystemExit(f"{demo}/summary.json missing; is {demo} a finished `rlhfkit demo` run?")
    summary = json.loads((demo / "summary.json").read_text())
    seed = summary["seed"]
    rm_cfg = yaml.safe_load((demo / "configs" / "rm.yaml").read_text())
    sft_rows = [json.loads(line) for line in open(demo / "eval" / "sft.jsonl", encoding="utf-8")]
    sft_gold = [r["gold"] for r in sft_rows]
    out = args.out or demo / "dpo_bon"
    out.mkdir(parents=True, exist_ok=True)
    sft_dir, rm_dir = demo / "sft" / "model", demo / "rm" / "model"
    tokenizer = load_tokenizer(sft_dir)
    ref = load_policy(ModelConfig(name_or_path=str(sft_dir)))
    rm = load_reward_model(rm_dir)
    records = [
        PromptRecord(tuple(Message(m["role"], m["content"]) for m in r["dialogue"]))
        for r in sft_rows
    ]
    rollout = RolloutConfig(
        max_new_tokens=summary["settings"]["eval_max_new_tokens"],
        temperature=summary["settings"]["eval_temperature"],
        batch_size=64,
    )
    rows: list[dict[str, Any]] = []

    def judged(name: str, model_dir: Path, seconds: float, extra: dict[str, Any]) -> None:
        res = evaluate_policy(
            load_policy(ModelConfig(name_or_path=str(model_dir))), tokenizer, records, rollout,
            seed=seed + 7, name=name, ref_policy=ref, reward_model=rm, gold=True,
        )  # fmt: skip
        s = res.summary()
        wr = win_rate(score_outcomes(res.gold, sft_gold))
        row = {
            "row": name, "win_rate_vs_sft": round(wr.rate, 4),
            "win_rate_ci": [round(wr.low, 4), round(wr.high, 4)],
            "gold_mean": round(s["gold_mean"], 3), "kl_to_sft": round(s["kl_to_ref"], 3),
            "harmful_compliance_rate": round(s["harmful_compliance_rate"], 4),
            "over_refusal_rate": round(s["over_refusal_rate"], 4), "seconds": round(seconds, 1),
            **extra,
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)

    # 0. the demo's own rows: SFT and PPO
    rates = summary["rates"]
    for name in ("sft", "ppo"):
        wr = summary["win_rate_detail"] if name == "ppo" else None
        row = {
            "row": f"demo {name}",
            "win_rate_vs_sft": None if wr is None else round(wr["rate"], 4),
            "win_rate_ci": None if wr is None else [round(wr["low"], 4), round(wr["high"], 4)],
            "gold_mean": round(summary["gold"][f"{name}_mean"], 3),
            "kl_to_sft": round(rates[name]["kl_to_ref"], 3),
            "harmful_compliance_rate": round(rates[name]["harmful_compliance_rate"], 4),
            "over_refusal_rate": round(rates[name]["over_refusal_rate"], 4),
            "seconds": summary["timings"].get(name),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    # 1. DPO on the demo's feedback (the RM's training rankings, as pairs)
    t0 = time.perf_counter()
    dpo_cfg = dpo.DPOConfig.model_validate(
        {
            "out_dir": str(out / f"dpo_{args.loss}"),
            "model": {"name_or_path": str(sft_dir)},
            "data": {
                "train": rm_cfg["data"]["train"],
                "validation": rm_cfg["data"].get("validation"),
                "max_length": 128, "max_tokens": 4096, "max_pairs": 16,
            },
            "loss_type": args.loss, "beta": args.beta,
            "optim": {"lr": args.dpo_lr, "scheduler": "cosine", "warmup_steps": 10},
            "epochs": args.dpo_epochs, "max_steps": args.dpo_max_steps, "log_every": 20,
            "engine": {"seed": seed, "device": "cpu", "threads": args.threads, "resume": False},
        }
    )  # fmt: skip
    result = dpo.train(dpo_cfg)
    dpo_s = time.perf_counter() - t0
    held_out = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("eval/rewards")}
    judged(f"DPO ({args.loss}, β={args.beta})", result.model_dir, dpo_s, {"dpo_eval": held_out})

    # 2. best-of-n from SFT, selected by the RM and by the gold scorer
    t0 = time.perf_counter()
    cand = bon.sample_candidates(
        ref, tokenizer, records, rollout, max(args.bon_n), seed + 11,
        {"gold": CallableScorer(gold_judge), "rm": RewardModelScorer(rm)},
    )  # fmt: skip
    bon_s = time.perf_counter() - t0
    for c in ceiling_rows(cand.scores["gold"], sft_gold, args.bon_n, cand.scores["rm"]):
        for selector, wr, mean in (("RM", c.rm, c.rm_gold_mean), ("gold", c.oracle, c.oracle_gold_mean)):  # fmt: skip
            row = {
                "row": f"best-of-{c.n} from SFT by {selector}",
                "win_rate_vs_sft": round(wr.rate, 4),
                "win_rate_ci": [round(wr.low, 4), round(wr.high, 4)],
                "gold_mean": round(mean, 3), "kl_to_sft": round(c.kl_bound, 3),
                "kl_kind": "analytic log n − (n−1)/n", "seconds": round(bon_s, 1),
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)

    # 3. rejection-sampling fine-tuning: best-of-n by the RM on training prompts, then SFT
    if args.rft_prompts:
        t0 = time.perf_counter()
        bon_cfg = bon.BoNConfig.model_validate(
            {
                "out_dir": str(out / "bon_rft"), "model": {"name_or_path": str(sft_dir)},
                "prompts": str(demo / "world" / "prompts" / "train.jsonl"),
                "limit": args.rft_prompts, "n": args.rft_n, "reward_model": str(rm_dir),
                "rollout": {"max_new_tokens": rollout.max_new_tokens, "temperature": 1.0},
                "engine": {"seed": seed + 13, "device": "cpu", "threads": args.threads},
            }
        )  # fmt: skip
        made = bon.train(bon_cfg)
        sft_cfg = sft.SFTConfig.model_validate(
            {
                "out_dir": str(out / "rft_sft"), "model": {"name_or_path": str(sft_dir)},
                "data": {"train": str(made.rft), "validation_fraction": 0.0,
                         "max_length": 128, "max_tokens": 2048},
                "optim": {"lr": args.rft_lr, "scheduler": "cosine", "warmup_steps": 5},
                "epochs": 1, "log_every": 20,
                "engine": {"seed": seed, "device": "cpu", "threads": args.threads, "resume": False},
            }
        )  # fmt: skip
        tuned = sft.train(sft_cfg)
        rft_s = time.perf_counter() - t0
        judged(
            f"RFT: SFT on best-of-{args.rft_n} (RM) of {args.rft_prompts} prompts",
            tuned.model_dir, rft_s, {"bon_summary": made.summary},
        )  # fmt: skip

    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("\n| row | gold win rate vs SFT (95 % CI) | gold mean | KL to SFT | harmful compliance | over-refusal | wall time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.1f} %"

    for r in rows:
        ci = r.get("win_rate_ci")
        wr = "—" if r["win_rate_vs_sft"] is None else (
            f"{pct(r['win_rate_vs_sft'])} ({100 * ci[0]:.1f}–{100 * ci[1]:.1f})"
        )  # fmt: skip
        kl = f"{r['kl_to_sft']:.2f}" + (" (bound)" if "kl_kind" in r else "")
        secs = "—" if r.get("seconds") is None else f"{r['seconds']:.0f} s"
        print(
            f"| {r['row']} | {wr} | {r['gold_mean']:+.3f} | {kl} | "
            f"{pct(r.get('harmful_compliance_rate'))} | {pct(r.get('over_refusal_rate'))} | {secs} |"
        )


if __name__ == "__main__":
    main()
