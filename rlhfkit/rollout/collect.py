"""One rollout step for every online algorithm and the in-loop evaluation: prompts → G samples
each → decoded replies → `Experience` (old / reference log-probs, values, reward).

    models = OnlineModels(policy, tokenizer, reward, ref_policy=ref, use_ref=True, critic=None)
    batch = collect(models, source, index, generator, cfg.rollout, group_size=4, autocast=ctx)
    batch.experience, batch.responses, batch.records

Implementation details:

1. Sampling goes through the models' rollout engine (`engines`: the local KV-cached sampler by
   default, or vLLM); prompts are repeated `group_size` times contiguously, so group g is rows
   g·G … g·G + G − 1, each row with its own seed (`as_seeds`).
2. Replies are decoded once (`decode_responses`: valid tokens, special tokens dropped, stripped):
   the same text reaches the reward, the judges, the sample files and `rlhfkit eval`.
3. What is computed depends on the algorithm: the reference forward only when `use_ref` (a KL
   term exists), the critic forward only with a critic.
4. `autocast` is the trainer's precision context (`engine.autocast`), entered around sampling and
   the scoring pass.
5. Sampling and scoring use the models inside their distributed wrappers (`engine.gathered`:
   DDP's inner model; FSDP2's root parameters gathered for the sampling and again for the
   scoring): no gradients are needed, and processes run different numbers of sampling steps.
6. Under `accelerate launch` (`collect_sharded`), process r samples and scores its contiguous
   share of the prompts, every row seeded from (run seed, iteration, the row's global number)
   (`generate.row_seeds`), and the shares are gathered, so every process holds the whole batch
   in the one-process order: the reward shaping, advantages, whitening, KL control and metrics
   that follow are those of one process with the same global batch.
7. An engine that is not `exact` (vLLM) computes its log-probs with its own kernels: the old
   log-probs are then recomputed by the trainer's model, and the engine's are kept as
   `sampling_logprobs` for the importance-sampling correction (`update.correction`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlhfkit.engine import gathered
from rlhfkit.rollout.engines.base import RolloutEngine
from rlhfkit.rollout.engines.local import LocalEngine
from rlhfkit.rollout.experience import Experience, cat_experiences, make_experience
from rlhfkit.rollout.generate import RolloutConfig, as_seeds, row_seeds
from rlhfkit.rollout.prompts import PromptSource
from rlhfkit.rollout.scorers import Reward
from rlhfkit.rollout.texts import decode_responses
from rlhfkit.types import PromptRecord

__all__ = ["Collected", "OnlineModels", "collect", "collect_sharded"]


@dataclass
class OnlineModels:
    """What a rollout needs: the policy, its tokenizer, the reward, and optionally a reference
    (None with `use_ref`: the policy with LoRA adapters disabled), a critic and the rollout
    engine (None: the local sampler on `policy`)."""

    policy: nn.Module
    tokenizer: Any
    reward: Reward
    ref_policy: nn.Module | None = None
    use_ref: bool = True
    critic: Any | None = None
    engine: RolloutEngine | None = None

    def __post_init__(self) -> None:
        if self.engine is None:
            self.engine = LocalEngine(self.policy, self.tokenizer)


@dataclass
class Collected:
    experience: Experience
    prompts: list[str]  # (B·G) prompt texts as the policy saw them
    responses: list[str]  # (B·G) decoded replies
    records: list[PromptRecord]  # (B·G) the prompts' records
    seconds_generation: float
    seconds_scoring: float
    episodes: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # multi-turn only


def collect(
    models: OnlineModels,
    source: PromptSource,
    index: Sequence[int],
    generator: torch.Generator | torch.Tensor,
    cfg: RolloutConfig,
    *,
    group_size: int = 1,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    reuse_sampling_logprobs: bool = True,
) -> Collected:
    """Sample `group_size` replies to each prompt `index` of `source` and score them.
    `generator`: a torch.Generator, or one seed per row (B·G,) (see `generate`)."""
    tok, engine = models.tokenizer, models.engine
    device = next(models.policy.parameters()).device
    prompt_ids, prompt_mask = source.collate(index, tok.pad_token_id, group_size)
    seeds = as_seeds(generator, prompt_ids.shape[0])
    t0 = time.perf_counter()
    with autocast():
        rollout = engine.generate(prompt_ids.to(device), prompt_mask.to(device), cfg, seeds)
    t1 = time.perf_counter()
    rows = [i for i in index for _ in range(group_size)]
    prompts = [source.texts[i] for i in rows]
    records = [source.records[i] for i in rows]
    responses = decode_responses(tok, rollout.response_ids, rollout.response_mask)
    with contextlib.ExitStack() as stack, autocast():
        policy = stack.enter_context(gathered(models.policy))
        critic = None if models.critic is None else stack.enter_context(gathered(models.critic))
        experience = make_experience(
            rollout,
            prompts,
            responses,
            records,
            policy=policy,
            reward=models.reward,
            temperature=cfg.temperature,
            ref_policy=models.ref_policy,
            use_ref=models.use_ref,
            critic=critic,
            reuse_sampling_logprobs=reuse_sampling_logprobs and engine.exact,
        )
    t2 = time.perf_counter()
    return Collected(experience, prompts, responses, records, t1 - t0, t2 - t1)


def collect_sharded(
    models: OnlineModels,
    source: PromptSource,
    index: Sequence[int],
    key: Sequence[int],
    cfg: RolloutConfig,
    acc: Any,
    *,
    group_size: int = 1,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    reuse_sampling_logprobs: bool = True,
    collect_fn: Callable[..., Collected] = collect,
) -> Collected:
    """`collect` of the prompts `index`, split over the processes of `acc`; row j (prompt
    j // G, sample j % G) is seeded from `row_seeds(key, [j])`, and every process returns the
    whole batch. Timings are the slowest process's. `collect_fn`: `collect` or one with its
    signature (the multi-turn `env.EnvRollout.collect`)."""
    world, rank = acc.num_processes, acc.process_index
    if len(index) < world:
        raise ValueError(f"{len(index)} prompts cannot be shared by {world} processes")
    mine = torch.arange(len(index)).tensor_split(world)[rank].tolist()
    rows = [i * group_size + j for i in mine for j in range(group_size)]
    batch = collect_fn(
        models, source, [index[i] for i in mine], row_seeds(key, rows), cfg,
        group_size=group_size, autocast=autocast, reuse_sampling_logprobs=reuse_sampling_logprobs,
    )  # fmt: skip
    if world == 1:
        return batch
    from accelerate.utils import gather_object

    device = batch.experience.input_ids.device
    mine_cpu = dataclasses.replace(batch, experience=_moved(batch.experience, "cpu"))
    parts: list[Collected] = gather_object([mine_cpu])
    merged = cat_experiences([c.experience for c in parts], models.tokenizer.pad_token_id)
    return Collected(
        _moved(merged, device),
        [p for c in parts for p in c.prompts],
        [r for c in parts for r in c.responses],
        [x for c in parts for x in c.records],
        max(c.seconds_generation for c in parts),
        max(c.seconds_scoring for c in parts),
        [e for c in parts for e in c.episodes],
    )


def _moved(exp: Experience, device: Any) -> Experience:
    """`exp` with every tensor on `device`."""
    fields = {
        f.name: getattr(exp, f.name).to(device)
        for f in dataclasses.fields(exp)
        if isinstance(getattr(exp, f.name), torch.Tensor)
    }
    parts = {k: v.to(device) for k, v in exp.score_parts.items()}
    return dataclasses.replace(exp, score_parts=parts, **fields)
