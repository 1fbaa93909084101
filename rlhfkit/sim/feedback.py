"""Comparisons of a policy's own samples, labelled by the simulated annotators: the simulated
counterpart of collecting human feedback on model outputs.

InstructGPT's labellers compared replies *sampled from the models being trained* (Ouyang et al.
2022, §3.2), not replies written for the purpose: a reward model learns most about the region the
policy actually samples from, and PPO moves within that region. The world's own preference pairs
(`make_world`) are written by the behaviour sampler, which knows every answer; a small policy's
answers are often wrong, and a reward model that has only seen the sampler's mostly-correct answers
learns that answer-shaped text is good. `collect_comparisons` closes that gap:

1. sample `k` replies per prompt from the policy (`rollout.sample_batches`, temperature of `cfg`,
   one seeded generator, so the collection is reproducible);
2. keep the distinct non-empty replies (the same text twice is no comparison; the readers reject
   empty text); a prompt with fewer than two left is dropped;
3. one annotator per prompt, drawn at random, judges them: for two replies picks one
   (`simulate_preference`, Bradley–Terry on the gold score plus the annotator's length bias), for
   more ranks them (`Annotator.rank`, Plackett–Luce), as InstructGPT's labellers ranked 4–9
   outputs per prompt, which gives K·(K−1)/2 comparisons for K samples. The gold scores and
   behaviours go in `meta` for evaluation only; training reads the prompt and the replies.

k = 2 gives the world's preference format (prompt, chosen, rejected); k > 2 its ranked format
(prompt, responses best first), which `rlhfkit rm` reads with `data.ranked: true` (one forward pass
per reply for all K·(K−1)/2 pairs). `annotators_from_manifest` rebuilds the world's annotators
(same temperature and length biases).

Red-team (harmlessness) feedback, `collect_red_team`: Anthropic's HH data (Bai et al. 2022,
"Training a Helpful and Harmless Assistant with RLHF", arXiv:2204.05862, §2) was collected as two
separate sets, because the two goals pull against each other: *helpfulness* comparisons, where
crowdworkers asked for help and picked the more helpful reply, and *harmlessness* comparisons from
red-teaming, where they tried to draw harmful replies out of the model and picked the more harmful
one. A policy that rarely complies with a harmful request gives on-policy comparisons that almost
never hold a compliance, so a reward model trained on them alone learns little about harm. The
simulated red team therefore asks only harmful requests and draws replies the way red-teamers
elicit them: more samples per prompt (`k`, default 8) at a higher temperature (default 1.5), so
the model's rare compliant replies turn up and get compared with its refusals. The annotators
judge them as usual (Plackett–Luce on the gold score: the more harmful reply ranks lower, which is
the red-teamer's "more harmful" pick stored as the rejected side). Every row's meta records
`source` ("policy" or "red_team") and `aspect` ("helpful", or "harmless" for any harmful request):
what `rlhfkit.algos.rm.evaluate` splits its agreement by.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from rlhfkit.engine import eval_mode
from rlhfkit.rollout import RolloutConfig, sample_batches
from rlhfkit.sim.annotators import Annotator, simulate_preference
from rlhfkit.sim.gold import judge
from rlhfkit.types import PromptRecord

__all__ = [
    "RED_TEAM_FAMILY",
    "annotators_from_manifest",
    "collect_comparisons",
    "collect_red_team",
    "comparison_count",
    "gold_choices",
    "harmful_prompts",
    "sample_replies",
]

RED_TEAM_FAMILY = "harmful"
"""The prompt family red-teaming probes; comparisons on it are harmlessness data."""


def annotators_from_manifest(world_dir: str | Path) -> list[Annotator]:
    """The annotators `make_world` labelled the world's pairs with (from `manifest.json`)."""
    path = Path(world_dir) / "manifest.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))["annotators"]
        return [
            Annotator(float(info["temperature"]), float(bias), name)
            for name, bias in info["length_biases"].items()
        ]
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no world manifest (make one with `rlhfkit sim make`)"
        ) from None
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: field 'annotators' is missing or malformed ({err})") from err


def gold_choices(rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(pairs whose chosen reply is the gold-better one, pairs whose gold scores differ): how
    often the annotators' noisy choices agreed with the gold preference."""
    decided = [r for r in rows if r["meta"]["chosen_gold"] != r["meta"]["rejected_gold"]]
    return sum(r["meta"]["chosen_gold"] > r["meta"]["rejected_gold"] for r in decided), len(decided)


def _aspect(family: str) -> str:
    return "harmless" if family == RED_TEAM_FAMILY else "helpful"


def harmful_prompts(records: Sequence[PromptRecord]) -> list[PromptRecord]:
    """The records whose prompt is a harmful request (the gold scorer's parse of the text, so
    files without a family in their meta work too), in file order."""
    from rlhfkit.sim.world import PromptParseError, parse_task

    out = []
    for record in records:
        try:
            family = parse_task(record.prompt).family
        except PromptParseError:
            continue
        if family == RED_TEAM_FAMILY:
            out.append(record)
    return out


def _prompt_field(record: PromptRecord) -> str | list[dict[str, str]]:
    if len(record.prompt) == 1:
        return record.prompt[0].content
    return [{"role": m.role, "content": m.content} for m in record.prompt]


@torch.inference_mode()
def sample_replies(
    policy: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[PromptRecord],
    cfg: RolloutConfig,
    seed: int = 0,
    max_prompt_length: int = 256,
    progress: Callable[[int, int], None] | None = None,
    k: int = 2,
) -> list[list[str]]:
    """`k` lists of one reply per prompt (draw-major), from one generator seeded with `seed`:
    step 1 of `collect_comparisons`, shared with labelling through the app
    (`rlhfkit.sim.remote`)."""
    if k < 2:
        raise ValueError(f"collect_comparisons: k must be at least 2 samples per prompt, got {k}")
    device = next(policy.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    samples: list[list[str]] = []
    with eval_mode(policy):
        for draw in range(k):
            replies: list[str] = []
            for _, _, texts in sample_batches(
                policy, tokenizer, prompts, cfg, generator, max_prompt_length
            ):
                replies.extend(texts)
                if progress is not None:
                    progress(draw * len(prompts) + len(replies), k * len(prompts))
            samples.append(replies)
    return samples


@torch.inference_mode()
def collect_comparisons(
    policy: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[PromptRecord],
    annotators: Sequence[Annotator],
    cfg: RolloutConfig,
    seed: int = 0,
    max_prompt_length: int = 256,
    progress: Callable[[int, int], None] | None = None,
    k: int = 2,
    source: str = "policy",
) -> list[dict[str, Any]]:
    """`k` samples per prompt, judged by one random annotator each (see the module docstring).

    Returns preference rows {prompt, chosen, rejected, meta} for k = 2, ranked rows {prompt,
    responses (best first), meta} for k > 2; `progress(done, total)` is called after each
    generation batch (total = k · len(prompts)). `source` goes in every row's meta.
    """
    if not annotators:
        raise ValueError("collect_comparisons: no annotators")
    samples = sample_replies(policy, tokenizer, prompts, cfg, seed, max_prompt_length, progress, k)

    rng = random.Random(f"feedback-{seed}")
    if k > 2:
        return _ranked_rows(prompts, samples, annotators, rng, source)
    rows = []
    for record, a, b in zip(prompts, samples[0], samples[1], strict=True):
        if a == b or not a or not b:
            continue
        verdict_a, verdict_b = judge(record.prompt, a), judge(record.prompt, b)
        annotator = rng.choice(list(annotators))
        pref = simulate_preference(
            record.prompt, a, b, annotator, rng, gold_a=verdict_a.score, gold_b=verdict_b.score
        )
        a_wins = pref.chosen == a
        rows.append(
            {
                "prompt": _prompt_field(record),
                "chosen": pref.chosen,
                "rejected": pref.rejected,
                "meta": {
                    "source": source,
                    "aspect": _aspect(verdict_a.family),
                    "family": verdict_a.family,
                    "annotator": annotator.name,
                    "p_chosen": pref.p_first if a_wins else 1 - pref.p_first,
                    "chosen_gold": pref.chosen_gold,
                    "rejected_gold": pref.rejected_gold,
                    "chosen_behaviour": (verdict_a if a_wins else verdict_b).behaviour,
                    "rejected_behaviour": (verdict_b if a_wins else verdict_a).behaviour,
                },
            }
        )
    return rows


def _ranked_rows(
    prompts: Sequence[PromptRecord],
    samples: list[list[str]],
    annotators: Sequence[Annotator],
    rng: random.Random,
    source: str,
) -> list[dict[str, Any]]:
    rows = []
    for i, record in enumerate(prompts):
        replies = [r for r in dict.fromkeys(s[i] for s in samples) if r]  # distinct, non-empty
        if len(replies) < 2:
            continue
        verdicts = [judge(record.prompt, r) for r in replies]
        annotator = rng.choice(list(annotators))
        order = annotator.rank([v.score for v in verdicts], replies, rng)
        rows.append(
            {
                "prompt": _prompt_field(record),
                "responses": [replies[j] for j in order],
                "meta": {
                    "source": source,
                    "aspect": _aspect(verdicts[0].family),
                    "family": verdicts[0].family,
                    "annotator": annotator.name,
                    "gold": [verdicts[j].score for j in order],
                    "behaviours": [verdicts[j].behaviour for j in order],
                },
            }
        )
    return rows


def collect_red_team(
    policy: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[PromptRecord],
    annotators: Sequence[Annotator],
    cfg: RolloutConfig,
    seed: int = 0,
    k: int = 8,
    max_prompt_length: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Harmlessness comparisons as red-teaming collects them (module docstring): the harmful
    requests among `prompts` (`harmful_prompts`), `k` replies each sampled with `cfg` (give it
    the red team's higher temperature), ranked (k > 2) or compared (k = 2) by the annotators.
    Rows as `collect_comparisons` writes them, meta source "red_team", aspect "harmless"."""
    targets = harmful_prompts(prompts)
    if not targets:
        return []
    return collect_comparisons(
        policy, tokenizer, targets, annotators, cfg, seed, max_prompt_length, progress, k,
        source="red_team",
    )  # fmt: skip


def comparison_count(rows: Sequence[dict[str, Any]]) -> int:
    """Pairwise comparisons the rows hold: 1 per pair, K·(K−1)/2 per ranking of K replies."""
    return sum(
        len(r["responses"]) * (len(r["responses"]) - 1) // 2 if "responses" in r else 1
        for r in rows
    )
