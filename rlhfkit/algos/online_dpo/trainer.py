"""Online DPO (`rlhfkit online-dpo`): each iteration samples K replies per prompt from the
current policy, labels the best and the worst by the reward (a reward model or a Python
function) or by a pairwise LLM judge asked in both orders (`label: judge`), and takes DPO / IPO
steps on those pairs against the frozen reference.

One iteration reads top to bottom in `train`: 1. rollout (K samples per prompt, the shared
rollout path), 2. label (best vs worst by score or by the judge; ties dropped and counted:
`label_batch`), 3. pairs (token ids as the policy sampled them), 4. update (epochs × mini-batches of DPO steps), 5. log / evaluate /
checkpoint.

Implementation details and their sources:

1. Online AI feedback (Guo et al. 2024, "Direct Language Model Alignment from Online AI
   Feedback", Algorithm 1): two replies per prompt from the current policy, the annotator's
   preferred one is y⁺, a DPO step on (x, y⁺, y⁻); here the annotator is the configured reward
   (`rollout.build_reward`), and the better-scored reply is y⁺. With K > 2 the highest- and
   lowest-scored replies form the pair (Xiong et al. 2024; OpenRLHF iterative DPO's
   best-of-n vs worst-of-n). Equal scores give no preference: the pair is dropped and counted
   (`pairs/ties_dropped`). With `label: judge` a pairwise LLM judge (`rollout.JudgeConfig`:
   a local causal LM or an OpenAI-compatible endpoint) picks instead, asked in both orders;
   ties and position-inconsistent verdicts are dropped and counted (`label/judge_ties`,
   `label/order_disagreement`); the rule for K > 2 is in the `label` module's docstring.
2. The iterative variant (OpenRLHF `train_iterative_dpo`, Xiong et al. 2024): a labelled set of
   `rollout_batch_size` prompts trained for `ppo_epochs` passes of `mini_batch_size` pairs
   before the next set is sampled from the updated policy. `mini_batch_size =
   rollout_batch_size`, one epoch, is Guo et al.'s one step per fresh batch.
3. The step is `rlhfkit dpo`'s (`update.pairs.pair_loss`): the replies' token ids as sampled
   (no decode / re-encode), shared-prompt rows, summed response log-probs, the loss from `core`
   (`dpo_sigmoid_losses`, or `ipo_losses` on token-mean log-probs), each micro-batch's summed
   loss over the step's global pair count; the reference is frozen (the initial policy,
   `ref_policy`, or with LoRA the policy with its adapters disabled) and runs on the pairs only
   (`update.reference.live_reference`), not on all K samples. Tested equal to an offline DPO
   step on the same pairs.
4. Metrics: TRL's `rewards/chosen`, `rewards/rejected`, `rewards/accuracies`,
   `rewards/margins`, `logps/chosen`, `logps/rejected` (averaged over the iteration's steps),
   `reward/score_chosen`, `reward/score_rejected`, the rollout metrics every online trainer
   logs, and `eval/*` with `eval/kl_to_ref` on held-out prompts.
5. Checkpoint, exact resume, NaN/inf handling, progress and in-loop evaluation are the shared
   online pieces (`update.OnlineState`, `engine.steps`, `rollout.evaluate_online`).
6. Under `accelerate launch` each process samples its share of the prompts (rows seeded by
   their global number), every process holds the gathered batch, and each trains on its share
   of every mini-batch; the kept pairs are cut to a multiple of the number of processes
   (`pairs/dropped_for_sharding`), so every process has pairs in every step.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.algos.online_dpo.config import OnlineDPOConfig
from rlhfkit.algos.online_dpo.label import judge_pairs, label_pairs
from rlhfkit.core import dpo_sigmoid_losses, ipo_losses
from rlhfkit.data import EncodedPair, stop_token_ids
from rlhfkit.engine import (
    Engine,
    NonFiniteError,
    accumulate,
    optimizer_step,
)
from rlhfkit.rollout import (
    Collected,
    Experience,
    Judge,
    OnlineModels,
    build_judge,
    check_judge,
    collect_sharded,
    reference_context,
    rollout_metrics,
)
from rlhfkit.update import push_policy
from rlhfkit.update.data import OnlineData, build_online_reward, load_policies, read_online_inputs
from rlhfkit.update.loop import OnlineLoop, evaluate_held_out, minibatch_epochs, timing_metrics
from rlhfkit.update.pairs import collate, pair_loss, pair_metrics
from rlhfkit.update.reference import live_reference
from rlhfkit.update.state import OnlineResult, OnlineState

__all__ = [
    "LOSSES", "OnlineDPORun", "label_batch", "label_pairs", "pair_items", "setup", "train", "update",
]  # fmt: skip

OnlineDPOResult = OnlineResult

# loss_type → (per-pair loss of (policy chosen, policy rejected, ref chosen, ref rejected), β;
# whether it takes token-mean log-probs)
LOSSES: dict[str, tuple[Callable[..., Any], bool]] = {
    "sigmoid": (lambda pc, pr, rc, rr, beta: dpo_sigmoid_losses(pc, pr, rc, rr, beta), False),
    "ipo": (lambda pc, pr, rc, rr, beta: ipo_losses(pc, pr, rc, rr, beta), True),
}


@dataclass
class OnlineDPORun:
    cfg: OnlineDPOConfig
    engine: Engine
    data: OnlineData
    models: OnlineModels  # policy, tokenizer, reward; no reference forward in the rollout
    reference: Callable[[dict[str, Any]], torch.Tensor]  # collated pairs → (2, n) ref log-probs
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: OnlineState
    judges: dict[str, Judge]
    pair_judge: Any = None  # label: judge — the pairwise judge that labels; None: the reward


def _no_reward(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """The rollout's scores when the judge labels and no reward is configured: 0 (so the
    `reward/*` metrics are 0; the shared rollout and monitors expect a score)."""
    return [0.0] * len(responses)


def setup(
    cfg: OnlineDPOConfig,
    *,
    judges: dict[str, Judge] | None = None,
    reward_fn: Callable[..., Sequence[float]] | None = None,
    pair_judge: Any = None,
) -> OnlineDPORun:
    """Read the data (bad rows reported before anything is written), start the engine, load
    the policy, the frozen reference, the reward and the judge, resume if possible."""
    scored = bool(reward_fn or cfg.reward_model or cfg.reward_fn or cfg.rewards)
    if cfg.label == "judge" and not scored:  # a reward is optional: the judge labels
        reward_fn = _no_reward
    rows = cfg.rollout_batch_size * cfg.num_samples
    inputs = read_online_inputs(cfg, rows_per_iteration=rows, reward_fn=reward_fn)
    if cfg.label == "judge" and pair_judge is None:
        check_judge(cfg.judge)  # template and model folder, before the run directory
    engine = Engine(cfg.engine, cfg.out_dir, cfg)
    policy, ref_policy = load_policies(cfg, engine, use_ref=True)
    reward = build_online_reward(cfg, engine, reward_fn=reward_fn)
    steps = cfg.iterations * cfg.ppo_epochs * -(-cfg.rollout_batch_size // cfg.mini_batch_size)
    policy, optimizer, scheduler = engine.prepare_trainable(policy, cfg.optim, steps)
    inner = engine.accelerator.unwrap_model(policy)
    reference = functools.partial(
        live_reference,
        ref_policy if ref_policy is not None else inner,  # LoRA: adapters disabled
        functools.partial(reference_context, inner, ref_policy),
    )
    if cfg.label == "judge" and pair_judge is None:
        pair_judge = build_judge(cfg.judge, engine.device)
    state = OnlineState.resumed(cfg, inputs.data.prompts, engine)
    models = OnlineModels(
        policy, inputs.tokenizer, reward, ref_policy, use_ref=False, engine=inputs.sampler
    )
    return OnlineDPORun(
        cfg=cfg,
        engine=engine,
        data=inputs.data,
        models=models,
        reference=reference,
        optimizer=optimizer,
        scheduler=scheduler,
        state=state,
        judges=dict(judges or {}),
        pair_judge=pair_judge if cfg.label == "judge" else None,
    )


def label_batch(run: OnlineDPORun, batch: Collected) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(chosen rows, rejected rows, labelling metrics): by the reward's scores (`label_pairs`),
    or by the pairwise judge asked in both orders (`label.judge_pairs`)."""
    k = run.cfg.num_samples
    if run.pair_judge is None:
        chosen, rejected, ties = label_pairs(batch.experience.scores.cpu(), k)
        return chosen, rejected, {"pairs/ties_dropped": ties}
    prompts = [record.prompt for record in batch.records]
    judged = judge_pairs(run.pair_judge, prompts, batch.responses, k)
    return judged.chosen, judged.rejected, {
        "pairs/ties_dropped": judged.ties,
        "label/judgments": judged.judgments,
        "label/judge_ties": judged.judge_ties,
        "label/order_disagreement": judged.order_disagreements,
    }  # fmt: skip


def _reply(exp: Experience, row: int) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one sampled row, padding removed."""
    prompt = exp.input_ids[row, : exp.prompt_len][exp.attention_mask[row, : exp.prompt_len]]
    response = exp.response_ids[row][exp.response_mask[row]]
    return prompt.tolist(), response.tolist()


def pair_items(exp: Experience, chosen: torch.Tensor, rejected: torch.Tensor) -> list[EncodedPair]:
    """The labelled pairs as `EncodedPair`s of the token ids the policy sampled."""
    items = []
    for w, lose in zip(chosen.tolist(), rejected.tolist(), strict=True):
        prompt, good = _reply(exp, w)
        _, bad = _reply(exp, lose)
        items.append(EncodedPair(prompt + good, prompt + bad, len(prompt)))
    return items


def _with_beta(losses: Callable[..., Any], beta: float, *logps: torch.Tensor) -> Any:
    return losses(*logps, beta)


def update(run: OnlineDPORun, items: Sequence[EncodedPair]) -> tuple[dict[str, float], int]:
    """`ppo_epochs` passes of mini-batch DPO steps over the labelled pairs; (TRL-named mean
    stats, steps skipped for NaN/inf)."""
    cfg, acc = run.cfg, run.engine.accelerator
    world, pad_id = acc.num_processes, run.models.tokenizer.pad_token_id
    policy = run.models.policy
    losses_of, token_mean = LOSSES[cfg.loss_type]
    per_pair = functools.partial(_with_beta, losses_of, cfg.beta)

    def step(rows: torch.Tensor) -> dict[str, float]:
        n_pairs = len(rows) * world  # every process holds an equal share (see detail 6)
        losses = []
        for part in rows.tensor_split(min(cfg.grad_accum_steps, len(rows))):
            batch = collate([items[i] for i in part.tolist()], pad_id, cfg.share_prompt)
            losses.append(
                functools.partial(
                    pair_loss, policy, batch, run.reference, per_pair, token_mean, n_pairs, world
                )
            )
        sums = accumulate(acc, policy, losses)
        grad_norm = optimizer_step(
            acc, policy, run.optimizer, run.scheduler, cfg.optim.max_grad_norm
        )
        return {
            "loss/dpo": sums["loss"],
            # the stats are process averages of W-scaled sums: over n_pairs / W
            **pair_metrics(sums, n_pairs / world),
            "optim/grad_norm": grad_norm,
            "optim/lr": run.scheduler.get_last_lr()[0],
        }

    return minibatch_epochs(
        len(items),
        epochs=cfg.ppo_epochs,
        mini_batch_size=cfg.mini_batch_size,
        generator=run.state.shuffle_gen,
        step=step,
        on_nan=cfg.on_nan,
        shard=(acc.process_index, world),
    )


def evaluate(run: OnlineDPORun, iteration: int) -> dict[str, float]:
    """`eval/*` on the held-out prompts, with `eval/kl_to_ref` (`update.evaluate_held_out`)."""
    models = dataclasses.replace(run.models, use_ref=True)
    return evaluate_held_out(run, iteration, models=models)


def train(
    cfg: OnlineDPOConfig,
    *,
    judges: dict[str, Judge] | None = None,
    reward_fn: Callable[..., Sequence[float]] | None = None,
    pair_judge: Any = None,
) -> OnlineDPOResult:
    """Run online (or iterative) DPO; returns the saved policy and the final metrics.

    `judges` score held-out replies at each evaluation (`eval/<name>`);
    `reward_fn(prompts, responses[, records]) -> floats` replaces the configured reward;
    with `label: judge`, `pair_judge` (a callable `(prompt, a, b) -> P(a better)` or an object
    with `judge_many`, as `rollout.ask_both_orders` takes) replaces the configured judge.
    """
    run = setup(cfg, judges=judges, reward_fn=reward_fn, pair_judge=pair_judge)
    engine, state, acc = run.engine, run.state, run.engine.accelerator
    eos_id = stop_token_ids(run.models.tokenizer)
    loop = OnlineLoop.of(run, total_iters=cfg.iterations, evaluate=lambda i: evaluate(run, i))
    metrics, sync = loop.begin()  # the engine samples from the policy as it is; eval/* at 0
    for iteration in loop.iterations(desc="online-dpo"):
        t0 = time.perf_counter()

        # 1. rollout: K replies per prompt from the current policy
        index = state.prompts.next_batch(cfg.rollout_batch_size)
        batch = collect_sharded(
            run.models,
            state.prompts,
            index,
            (cfg.engine.seed, iteration, 1),
            cfg.rollout,
            acc,
            group_size=cfg.num_samples,
            autocast=engine.autocast,
            reuse_sampling_logprobs=acc.mixed_precision == "no",
        )
        exp = batch.experience
        verdict = loop.check_rollout(iteration, tensors=(exp.scores,))
        if verdict == "stop":
            break
        if verdict == "skip":
            continue

        # 2. label: the best and the worst reply of each prompt (reward or judge); ties dropped
        chosen, rejected, labelled = label_batch(run, batch)
        cut = len(chosen) % acc.num_processes  # every process needs pairs in every step
        chosen, rejected = chosen[: len(chosen) - cut], rejected[: len(rejected) - cut]

        # 3. pairs: the sampled token ids, prompt once
        items = pair_items(exp, chosen, rejected)

        # 4. update: epochs × mini-batches of DPO steps against the frozen reference
        t_update = time.perf_counter()
        stats: dict[str, float] = {}
        skipped = 0
        try:
            if items:
                stats, skipped = update(run, items)
        except NonFiniteError:
            loop.stop_on_nan()
            break
        t_train = time.perf_counter()
        sync = push_policy(run.models, acc, iteration)  # the rollout engine gets the new weights

        # 5. log, samples, evaluation, checkpoint
        scores = exp.scores.cpu()
        metrics = rollout_metrics(exp, eos_id) | labelled
        metrics |= {
            "pairs/kept": len(items),
            "pairs/dropped_for_sharding": cut,
            "reward/score_chosen": float(scores[chosen].mean()) if len(items) else 0.0,
            "reward/score_rejected": float(scores[rejected].mean()) if len(items) else 0.0,
        }
        metrics |= timing_metrics(batch, t0=t0, t_update=t_update, t_train=t_train, skipped=skipped)
        metrics |= stats | sync
        loop.end_iteration(iteration, metrics=metrics, batch=batch)

    # the final evaluation, the last checkpoint, the policy saved
    return loop.end(metrics)
