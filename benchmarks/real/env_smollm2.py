"""GRPO with LoRA on SmolLM2-135M-Instruct with the calculator tool (preset
`grpo_smollm2_calculator`), on the arithmetic questions of `benchmarks/real/grpo_smollm2.py`:
the same 512 training / 64 held-out problems (seeds 1 and 2), the same run seed, so its figures
sit beside the no-tool GRPO baseline (held-out greedy 7.8 % → 50.0 %, docs/real.md).

The policy may reply `calc(expression)` (the whole reply); the tool's result comes back as a
`tool` message (`= 41`) and the next reply is the answer, reward 1 when its last integer is the
answer. Reported: held-out greedy accuracy before → after (each episode played greedily,
`transformers` generate, through the preset's own environment: same parser, same scorer, up to
`episode.max_turns` turns), tool calls and invalid calls per problem, the trainer's sampled
held-out success (`eval/env/success`, at the rollout temperature), wall time and peak RSS.

    python -m benchmarks.real.fetch_smollm2          # once
    python -m benchmarks.real.env_smollm2 [key=value ...]
    python -m benchmarks.real.env_smollm2 --probe 32    # call formats compared, no training

One JSON line is appended to runs/real/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.common import emit, load_avg, peak_rss_mib
from benchmarks.real.grpo_smollm2 import OPS, problems
from benchmarks.real.realdata import model_dir


def write_problems(out: Path, n_train: int, n_held: int) -> tuple[Path, Path, list]:
    """`grpo_smollm2`'s problems (held out: seed 2; training: seed 1, disjoint), each row with
    `meta.answer` (the calculator environment's scorer reads it)."""
    held = problems(2, n_held, set())
    train = problems(1, n_train, set(held))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train", train), ("held_out", held)):
        path = out / f"{name}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"prompt": f"What is {a} {op} {b}?", "meta": {"answer": OPS[op](a, b)}})
                + "\n"
                for op, a, b in part
            )
        )
        paths.append(path)
    return paths[0], paths[1], held


def greedy_episodes(folder: Path, held: list, cfg, batch: int = 32) -> dict:  # noqa: ANN001
    """Play one episode per held-out question greedily in `cfg`'s environment: accuracy (the
    environment's final reward > 0), tool calls and invalid calls per question, turns."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.env import build_env
    from rlhfkit.types import PromptRecord, user

    make_env = build_env(cfg).make_env
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    envs = [make_env() for _ in held]
    convs = [
        env.reset(PromptRecord(user(f"What is {a} {op} {b}?"), meta={"answer": OPS[op](a, b)}))
        for env, (op, a, b) in zip(envs, held, strict=True)
    ]
    n_open = len(convs[0])
    success = [0.0] * len(held)
    calls, invalid, turns = [0] * len(held), [0] * len(held), [0] * len(held)
    live = list(range(len(held)))
    for _ in range(cfg.episode.max_turns):
        # 1. one greedy reply for every live episode
        replies: dict[int, str] = {}
        for i in range(0, len(live), batch):
            part = live[i : i + batch]
            texts = [
                tok.apply_chat_template(convs[j], tokenize=False, add_generation_prompt=True)
                for j in part
            ]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(
                    **enc, max_new_tokens=cfg.rollout.max_new_tokens, do_sample=False
                )
            for j, row in zip(part, out[:, enc.input_ids.shape[1] :], strict=True):
                replies[j] = tok.decode(row, skip_special_tokens=True)
        # 2. the environment answers; finished episodes drop out
        still = []
        for j in live:
            message = {"role": "assistant", "content": replies[j]}
            result = envs[j].step(message)
            convs[j] = [*convs[j], message, *result.messages]
            turns[j] += 1
            calls[j] += result.info.get("tool_calls", 0)
            invalid[j] += result.info.get("invalid_calls", 0)
            if result.done:
                success[j] = float(result.reward > 0)
            else:
                still.append(j)
        live = still
    return {
        "accuracy": round(sum(success) / len(held), 4),
        "tool_calls_per_problem": round(sum(calls) / len(held), 3),
        "invalid_calls_per_problem": round(sum(invalid) / len(held), 3),
        "turns_mean": round(sum(turns) / len(held), 2),
        "examples": [
            f"{a} {op} {b} -> " + " | ".join(m["content"] for m in conv[n_open:])
            for (op, a, b), conv in list(zip(held, convs, strict=True))[:4]
        ],
    }


HERMES_CALL = '<tool_call>{"name": "calc", "arguments": {"expression": "27 + 14"}}</tool_call>'


def probe(base: Path, held: list, cfg, n: int) -> None:  # noqa: ANN001
    """The preset's convention against two others, greedy on the first `n` held-out questions
    of the untrained model: the Hermes JSON call (same prompt and exchange, the call written as
    `HERMES_CALL`), and the system prompt alone (no worked exchange)."""
    args = dict(cfg.env_args)
    hermes = {
        **args,
        "parser": "hermes",
        "system_prompt": args["system_prompt"]
        .replace("calc(expression)", "a <tool_call>")
        .replace("calc(27 + 14)", HERMES_CALL),
        "examples": [
            {**m, "content": HERMES_CALL} if m["content"] == "calc(27 + 14)" else m
            for m in args["examples"]
        ],
    }
    variants = {"preset (simple)": args, "hermes": hermes, "no exchange": {**args, "examples": []}}
    for name, env_args in variants.items():
        result = greedy_episodes(base, held[:n], cfg.model_copy(update={"env_args": env_args}))
        print(json.dumps({"probe": name, "questions": n, **result}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-problems", type=int, default=512)
    ap.add_argument("--held-out", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("runs/grpo_smollm2_calculator"))
    ap.add_argument("--probe", type=int, default=0, help="only compare call formats on N")
    ap.add_argument("overrides", nargs="*", help="PGConfig key=value overrides")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    from rlhfkit.algos.pg import PGConfig, train
    from rlhfkit.config import load_config
    from rlhfkit.eval.winrate import wilson_interval

    train_file, held_file, held = write_problems(
        Path("runs/real_arith_calc"), args.train_problems, args.held_out
    )
    base = model_dir()
    cfg = load_config(
        PGConfig,
        preset="grpo_smollm2_calculator",
        overrides=[
            f"out_dir={args.out}",
            f"policy.name_or_path={base}",
            f"data.train={train_file}",
            f"eval_prompts={held_file}",
            f"eval_size={args.held_out}",
            *args.overrides,
        ],
    )
    if args.probe:
        probe(base, held, cfg, args.probe)
        return
    t = time.perf_counter()
    before = greedy_episodes(base, held, cfg)
    print("before:", json.dumps(before), flush=True)
    t_train = time.perf_counter()
    result = train(cfg)
    train_wall = time.perf_counter() - t_train
    after = greedy_episodes(result.policy_path, held, cfg)
    wall = time.perf_counter() - t

    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval/env/success" in x]
    curve = [
        {
            "it": x.get("step"),
            "success": round(x.get("env/success", float("nan")), 3),
            "calls": round(x.get("env/tool_calls", float("nan")), 2),
            "kl": round(x.get("policy/kl_to_ref", float("nan")), 4),
        }
        for x in lines
        if "env/reward" in x
    ]
    n = len(held)

    def ci(p: float) -> list[float]:
        return [round(v, 3) for v in wilson_interval(p, n)]

    emit(
        {
            "bench": "grpo_smollm2_calculator",
            "train_problems": args.train_problems,
            "held_out_problems": n,
            "iterations": cfg.iterations,
            "episodes_per_iteration": cfg.rollout_batch_size * cfg.group_size,
            "greedy_accuracy_before": before["accuracy"],
            "greedy_accuracy_before_ci95": ci(before["accuracy"]),
            "greedy_accuracy_after": after["accuracy"],
            "greedy_accuracy_after_ci95": ci(after["accuracy"]),
            "greedy_tool_calls_before": before["tool_calls_per_problem"],
            "greedy_tool_calls_after": after["tool_calls_per_problem"],
            "greedy_invalid_calls_before": before["invalid_calls_per_problem"],
            "greedy_invalid_calls_after": after["invalid_calls_per_problem"],
            "greedy_turns_before": before["turns_mean"],
            "greedy_turns_after": after["turns_mean"],
            "sampled_success_before": round(evals[0]["eval/env/success"], 4) if evals else None,
            "sampled_success_after": round(evals[-1]["eval/env/success"], 4) if evals else None,
            "sampled_tool_calls_before": round(evals[0].get("eval/env/tool_calls", 0), 3)
            if evals
            else None,
            "sampled_tool_calls_after": round(evals[-1].get("eval/env/tool_calls", 0), 3)
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
