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
   (Wilson 95 %), turns-to-success (the mean turns of the episodes that found the number) and
   turns per episode (a failure counts the cap, 6), each with a percentile-bootstrap 95 %
   interval (10,000 resamples of the held-out episodes, fixed seed), before and after; read
   from the runs' held-out transcripts (RUN/samples/eval_*.jsonl). `game_grpo_plain` and
   `game_ppo_plain` are the same runs without the information bonus (`env_args.info_bonus=0`).

    python -m benchmarks.env_sim --work WORK --sft runs/sft_calc4/model --only game_grpo \
        [--set iterations=120 ...]

   `game_groups`: the share of GRPO groups of the SFT policy whose returns are all equal (zero
   advantage), without and with the information bonus.
3. `user`: GRPO against the simulated user (`grpo_user_sim`, from the world's SFT policy
   `--sft-user`, `rlhfkit sft --preset sft_sim`), then the gold win rate of the trained policy
   against that SFT policy, both playing every held-out prompt as a conversation (Wilson 95 %;
   all prompts and the two-turn dialogues alone).

Prints a JSON line per run and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import time
from pathlib import Path


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def bootstrap_ci(values: list[float], resamples: int = 10_000, seed: int = 0) -> list[float]:
    """Percentile-bootstrap 95 % interval of the mean of `values` ([] when there are none)."""
    if not values:
        return []
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    return [round(means[int(0.025 * resamples)], 3), round(means[int(0.975 * resamples) - 1], 3)]


def game_figures(transcripts: Path, max_turns: int) -> dict:
    """Success (Wilson 95 %), turns-to-success and turns per episode (bootstrap 95 %) of one
    held-out evaluation's transcripts; an episode succeeded when the game said done."""
    rows = [json.loads(x) for x in transcripts.open()]
    won = [r["turns"] for r in rows if r["end"] == "done"]
    turns = [r["turns"] if r["end"] == "done" else max_turns for r in rows]
    p = len(won) / len(rows)
    return {
        "n": len(rows),
        "success": round(p, 4),
        "success_ci": [round(v, 4) for v in wilson(p, len(rows))],
        "turns_to_success": round(sum(won) / len(won), 3) if won else None,
        "turns_to_success_ci": bootstrap_ci(won),
        "turns": round(sum(turns) / len(turns), 3),
        "turns_ci": bootstrap_ci(turns),
    }


def equal_return_groups(sft: str, prompts: str, groups: int = 64, size: int = 4) -> dict:
    """The share of GRPO groups whose returns are all equal (zero advantage: no gradient) in one
    rollout of the SFT policy on the game, without and with the information bonus. The same
    episodes are played under both rewards (the bonus changes no message)."""
    import torch

    from rlhfkit.data import read_prompts
    from rlhfkit.env import EpisodeConfig, run_episodes
    from rlhfkit.env.shipped import GuessingGame
    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer
    from rlhfkit.rollout import LocalEngine, RolloutConfig

    records = read_prompts(prompts).records[:groups]
    tok = load_tokenizer(sft)
    engine = LocalEngine(load_policy(ModelConfig(name_or_path=sft)).eval(), tok)
    recs = [r for r in records for _ in range(size)]
    seeds = torch.arange(len(recs))
    cfg = EpisodeConfig(max_turns=6, max_tokens=128, truncation_penalty=1.0)
    out = {}
    for bonus in (0.0, 0.25):
        episodes = run_episodes(engine, tok, lambda b=bonus: GuessingGame(0.1, b), recs, seeds,
                                RolloutConfig(max_new_tokens=16), cfg)  # fmt: skip
        returns = [round(e.reward, 6) for e in episodes]
        equal = sum(len(set(returns[i : i + size])) == 1 for i in range(0, len(recs), size))
        out[f"equal_return_groups_bonus_{bonus}"] = round(equal / groups, 4)
    return out


def user_win_rate(sft: str, policy: str, prompts: str, out: Path, seed: int) -> dict:
    """Gold win rate of `policy` against `sft` with the simulated user: every held-out prompt
    played as a conversation by each (`rlhfkit eval env`'s episodes, temperature 0.7 as the
    demo's `eval run`, same seed), the per-prompt gold scores compared (ties count half) and
    Wilson 95 % intervals; over all prompts and over the two-turn dialogues alone. Also the
    share of last replies that abstain ("know" / "not sure") and of positive gold scores."""
    from rlhfkit.data import read_prompts
    from rlhfkit.eval.env import evaluate_policy_in_env
    from rlhfkit.eval.judges import score_outcomes
    from rlhfkit.eval.winrate import win_rate

    rows = {}
    for name, path in (("sft", sft), ("policy", policy)):
        evaluate_policy_in_env(
            path, prompts, "rlhfkit.sim.envs:SimulatedUser", out / name, max_turns=2,
            max_tokens=160, max_new_tokens=32, temperature=0.7, seed=seed,
        )  # fmt: skip
        rows[name] = [json.loads(x) for x in (out / name / "transcripts.jsonl").open()]
    pairs = list(zip(rows["sft"], rows["policy"], strict=True))
    assert all(a["prompt"] == b["prompt"] for a, b in pairs), "the two runs' prompts differ"
    # the two-turn dialogues: prompts with two user turns (the transcripts are in file order; an
    # episode whose first reply ran to the budget ends before the follow-up, so its transcript
    # alone cannot tell)
    records = read_prompts(prompts).records
    assert len(records) == len(pairs), "the transcripts do not follow the prompts file"
    dialogue = [i for i, r in enumerate(records) if sum(m.role == "user" for m in r.prompt) > 1]
    result = {}
    for tag, keep in (("all", range(len(pairs))), ("dialogue", dialogue)):
        sft_gold = [pairs[i][0]["reward"] for i in keep]
        policy_gold = [pairs[i][1]["reward"] for i in keep]
        result[f"win_rate_{tag}"] = win_rate(score_outcomes(policy_gold, sft_gold)).to_dict()
        result[f"gold_sft_{tag}"] = round(sum(sft_gold) / len(sft_gold), 4)
        result[f"gold_policy_{tag}"] = round(sum(policy_gold) / len(policy_gold), 4)
        for who, side in (("sft", 0), ("policy", 1)):
            last = [pairs[i][side]["messages"][-1]["content"].lower() for i in keep]
            # abstentions ("I don't know.", "I am not sure."): the gold scorer gives them 0
            share = sum(bool(re.search(r"know|not sure", t)) for t in last) / len(last)
            result[f"abstain_{who}_{tag}"] = round(share, 4)
            positive = sum(pairs[i][side]["reward"] > 0 for i in keep) / len(keep)
            result[f"gold_positive_{who}_{tag}"] = round(positive, 4)
    return result


def evals(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").open()]
    return [r for r in rows if any(k.startswith("eval/") for k in r)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/envbench")
    ap.add_argument("--sft", default="runs/sft_calc/model")
    ap.add_argument("--sft-user", default="runs/sft/model", help="the world's SFT policy (user)")
    ap.add_argument("--iterations", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="calc,calc_notool,game_grpo,game_ppo")
    ap.add_argument("--set", nargs="*", default=[], help="more key=value overrides, every run")
    ap.add_argument("--winrate-only", action="store_true",
                    help="user: only the win rate of the policy an earlier run saved")  # fmt: skip
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
        "game_grpo_plain": (pg, "grpo_game_sim", ["env_args.info_bonus=0.0"]),
        "game_ppo_plain": (ppo, "ppo_game_sim", ["env_args.info_bonus=0.0"]),
        "user": (pg, "grpo_user_sim", []),
    }
    table = []
    if "game_groups" in args.only.split(","):
        print(json.dumps({"run": "game_groups", **equal_return_groups(
            args.sft, "sim/env/game_train.jsonl")}), flush=True)  # fmt: skip
    if args.winrate_only:
        out = Path(f"runs/bench_user_s{args.seed}")
        cfg = load_config(pg.PGConfig, preset="grpo_user_sim")
        print(json.dumps({"run": "user_winrate", "seed": args.seed, **user_win_rate(
            args.sft_user, str(out / "policy"), cfg.eval_prompts, out / "winrate", args.seed)}))  # fmt: skip
        return
    for name in [n for n in args.only.split(",") if n != "game_groups"]:
        module, preset, extra = runs[name]
        cls = module.PGConfig if module is pg else module.PPOConfig
        out = f"runs/bench_{name}_s{args.seed}"
        shutil.rmtree(out, ignore_errors=True)  # a fresh run (an old one would be resumed)
        overrides = [*common, *args.set, *extra, f"out_dir={out}"]
        if name == "user":
            overrides[0] = f"policy.name_or_path={args.sft_user}"
        cfg = load_config(cls, overrides=overrides, preset=preset)
        t0 = time.perf_counter()
        trained = module.train(cfg)
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
        if name == "user":
            result.update(user_win_rate(args.sft_user, str(trained.policy_path),
                                        cfg.eval_prompts, Path(out) / "winrate", args.seed))  # fmt: skip
        if name.startswith("game"):
            samples = sorted((Path(out) / "samples").glob("eval_*.jsonl"))
            for tag, path in (("before", samples[0]), ("after", samples[-1])):
                result[f"{tag}_game"] = game_figures(path, cfg.episode.max_turns)
            result["overrides"] = [*extra, *args.set]
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
    for r in table:
        if "before_game" in r:
            b, a = r["before_game"], r["after_game"]
            print(
                f"| {r['run']} seed {r['seed']} | success {b['success']:.3f} {b['success_ci']} → "
                f"**{a['success']:.3f}** {a['success_ci']} | turns-to-success "
                f"{b['turns_to_success']} {b['turns_to_success_ci']} → "
                f"**{a['turns_to_success']}** {a['turns_to_success_ci']} | turns "
                f"{b['turns']} {b['turns_ci']} → {a['turns']} {a['turns_ci']} |"
            )


if __name__ == "__main__":
    main()
