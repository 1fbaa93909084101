"""In-loop evaluation on held-out prompts, the same for every online trainer.

`evaluate_online` samples one reply per held-out prompt through `collect` (the training rollout
path: same encoding, sampler, decoding and reward), with a fixed generator so every evaluation of
a run draws the same random numbers, and returns `eval/*` metrics plus the rows written to the
run's sample files:

- `eval/rm_score`: mean reward (the weighted sum the trainer optimises); `eval/reward/<name>`
  per component when there are several;
- `eval/kl_to_ref`: mean per-sequence KL to the reference (k1), when the run has a reference;
- `eval/length_mean`: mean reply length in tokens;
- `eval/<judge>`: mean of each judge's scores (a judge is any `f(prompts, replies[, records])`,
  e.g. the simulated world's gold scorer, which the trainer never optimises).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from rlhfkit.core import sequence_kl
from rlhfkit.rollout.collect import OnlineModels, collect
from rlhfkit.rollout.generate import RolloutConfig
from rlhfkit.rollout.prompts import PromptSource
from rlhfkit.rollout.scorers import CallableScorer

__all__ = ["Judge", "evaluate_online"]

Judge = Callable[..., Sequence[float]]  # f(prompts, replies) or f(prompts, replies, records)


def evaluate_online(
    models: OnlineModels,
    source: PromptSource,
    cfg: RolloutConfig,
    seed: int,
    judges: Mapping[str, Judge] | None = None,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics over all of `source` (batches of `cfg.batch_size`) and one row per prompt."""
    generator = torch.Generator().manual_seed(seed)
    n = len(source)
    scores, kls, lengths, parts = [], [], [], {}
    prompts, responses, records = [], [], []
    for chunk in torch.arange(n).tensor_split(math.ceil(n / cfg.batch_size)):
        batch = collect(models, source, chunk.tolist(), generator, cfg, autocast=autocast)
        exp = batch.experience
        scores.append(exp.scores)
        for k, v in exp.score_parts.items():
            parts.setdefault(k, []).append(v)
        if exp.ref_logprobs is not None:
            kls.append(sequence_kl(exp.old_logprobs, exp.ref_logprobs, exp.response_mask))
        lengths.append(exp.response_mask.sum(1).float())
        prompts += batch.prompts
        responses += batch.responses
        records += batch.records
    all_scores = torch.cat(scores)
    out = {
        "eval/rm_score": float(all_scores.mean()),
        "eval/length_mean": float(torch.cat(lengths).mean()),
    }
    if len(parts) > 1:
        out.update({f"eval/reward/{k}": float(torch.cat(v).mean()) for k, v in parts.items()})
    if kls:
        out["eval/kl_to_ref"] = float(torch.cat(kls).mean())
    for name, judge in (judges or {}).items():
        values = CallableScorer(judge, name)(prompts, responses, None, records)
        out[f"eval/{name}"] = float(values.mean())
    rows = [
        {"prompt": p, "response": r, "score": float(s)}
        for p, r, s in zip(prompts, responses, all_scores.tolist(), strict=True)
    ]
    return out, rows
