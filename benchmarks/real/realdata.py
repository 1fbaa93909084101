"""What the SmolLM2 benchmarks share: where the model is, the fixed HH split, the held-out
prompts and the win rates under reward-model judges (reporting is `benchmarks.common.emit`).

The split is by dialogue: pairs whose prompt (the conversation up to the last Assistant turn)
is the same land on the same side (`rlhfkit.data.split_records` keyed by prompt), 80 / 20 with
seed 0, so the RM, DPO and PPO benchmarks train and evaluate on the same pairs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks.common import HH_FILE
from benchmarks.real.fetch_smollm2 import default_dir

ROOT = Path(__file__).resolve().parents[2]
HH = HH_FILE
SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.2


def model_dir() -> Path:
    """The converted SmolLM2-135M-Instruct folder; exits with the command that makes it."""
    path = Path(os.environ.get("SMOLLM2_DIR", default_dir()))
    if not (path / "config.json").is_file():
        raise SystemExit(f"{path}: no model; run: python -m benchmarks.real.fetch_smollm2")
    return path


def hh_split(
    out: Path, train_pairs: int | None = None, held_out_pairs: int | None = None
) -> tuple[Path, Path, dict]:
    """Write the fixed train / held-out HH pairs (generic JSONL: prompt messages, chosen,
    rejected) into a folder under `out` named by their sizes, the training side cut to its first
    `train_pairs` pairs and the held-out side to its first `held_out_pairs` when given (a
    smaller run, the same split). Returns both paths and counts."""
    from rlhfkit.data import read_preferences, split_records

    if not HH.is_file():
        raise SystemExit(
            f"needs {HH}: the HH-RLHF helpful-online test split (set RLHFKIT_DATA_DIR)"
        )
    result = read_preferences(HH, "hh", on_error="skip")  # a few real rows are broken
    train, held = split_records(
        result.records, (1 - HELD_OUT_FRACTION, HELD_OUT_FRACTION), seed=SPLIT_SEED
    )
    if train_pairs is not None:
        train = train[:train_pairs]
    if held_out_pairs is not None:
        held = held[:held_out_pairs]
    # One folder per size, so a benchmark never rewrites the files another one is reading.
    out = out / f"train{len(train)}_held{len(held)}"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train", train), ("held_out", held)):
        path = out / f"hh_{name}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for p in part:
                prompt = [{"role": m.role, "content": m.content} for m in p.prompt]
                f.write(json.dumps({"prompt": prompt, "chosen": p.chosen, "rejected": p.rejected}))
                f.write("\n")
        paths.append(path)
    counts = {
        "pairs_read": len(result.records),
        "train_pairs": len(train),
        "held_out_pairs": len(held),
        "train_dialogues": len({str(p.prompt) for p in train}),
        "held_out_dialogues": len({str(p.prompt) for p in held}),
    }
    return paths[0], paths[1], counts


def held_out_prompts(held_file: Path, n: int) -> list:
    """The first `n` held-out dialogues as `PromptRecord`s (the prompts win rates are measured on)."""
    from rlhfkit.data import read_preferences
    from rlhfkit.types import PromptRecord

    pairs = read_preferences(held_file, "generic").records[:n]
    return [PromptRecord(p.prompt, source=p.source) for p in pairs]


def win_rates(
    new_folder: Path,
    start_folder: Path,
    prompts: list,
    judges: dict,
    rollout,
    max_length: int,
    seed: int = 0,
) -> dict:
    """Sample one reply per prompt from the trained policy and from the starting model (same
    seed), score every reply with each judge (a reward-model folder), and give the trained
    policy's win rate under each, asked in both orders (`eval.judge_both_orders`; a pointwise
    judge is order-free, so its position inconsistency must be 0)."""
    import torch
    from transformers import AutoModelForCausalLM

    from rlhfkit.eval.evaluate import evaluate_policy
    from rlhfkit.eval.judges import judge_both_orders, pairwise_from_pointwise
    from rlhfkit.models import load_tokenizer
    from rlhfkit.models.scalar import load_reward_model
    from rlhfkit.rollout.scorers import RetokenizingRewardModelScorer

    tokenizer = load_tokenizer(str(start_folder))
    results = {}
    for name, folder in (("new", new_folder), ("start", start_folder)):
        policy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        results[name] = evaluate_policy(
            policy, tokenizer, prompts, rollout, seed=seed, name=name, max_prompt_length=64
        )
        del policy
    out: dict = {
        "prompts": len(prompts),
        "mean_tokens_new": round(results["new"].summary()["mean_tokens"], 1),
        "mean_tokens_start": round(results["start"].summary()["mean_tokens"], 1),
        "example_new": results["new"].replies[0][:200],
        "example_start": results["start"].replies[0][:200],
    }
    position = {id(p): i for i, p in enumerate(prompts)}
    for judge_name, folder in judges.items():
        # Each reply is scored as the RM was trained: (dialogue, reply + EOS) in the chat template.
        scorer = RetokenizingRewardModelScorer(
            load_reward_model(folder, dtype="float32"), load_tokenizer(str(folder)), max_length
        )
        scores = {
            name: scorer([], res.replies, None, res.prompts).tolist()
            for name, res in results.items()
        }
        lookup = {(i, name): s for name, ss in scores.items() for i, s in enumerate(ss)}
        by_reply = {}
        for name, res in results.items():
            for i, reply in enumerate(res.replies):
                by_reply[(i, reply)] = lookup[(i, name)]
        judge = pairwise_from_pointwise(lambda p, r, t=by_reply: t[(position[id(p)], r)])
        rep = judge_both_orders(judge, prompts, results["new"].replies, results["start"].replies)
        out[f"win_rate_under_{judge_name}"] = {
            k: round(v, 4) if isinstance(v, float) else v for k, v in rep.to_dict().items()
        }
        out[f"mean_score_under_{judge_name}"] = {
            name: round(sum(ss) / len(ss), 4) for name, ss in scores.items()
        }
    return out
