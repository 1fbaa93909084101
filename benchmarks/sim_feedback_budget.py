"""Every kind of feedback at a matched labelling budget on the simulated world, from a finished
demo run, judged as the demo judges.

From the demo's SFT policy, two replies are sampled for each of N training prompts
(`sim.feedback.collect_comparisons`, the `rlhfkit sim collect` path) and judged once per
prompt by one of the world's simulated annotators, so every method below gets the *same number
of human judgments*:

1. DPO (sigmoid, β 0.1) on the N comparisons;
2. ORPO (`loss_type: orpo`, λ 0.1) on the same N comparisons;
3. KTO on N thumbs: for each prompt one of its two replies (picked at random) rated on its own
   by the same annotator — thumbs up with probability σ(u(y) / T), u the annotator's utility
   (gold score + its length bias, the utility its comparisons use), T the annotators' calibrated
   temperature, 0 the gold scale's neutral point (an "I don't know" to a knowable question) —
   trained with the paper's weight rule (`balance_weights`);
4. online DPO with the demo's reward model as the labeller (its human budget is the demo's own
   RM feedback, not N: a different budget, listed for reference), for as many pairs as N.

Each trained policy is evaluated as the demo evaluates PPO (`evaluate_policy`, the demo's held-out
prompts, sampling settings and evaluation seed) against the SFT replies the demo's own win rate
used (`DEMO/eval/sft.jsonl`): gold win rate with its Wilson interval, gold mean, harmful
compliance, over-refusal, KL to SFT. The thumbs model is this script's own (a rating kind for the
simulated annotators is not part of `rlhfkit.sim` yet). One JSON line per row, then a table.

    python -m benchmarks.sim_feedback_budget --demo runs/demo [--budget 1000] [--threads 1]
    python -m benchmarks.sim_feedback_budget --demo DIR --make-demo   # the demo first, PPO cut

DEMO may also hold only the demo's first stages (world/, sft/model, rm/model, configs/): then the
SFT replies are sampled here as the demo's evaluation stage samples them.
`--make-demo` runs `rlhfkit demo` (default sizes and seed) into DEMO first with its two PPO runs
cut to one iteration each, which this comparison does not use (the demo's PPO row at full length
is in docs/dpo_bon.md); then the demo's own PPO row is left out of the table.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a finished demo dir")
    ap.add_argument("--out", type=Path, help="run directory (default: DEMO/feedback_budget)")
    ap.add_argument("--budget", type=int, default=1000, help="N prompts: N judgments each")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], help="rows to leave out: dpo orpo kto online")
    ap.add_argument("--make-demo", action="store_true", help="run the demo first, PPO cut")
    args = ap.parse_args()
    if args.make_demo:
        make_demo(args.demo)

    import torch
    import yaml
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    from rlhfkit.algos import dpo, kto, online_dpo
    from rlhfkit.config import load_config
    from rlhfkit.data import read_prompts
    from rlhfkit.demo import DemoConfig
    from rlhfkit.eval.evaluate import evaluate_policy
    from rlhfkit.eval.judges import score_outcomes
    from rlhfkit.eval.winrate import win_rate
    from rlhfkit.models import ModelConfig, load_policy, load_reward_model, load_tokenizer
    from rlhfkit.rollout import RolloutConfig
    from rlhfkit.sim.feedback import annotators_from_manifest, collect_comparisons
    from rlhfkit.types import Message, PromptRecord

    demo = args.demo
    world = demo / "world"
    sft_dir, rm_dir = demo / "sft" / "model", demo / "rm" / "model"
    tokenizer = load_tokenizer(sft_dir)
    ref = load_policy(ModelConfig(name_or_path=str(sft_dir)))
    rm = load_reward_model(rm_dir)
    out = args.out or demo / "feedback_budget"
    out.mkdir(parents=True, exist_ok=True)
    summary = None
    if (demo / "summary.json").is_file():  # a finished demo: its settings and SFT replies
        summary = json.loads((demo / "summary.json").read_text())
        seed = summary["seed"]
        sft_rows = [
            json.loads(line) for line in open(demo / "eval" / "sft.jsonl", encoding="utf-8")
        ]
        sft_gold = [r["gold"] for r in sft_rows]
        records = [
            PromptRecord(tuple(Message(m["role"], m["content"]) for m in r["dialogue"]))
            for r in sft_rows
        ]
        rollout = RolloutConfig(
            max_new_tokens=summary["settings"]["eval_max_new_tokens"],
            temperature=summary["settings"]["eval_temperature"],
            batch_size=64,
        )
    else:  # the demo's SFT and RM stages only: evaluate SFT as the demo's eval stage would
        seed = 0
        ev = load_config(DemoConfig, preset="demo").eval
        records = read_prompts(world / "prompts" / "eval.jsonl").records[: ev.n_prompts]
        rollout = RolloutConfig(
            max_new_tokens=ev.max_new_tokens, temperature=ev.temperature, batch_size=64
        )
        sft_res = evaluate_policy(
            ref, tokenizer, records, rollout, seed=seed + 7, name="sft", ref_policy=ref,
            reward_model=rm, gold=True,
        )  # fmt: skip
        sft_gold = list(sft_res.gold)
        sft_summary = sft_res.summary()
    demo_cfg = {p.stem: yaml.safe_load(p.read_text()) for p in (demo / "configs").glob("*.yaml")}
    rows: list[dict[str, Any]] = []
    engine = {"seed": seed, "device": "cpu", "threads": args.threads, "resume": False}

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
    rates = summary["rates"] if summary else {}
    for name in ("sft",) if args.make_demo else ("sft", "ppo") if summary else ():
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

    if summary is None:
        row = {
            "row": "SFT (sampled here)", "win_rate_vs_sft": None, "win_rate_ci": None,
            "gold_mean": round(sft_summary["gold_mean"], 3), "kl_to_sft": 0.0,
            "harmful_compliance_rate": round(sft_summary["harmful_compliance_rate"], 4),
            "over_refusal_rate": round(sft_summary["over_refusal_rate"], 4), "seconds": None,
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)

    # 1. the labelling budget: N prompts, two SFT samples each, one annotator judgment each
    t0 = time.perf_counter()
    prompts = read_prompts(world / "prompts" / "train.jsonl").records[: args.budget]
    annotators = annotators_from_manifest(world)
    sample_cfg = RolloutConfig(max_new_tokens=rollout.max_new_tokens, temperature=1.0)
    comparisons = collect_comparisons(ref, tokenizer, prompts, annotators, sample_cfg, seed + 21)
    by_name = {a.name: a for a in annotators}
    rng = random.Random(f"thumbs-{seed}")
    thumbs = []
    for row in comparisons:  # the same annotator rates one of the two replies on its own
        side = rng.choice(("chosen", "rejected"))
        reply, gold = row[side], row["meta"][f"{side}_gold"]
        annotator = by_name[row["meta"]["annotator"]]
        p_up = 1.0 / (1.0 + math.exp(-annotator.utility(gold, reply) / annotator.temperature))
        thumbs.append(
            {"prompt": row["prompt"], "completion": reply, "label": rng.random() < p_up,
             "meta": {"annotator": annotator.name, "p_up": p_up, "gold": gold}}
        )  # fmt: skip
    n = len(comparisons)
    for name, data in (("comparisons", comparisons), ("thumbs", thumbs)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    up = sum(t["label"] for t in thumbs)
    gold_agree = sum(
        (t["meta"]["gold"] > 0) == t["label"] for t in thumbs if t["meta"]["gold"] != 0
    ) / max(1, sum(t["meta"]["gold"] != 0 for t in thumbs))
    label_s = time.perf_counter() - t0
    print(json.dumps({"judgments": n, "thumbs_up": up, "thumbs_agree_with_gold_sign": round(gold_agree, 3),
                      "seconds": round(label_s, 1)}), flush=True)  # fmt: skip

    common = {
        "model": {"name_or_path": str(sft_dir)},
        "optim": {"lr": args.lr, "scheduler": "cosine", "warmup_steps": 10, "max_grad_norm": 1.0},
        "epochs": args.epochs,
        "log_every": 20,
        "engine": engine,
    }
    data = {"validation_fraction": 0.05, "max_length": 128, "max_tokens": 4096}

    # 2. DPO and ORPO on the N comparisons
    for loss in ("sigmoid", "orpo"):
        label = "dpo" if loss == "sigmoid" else "orpo"
        if label in args.skip:
            continue
        t0 = time.perf_counter()
        cfg = dpo.DPOConfig.model_validate(
            common | {
                "out_dir": str(out / label), "loss_type": loss, "beta": 0.1,
                "data": data | {"train": str(out / "comparisons.jsonl"), "max_pairs": 16},
            }
        )  # fmt: skip
        result = dpo.train(cfg)
        held = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("eval/rewards")}
        name = f"{'DPO' if loss == 'sigmoid' else 'ORPO'} on {n} comparisons"
        judged(name, result.model_dir, time.perf_counter() - t0, {"held_out": held})

    # 3. KTO on N thumbs
    if "kto" not in args.skip:
        t0 = time.perf_counter()
        cfg = kto.KTOConfig.model_validate(
            common | {
                "out_dir": str(out / "kto"), "beta": 0.1, "balance_weights": True,
                "data": data | {"train": str(out / "thumbs.jsonl"), "max_examples": 16},
            }
        )  # fmt: skip
        result = kto.train(cfg)
        held = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("eval/")}
        judged(f"KTO on {n} thumbs ({up} up)", result.model_dir, time.perf_counter() - t0,
               {"held_out": held})  # fmt: skip

    # 4. online DPO labelled by the demo's RM, as many pairs as N (at most: ties dropped)
    if "online" not in args.skip:
        t0 = time.perf_counter()
        per_iter = 32
        cfg = online_dpo.OnlineDPOConfig.model_validate(
            {
                "out_dir": str(out / "online_dpo"), "policy": {"name_or_path": str(sft_dir)},
                "reward_model": str(rm_dir),
                "data": {"train": str(world / "prompts" / "train.jsonl"),
                         "max_prompt_length": demo_cfg["ppo"]["data"]["max_prompt_length"]},
                "rollout": {"max_new_tokens": rollout.max_new_tokens, "temperature": 1.0,
                            "batch_size": 64},
                "beta": 0.1, "num_samples": 2, "rollout_batch_size": per_iter,
                "mini_batch_size": per_iter, "iterations": max(1, args.epochs * n // per_iter),
                "optim": {"lr": args.lr, "max_grad_norm": 1.0}, "sample_every": 0,
                "engine": engine,
            }
        )  # fmt: skip
        result = online_dpo.train(cfg)
        judged(f"online DPO, RM-labelled, {cfg.iterations * per_iter} prompts",
               result.policy_path, time.perf_counter() - t0, {})  # fmt: skip

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
        secs = "—" if r.get("seconds") is None else f"{r['seconds']:.0f} s"
        print(
            f"| {r['row']} | {wr} | {r['gold_mean']:+.3f} | {r['kl_to_sft']:.2f} | "
            f"{pct(r.get('harmful_compliance_rate'))} | {pct(r.get('over_refusal_rate'))} | {secs} |"
        )


def make_demo(out: Path) -> None:
    """`rlhfkit demo --out OUT` with the PPO runs (and the ablation) cut to one iteration."""
    import rlhfkit.demo as demo_module

    real = demo_module.load_demo_config

    def cut(quick: bool) -> Any:
        cfg = real(quick)
        short = {"iterations": 1, "critic_warmup_iters": 0, "eval_every": 0}
        return cfg.model_copy(update={"ppo": {**cfg.ppo, **short}})

    demo_module.load_demo_config = cut
    demo_module.run_demo(out, seed=0)


if __name__ == "__main__":
    main()
