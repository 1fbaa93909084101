"""GRPO (or RLOO) with LoRA on SmolLM2-135M-Instruct on a verifiable task: arithmetic questions
("What is 27 plus 14?") in the model's chat template, reward 1 when the last integer of the reply
is the answer (`rlhfkit.sim.rewards.arithmetic_exact_match`), 0 otherwise.

Training and held-out problems come from two different seeds and share no (operation, a, b):
plus and minus on 10..60, times on 2..12. Reported: held-out accuracy before → after, both
greedy (this script, `transformers` generate on the saved policy) and sampled at the rollout
temperature (the trainer's own `eval/rm_score`), mean reply length, KL to the start, wall time.

    python -m benchmarks.real.fetch_smollm2          # once
    python -m benchmarks.real.grpo_smollm2 [--advantage rloo] [key=value ...]

One JSON line is appended to runs/real/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from pathlib import Path

from benchmarks.common import emit, load_avg, peak_rss_mib
from benchmarks.real.realdata import model_dir

OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
RANGES = {"plus": (10, 60), "minus": (10, 60), "times": (2, 12)}


def problems(seed: int, n: int, exclude: set[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    out: list[tuple[str, int, int]] = []
    seen = set(exclude)
    while len(out) < n:
        op = rng.choice(sorted(OPS))
        lo, hi = RANGES[op]
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if op == "minus" and b >= a:
            a, b = b + 1, a  # a positive answer
        if (op, a, b) not in seen:
            seen.add((op, a, b))
            out.append((op, a, b))
    return out


def write_problems(out: Path, n_train: int, n_held: int) -> tuple[Path, Path, list]:
    held = problems(2, n_held, set())
    train = problems(1, n_train, set(held))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train", train), ("held_out", held)):
        path = out / f"{name}.jsonl"
        path.write_text(
            "".join(json.dumps({"prompt": f"What is {a} {op} {b}?"}) + "\n" for op, a, b in part)
        )
        paths.append(path)
    return paths[0], paths[1], held


def greedy_accuracy(folder: Path, held: list, max_new_tokens: int) -> dict:
    """Greedy replies to the held-out questions: exact-match accuracy and mean length (tokens)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    hits, lengths, examples = 0, [], []
    for i in range(0, len(held), 32):
        part = held[i : i + 32]
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": f"What is {a} {op} {b}?"}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for op, a, b in part
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        for (op, a, b), row in zip(part, out[:, enc.input_ids.shape[1] :], strict=True):
            ids = row.tolist()
            n = ids.index(tok.eos_token_id) + 1 if tok.eos_token_id in ids else len(ids)
            reply = tok.decode(ids[:n], skip_special_tokens=True)
            numbers = re.findall(r"-?\d+", reply)
            hits += bool(numbers) and int(numbers[-1]) == OPS[op](a, b)
            lengths.append(n)
            if len(examples) < 3:
                examples.append(f"{a} {op} {b} -> {reply!r}")
    return {
        "accuracy": round(hits / len(held), 4),
        "length_mean": round(sum(lengths) / len(lengths), 1),
        "examples": examples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--advantage", default="grpo", choices=["grpo", "rloo"])
    ap.add_argument("--train-problems", type=int, default=512)
    ap.add_argument("--held-out", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("overrides", nargs="*", help="PGConfig key=value overrides")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    from rlhfkit.algos.pg import PGConfig, train
    from rlhfkit.config import load_config
    from rlhfkit.eval.winrate import wilson_interval

    preset = f"{args.advantage}_smollm2"
    out = args.out or Path("runs") / preset
    train_file, held_file, held = write_problems(
        Path("runs/real_arith"), args.train_problems, args.held_out
    )
    base = model_dir()
    cfg = load_config(
        PGConfig,
        preset=preset,
        overrides=[
            f"out_dir={out}",
            f"policy.name_or_path={base}",
            f"data.train={train_file}",
            f"eval_prompts={held_file}",
            f"eval_size={args.held_out}",
            *args.overrides,
        ],
    )
    t = time.perf_counter()
    before = greedy_accuracy(base, held, cfg.rollout.max_new_tokens)
    t_train = time.perf_counter()
    result = train(cfg)
    train_wall = time.perf_counter() - t_train
    after = greedy_accuracy(result.policy_path, held, cfg.rollout.max_new_tokens)
    wall = time.perf_counter() - t

    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval/rm_score" in x]
    curve = [
        {
            "it": x.get("step"),
            "score": round(x["reward/score_mean"], 3),
            "kl": round(x.get("policy/kl_to_ref", float("nan")), 4),
            "len": round(x.get("response/length_mean", 0), 1),
        }
        for x in lines
        if "reward/score_mean" in x
    ]
    n = len(held)
    emit(
        {
            "bench": f"{args.advantage}_smollm2",
            "train_problems": args.train_problems,
            "held_out_problems": n,
            "iterations": cfg.iterations,
            "replies_per_iteration": cfg.rollout_batch_size * cfg.group_size,
            "max_new_tokens": cfg.rollout.max_new_tokens,
            "greedy_accuracy_before": before["accuracy"],
            "greedy_accuracy_before_ci95": [
                round(v, 3) for v in wilson_interval(before["accuracy"], n)
            ],
            "greedy_accuracy_after": after["accuracy"],
            "greedy_accuracy_after_ci95": [
                round(v, 3) for v in wilson_interval(after["accuracy"], n)
            ],
            "greedy_length_before": before["length_mean"],
            "greedy_length_after": after["length_mean"],
            "sampled_accuracy_before": round(evals[0]["eval/rm_score"], 4) if evals else None,
            "sampled_accuracy_after": round(evals[-1]["eval/rm_score"], 4) if evals else None,
            "sampled_length_before": round(evals[0]["eval/length_mean"], 1) if evals else None,
            "sampled_length_after": round(evals[-1]["eval/length_mean"], 1) if evals else None,
            "kl_to_start_after": round(evals[-1].get("eval/kl_to_ref", float("nan")), 4)
            if evals
            else None,
            "train_curve": curve,
            "examples_before": before["examples"],
            "examples_after": after["examples"],
            "train_wall_s": round(train_wall, 1),
            "wall_s": round(wall, 1),
            "peak_rss_mib": peak_rss_mib(),
            "load_avg_1m": load_avg(),
            "policy_dir": str(result.policy_path),
        },
        Path("runs/real/results.jsonl"),
        indent=True,
    )


if __name__ == "__main__":
    main()
