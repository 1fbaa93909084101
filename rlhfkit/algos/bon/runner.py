"""`rlhfkit bon`: best-of-n sampling with a reward model, reward functions or their weighted sum,
writing the best replies, rejection-sampling fine-tuning data and best-vs-worst pairs."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.algos.bon.config import BoNConfig
from rlhfkit.algos.bon.sampling import (
    Candidates,
    pick_best,
    pick_worst,
    sample_candidates,
    weighted,
)
from rlhfkit.core import best_of_n_kl
from rlhfkit.data import DataError, read_prompts
from rlhfkit.data.readers import require_records
from rlhfkit.engine import Engine
from rlhfkit.models import check_source, load_policy, load_reward_model, load_tokenizer
from rlhfkit.rollout import (
    CallableScorer,
    RewardError,
    RewardModelScorer,
    Scorer,
    build_engine,
    import_callable,
    policy_weights,
)
from rlhfkit.types import Dialogue, PromptRecord

__all__ = ["BoNResult", "prompt_field", "train", "write_outputs"]


@dataclass
class BoNResult:
    run_dir: Path
    best: Path  # best.jsonl: every prompt, its n replies and scores, the best one
    rft: Path  # rft.jsonl: prompt/response, SFT data (rejection-sampling fine-tuning)
    pairs: Path  # pairs.jsonl: prompt/chosen/rejected, best vs worst
    summary: dict[str, Any] = field(default_factory=dict)


def prompt_field(prompt: Dialogue) -> str | list[dict[str, str]]:
    """A dialogue as the readers take it back: the text of a lone user turn, else messages."""
    if len(prompt) == 1 and prompt[0].role == "user":
        return prompt[0].content
    return [{"role": m.role, "content": m.content} for m in prompt]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def write_outputs(
    out: Path, cand: Candidates, selector: list[list[float]], rft_min_score: float | None = None
) -> tuple[Path, Path, Path, dict[str, Any]]:
    """best.jsonl, rft.jsonl and pairs.jsonl in `out` (see `sampling` detail 5), and a summary:
    per scorer the mean score of the best reply and of all samples (best-of-1), and the KL."""
    best_rows, rft_rows, pair_rows = [], [], []
    best_idx = [pick_best(s) for s in selector]
    for i, rec in enumerate(cand.records):
        b, w = best_idx[i], pick_worst(selector[i])
        prompt = prompt_field(rec.prompt)
        scores = {k: v[i] for k, v in cand.scores.items()}
        best_rows.append(
            {
                "prompt": prompt,
                "response": cand.replies[i][b],
                "score": selector[i][b],
                "best": b,
                "replies": cand.replies[i],
                "scores": scores,
                "selection": selector[i],
            }
        )
        keep = rft_min_score is None or selector[i][b] >= rft_min_score
        if keep and cand.replies[i][b].strip():  # an empty reply is no demonstration
            rft_rows.append({"prompt": prompt, "response": cand.replies[i][b]})
        chosen, rejected = cand.replies[i][b], cand.replies[i][w]
        distinct = chosen.strip() and rejected.strip() and chosen.strip() != rejected.strip()
        if selector[i][b] > selector[i][w] and distinct:
            pair_rows.append(
                {
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "meta": {"chosen_score": selector[i][b], "rejected_score": selector[i][w]},
                }
            )
    summary: dict[str, Any] = {
        "n": cand.n,
        "prompts": len(cand.records),
        "kl_bound": best_of_n_kl(cand.n),
        "selection_best_mean": _mean([selector[i][b] for i, b in enumerate(best_idx)]),
        "selection_sample_mean": _mean([x for s in selector for x in s]),
        "rft_rows": len(rft_rows),
        "pairs": len(pair_rows),
    }
    for name, values in cand.scores.items():
        summary[f"{name}/best_mean"] = _mean([values[i][b] for i, b in enumerate(best_idx)])
        summary[f"{name}/sample_mean"] = _mean([x for v in values for x in v])
    return (
        _jsonl(out / "best.jsonl", best_rows),
        _jsonl(out / "rft.jsonl", rft_rows),
        _jsonl(out / "pairs.jsonl", pair_rows),
        summary,
    )


def _checked_inputs(cfg: BoNConfig) -> tuple[list[PromptRecord], Any, dict[str, Any]]:
    """The prompts, the tokenizer and the reward functions, with every mistake (an empty or bad
    prompts file, a missing model, tokenizer or reward model folder, a reward function path
    that does not import) one error naming its key, before the run directory is made."""
    if not cfg.prompts:
        raise DataError([], header="prompts is empty: give a prompts file")
    records = require_records(read_prompts(cfg.prompts), cfg.prompts, "prompts").records
    if not cfg.model.name_or_path.startswith("tiny:"):
        check_source(cfg.model.name_or_path, "model.name_or_path")
    if cfg.reward_model:
        check_source(cfg.reward_model, "reward_model")
    fns = {spec: import_callable(spec, f"reward_fns[{i}]") for i, spec in enumerate(cfg.reward_fns)}
    tokenizer = load_tokenizer(
        cfg.tokenizer or cfg.model.name_or_path,
        "tokenizer" if cfg.tokenizer else "model.name_or_path",
    )
    return records[: cfg.limit], tokenizer, fns


def train(cfg: BoNConfig) -> BoNResult:
    """Run best-of-n (named `train` like every command's entry point; nothing is trained)."""
    # 1. prompts, tokenizer, reward functions (checked before the run directory is made), the
    # rollout engine (vLLM: before the run directory too), policy, scorers
    records, tokenizer, fns = _checked_inputs(cfg)
    sampler = None
    if cfg.rollout.engine != "local":
        sampler = build_engine(
            cfg.rollout,
            tokenizer,
            model_path=cfg.model.name_or_path,
            weights_dir=Path(cfg.out_dir) / "rollout_weights",
            seed=cfg.engine.seed,
            tokenizer_path=cfg.tokenizer,
        )
    engine = Engine(cfg.engine, cfg.out_dir, cfg)
    t0 = time.perf_counter()
    policy = load_policy(cfg.model, tokenizer).to(engine.device)
    if sampler is not None:  # the policy as loaded here (a server may hold other weights)
        sampler.push_weights(policy_weights(policy), 0)
    scorers: dict[str, Scorer] = {}
    if cfg.reward_model:
        rm = load_reward_model(cfg.reward_model, device=engine.device)
        scorers["reward_model"] = RewardModelScorer(rm, batch_size=cfg.rollout.batch_size)
    for spec, fn in fns.items():
        scorers[spec] = CallableScorer(fn, name=spec)
    weights = dict(zip(scorers, cfg.weights or [1.0] * len(scorers), strict=True))
    engine.print(
        f"bon: {len(records)} prompts × {cfg.n} samples, scored by {', '.join(scorers)}; "
        f"KL(best-of-{cfg.n} ‖ policy) = {best_of_n_kl(cfg.n):.3f} nats"
    )

    # 2. sample n replies per prompt and score them
    cand = sample_candidates(
        policy,
        tokenizer,
        records,
        cfg.rollout,
        cfg.n,
        cfg.engine.seed,
        scorers,
        cfg.max_prompt_length,
        engine=sampler,
    )

    for name, values in cand.scores.items():  # NaN cannot be ranked: say so, write nothing
        bad = sum(not math.isfinite(x) for v in values for x in v)
        if bad:
            engine.close()
            raise RewardError(f"{name} gave {bad} NaN/inf scores of {len(values) * cfg.n}")

    # 3. select: the weighted selection score, best and worst per prompt; write the files
    selector = weighted(cand.scores, weights)
    out = engine.run.path
    best, rft, pairs, summary = write_outputs(out, cand, selector, cfg.rft_min_score)
    summary["seconds"] = time.perf_counter() - t0
    if engine.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    engine.log({f"bon/{k}": v for k, v in summary.items() if isinstance(v, (int, float))}, 0)
    engine.print(
        f"bon: best-of-{cfg.n} selection score {summary['selection_best_mean']:+.3f} "
        f"(samples {summary['selection_sample_mean']:+.3f}) at KL {summary['kl_bound']:.3f}; "
        f"wrote {best.name}, {rft.name} ({summary['rft_rows']}), {pairs.name} "
        f"({summary['pairs']}) in {out}"
    )
    if sampler is not None:
        sampler.close()
    engine.close()
    return BoNResult(out, best, rft, pairs, summary)
