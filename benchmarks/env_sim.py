"""Learning on the simulated world's environments (docs/env.md, "Measured"), 1 thread.

    python -m benchmarks.env_sim --work /tmp/envbench [--iterations 80] [--seed 0]

Needs, under WORK: the world (`rlhfkit sim make --out sim`), the environments' data
(`python -m rlhfkit.sim.envs --out sim`) and the calculator SFT policy
(`rlhfkit sft --preset sft_calc_sim`, its model at WORK/runs/sft_calc/model or --sft). Runs, from
that one SFT policy:

1. GRPO with the calculator (`grpo_calc_sim`) and the same GRPO without the tool
   (`grpo_calc_notool_sim`: one turn, exact-answer reward), and reports held-out accuracy
   (128 problems never trained on, one sample each at temperature 1) before and after, with
   Wilson 95 % intervals, and the tool calls per problem;
2. GRPO and PPO on the guessing game (`grpo_game_sim`, `ppo_game_sim`): held-out success rate
   and turns per episode (capped at 6) before and after.

Prints a JSON line per run and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def evals(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").open()]
    return [r for r in rows if any(k.startswith("eval/") for k in r)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/envbench")
    ap.add_argument("--sft", default="runs/sft_calc/model")
    ap.add_argument("--iterations", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="calc,calc_notool,game_grpo,game_ppo")
    args = ap.parse_args()
    os.chdir(args.work)
    from rlhfkit.algos import pg, ppo
    from rlhfkit.config import load_config

    common = [f"policy.name_or_path={args.sft}", f"iterations={args.iterations}",
              f"engine.seed={args.seed}", "eval_every=20", "engine.threads=1"]  # fmt: skip
    runs = {
        "calc": (pg, "grpo_calc_sim", []),
        "calc_notool": (pg, "grpo_calc_notool_sim", []),
        "game_grpo": (pg, "grpo_game_sim", []),
        "game_ppo": (ppo, "ppo_game_sim", []),
    }
    table = []
    for name in args.only.split(","):
        module, preset, extra = runs[name]
        cls = module.PGConfig if module is pg else module.PPOConfig
        out = f"runs/bench_{name}_s{args.seed}"
        shutil.rmtree(out, ignore_errors=True)  # a fresh run (an old one would be resumed)
        cfg = load_config(cls, overrides=[*common, *extra, f"out_dir={out}"], preset=preset)
        t0 = time.perf_counter()
        module.train(cfg)
        wall = time.perf_counter() - t0
        rows = evals(Path(out))
        first, last = rows[0], rows[-1]
        key = "eval/rm_score" if name == "calc_notool" else "eval/env/success"
        n = cfg.eval_size
        result = {"run": name, "preset": preset, "iterations": args.iterations,
                  "seed": args.seed, "wall_s": round(wall, 1), "n_eval": n}  # fmt: skip
        for tag, row in (("before", first), ("after", last)):
            p = row[key]
            lo, hi = wilson(p, n)
            result[f"{tag}_success"] = p
            result[f"{tag}_ci"] = [round(lo, 4), round(hi, 4)]
            result[f"{tag}_turns"] = row.get("eval/env/turns")
            result[f"{tag}_tool_calls"] = row.get("eval/env/tool_calls")
        result["curve"] = [(r["step"], r[key], r.get("eval/env/turns")) for r in rows]
        print(json.dumps(result), flush=True)
        table.append(result)
    print(
        "| run | held-out success before → after (95 % Wilson) | turns | tool calls/episode | wall |"
    )
    print("|---|---|---|---|---|")
    for r in table:
        print(
            f"| {r['run']} | {r['before_success']:.3f} {r['before_ci']} → "
            f"**{r['after_success']:.3f}** {r['after_ci']} | {r['before_turns']} → "
            f"{r['after_turns']} | {r['before_tool_calls']} → {r['after_tool_calls']} | "
            f"{r['wall_s']:.0f} s |"
        )


if __name__ == "__main__":
    main()
