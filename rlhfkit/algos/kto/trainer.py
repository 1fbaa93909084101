"""KTO: a policy trained on replies judged on their own (thumbs up / down, a rating above or
below a threshold), with no second reply to compare against.

Implementation details and their sources:

1. The loss (`core.kto_losses`, Ethayarajh et al. 2024 eq. 8): per example λ_y − v(x, y), with
   r = log π(y|x) − log π_ref(y|x), v = λ_D·σ(β·(r − z₀)) for a desirable reply and
   λ_U·σ(β·(z₀ − r)) for an undesirable one; the step's loss is the mean over its examples.
2. The reference point z₀ (`core.kto_reference_point`): the mean log-ratio of *mismatched*
   pairs, max(0, mean_i log π(y_j|x_i)/π_ref(y_j|x_i)), detached, as the paper (§4.1) and TRL.
   Which mismatched pairs: every example i carries one fixed partner j, the nearest earlier
   example in file order (cyclically) whose prompt differs, like TRL's `_get_kl_dataset`
   (completions shifted by one within each chunk of the dataset). Fixed partners let the
   reference log-probs of the mismatched pairs be cached with the others. Over which examples:
   all examples of the optimiser step — every micro-batch and every process — so one z₀ serves
   the whole step and accumulation and `accelerate launch` give the one-batch gradient. TRL
   averages per micro-batch (over processes), so its z₀ changes with the accumulation
   split; with one micro-batch per step the two agree. Cost: z₀ needs the step's mismatched
   pairs under the current policy before any loss. When the step is one micro-batch on every
   process, the loss forward already holds them: z₀ is taken from its mismatched rows,
   detached and summed over the processes, before the loss (`one_pass_loss`; the same value,
   tested bitwise); otherwise each step runs a no-grad forward of its micro-batches first
   (`reference_point`; TRL runs the KL completions in a separate no-grad forward always).
3. One row per example (`update.pairs`): the prompt once, the example's reply and its partner's
   reply behind a block mask (the shared-prompt rows of DPO); row 0 of `pair_logps` is
   log π(y_i|x_i), row 1 log π(y_j|x_i). The partner's reply is tokenized after x_i with the
   same truncation policy as a DPO pair (`data.encode_pairs`).
4. Weights: λ_D and λ_U as given, or (`balance_weights`) λ_D = λ_U·n_U/n_D; the paper
   recommends λ_D·n_D / (λ_U·n_U) ∈ [1, 4/3] (§4.2) and a ratio outside it is warned about. A
   training set with one kind of label only is an error (one line): no trade-off to learn.
5. The reference (`update.reference`): cached (both rows of every example computed once,
   before the first step, written with a fingerprint; a resumed run reads them back) or live;
   with LoRA and no `ref_model`, the policy with its adapters disabled. TRL's
   `precompute_ref_log_probs`.
6. Metrics with TRL's names (`KTOTrainer`): `rewards/chosen` and `rewards/rejected` (mean
   β·(log π − log π_ref) of the desirable / undesirable examples of the step), `rewards/margins`
   (their difference), `logps/chosen`, `logps/rejected`, `kl` (z₀), `count/chosen`,
   `count/rejected`; the same under `eval/` on the validation split (whose z₀ comes from its own
   mismatched pairs).
7. Accumulation, NaN/inf (the step is skipped), dropout off, resume and the data plan are DPO's
   (`engine.accumulate` / `optimizer_step`, `data.plan_steps`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit.algos.kto.config import KTOConfig
from rlhfkit.core import kto_losses, kto_reference_point
from rlhfkit.data import (
    DataError,
    EncodedPair,
    TokenBudgetSampler,
    encode_pairs,
    epoch_batches,
    plan_steps,
    read_unpaired,
    shared_length,
    split_records,
)
from rlhfkit.engine import (
    Engine,
    OfflineLoop,
    eval_mode,
    resumed_step,
    unwrap,
)
from rlhfkit.models import load_policy, save_policy
from rlhfkit.types import PreferencePair, UnpairedExample
from rlhfkit.update.pairs import collate, pair_logps
from rlhfkit.update.reference import (
    Reference,
    inference_batches,
    load_preference_tokenizer,
    pair_references,
)

__all__ = [
    "KTOResult",
    "KTORun",
    "evaluate",
    "kto_items",
    "micro_batch_loss",
    "partners",
    "setup",
    "train",
]

STAT_KEYS = (
    "loss",
    "chosen",
    "rejected",
    "logps_chosen",
    "logps_rejected",
    "n_chosen",
    "n_rejected",
)
RATIO_RANGE = (1.0, 4.0 / 3.0)  # λ_D·n_D / (λ_U·n_U), KTO paper §4.2


@dataclass
class KTOResult:
    model_dir: Path  # RUN/model: the trained policy and its tokenizer (HF folder)
    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)  # final eval/* and last train metrics


def partners(records: Sequence[UnpairedExample]) -> list[int]:
    """For each example i, the index j of its mismatched completion: the nearest earlier
    example (cyclically, in file order) whose prompt differs from i's; i itself when every
    prompt is the same (then no mismatched pair exists)."""
    n = len(records)
    out = []
    for i, rec in enumerate(records):
        j = next(((i - k) % n for k in range(1, n) if records[(i - k) % n].prompt != rec.prompt), i)
        out.append(j)
    return out


def kto_items(
    tokenizer: Any, records: Sequence[UnpairedExample], cfg: KTOConfig
) -> tuple[list[EncodedPair], torch.Tensor]:
    """Each example as a pair (its own reply, its partner's reply) after its prompt, and the
    (N,) bool labels (True = desirable)."""
    d = cfg.data
    pairs = [
        PreferencePair(r.prompt, r.completion, records[j].completion, source=r.source)
        for r, j in zip(records, partners(records), strict=True)
    ]
    items = encode_pairs(
        tokenizer, pairs, d.max_length, d.max_prompt_length, template=d.prompt_template
    )
    return items, torch.tensor([r.label for r in records], dtype=torch.bool)


def _read(cfg: KTOConfig) -> tuple[list[UnpairedExample], list[UnpairedExample]]:
    """Training and validation examples; a training set with one label only is an error."""
    d = cfg.data
    if not d.train:
        raise DataError([], header="data.train is empty: give a file of rated replies")
    read = functools.partial(read_unpaired, columns=d.columns or None, on_error=d.on_error)
    records = read(d.train).records
    n_good = sum(r.label for r in records)
    if n_good in (0, len(records)):
        kind = "desirable (label true)" if n_good else "undesirable (label false)"
        raise DataError(
            [],
            header=f"{d.train}: all {len(records)} examples are {kind}; KTO needs both kinds "
            "(for demonstrations alone, use `rlhfkit sft`)",
        )
    if d.validation:
        return records, read(d.validation).records
    if d.validation_fraction == 0:
        return records, []
    frac = d.validation_fraction
    train, val = split_records(records, (1.0 - frac, frac), seed=cfg.engine.seed)
    return train, val


def class_weights(cfg: KTOConfig, n_desirable: int, n_undesirable: int) -> tuple[float, float, str]:
    """(λ_D, λ_U, a warning or "") by the KTO paper's rule for imbalanced data (§4.2)."""
    lam_d, lam_u = cfg.desirable_weight, cfg.undesirable_weight
    if cfg.balance_weights:
        lam_d = lam_u * n_undesirable / n_desirable
    ratio = lam_d * n_desirable / (lam_u * n_undesirable)
    warning = ""
    if not RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1] + 1e-9:
        warning = (
            f"kto: λ_D·n_D / (λ_U·n_U) = {ratio:.3g} with {n_desirable} desirable and "
            f"{n_undesirable} undesirable examples; the KTO paper recommends [1, 4/3] (e.g. "
            f"desirable_weight={lam_u * n_undesirable / n_desirable:.3g}, or "
            "balance_weights=true)"
        )
    return lam_d, lam_u, warning


def _taken(rows: dict[int, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
    """The reference log-probs taken for `batch` earlier in the step."""
    return rows[id(batch)]


def _kl_sum(model: torch.nn.Module, batch: dict[str, Any], ref: Reference) -> torch.Tensor:
    """Σ over the batch of log π(y_j|x_i) − log π_ref(y_j|x_i) (the mismatched row), no grad."""
    with torch.no_grad():
        policy = pair_logps(model, batch)[1]
        return (policy - ref(batch)[1].to(policy)).sum()


def reference_point(
    acc: Any, model: torch.nn.Module, batches: Sequence[dict[str, Any]], ref: Reference, n: int
) -> torch.Tensor:
    """z₀ of a step: the mismatched log-ratios of this process's micro-batches, summed over
    the processes, over the step's `n` examples (`core.kto_reference_point`)."""
    total = torch.zeros((), device=acc.device)
    for batch in batches:
        total = total + _kl_sum(model, batch, ref).to(total)
    if acc.num_processes > 1:
        total = acc.reduce(total, "sum")
    return kto_reference_point(total.cpu(), n)


def micro_batch_loss(
    model: torch.nn.Module,
    batch: dict[str, Any],
    ref: Reference,
    z0: torch.Tensor,
    n_examples: float,
    world: int,
    cfg: KTOConfig,
    weights: tuple[float, float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch's summed per-example KTO loss divided by the step's *global* example
    count (over W processes). `batch["desirable"]` holds the labels. Stats are sums."""
    logps = pair_logps(model, batch)[0]
    return _loss(logps, ref(batch)[0].to(logps), batch, z0, n_examples, world, cfg, weights)


def one_pass_loss(
    model: torch.nn.Module,
    batch: dict[str, Any],
    ref: Reference,
    z0_out: list[torch.Tensor],
    acc: Any,
    n_examples: float,
    cfg: KTOConfig,
    weights: tuple[float, float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`micro_batch_loss` when the step is one micro-batch on every process: the loss forward
    gives both rows, z₀ comes from its mismatched row, detached, summed over the processes —
    the value `reference_point` gets from a separate no-gradient forward — and the policy runs
    once per step instead of twice. z₀ is appended to `z0_out`."""
    logps = pair_logps(model, batch)
    ref_logps = ref(batch).to(logps)
    total = (logps[1].detach() - ref_logps[1]).sum()
    if acc.num_processes > 1:
        total = acc.reduce(total, "sum")
    z0 = kto_reference_point(total.cpu(), n_examples)
    z0_out.append(z0)
    return _loss(logps[0], ref_logps[0], batch, z0, n_examples, acc.num_processes, cfg, weights)


def _loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    batch: dict[str, Any],
    z0: torch.Tensor,
    n_examples: float,
    world: int,
    cfg: KTOConfig,
    weights: tuple[float, float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    good = batch["desirable"].to(logps.device)
    out = kto_losses(logps, ref_logps, good, z0.to(logps), cfg.beta, *weights)
    loss = out.losses.sum() / (n_examples / world)
    summed = logps.detach()
    stats = {
        "loss": loss.detach(),
        "chosen": out.rewards[good].sum(),
        "rejected": out.rewards[~good].sum(),
        "logps_chosen": summed[good].sum(),
        "logps_rejected": summed[~good].sum(),
        "n_chosen": good.sum(),
        "n_rejected": (~good).sum(),
    }
    return loss, stats


def one_pass(micro_batches: int, world: int) -> bool:
    """Whether a step takes z₀ from its loss forward (`one_pass_loss`): one micro-batch on
    every process. Otherwise z₀ needs every micro-batch before the first loss: a separate
    no-gradient forward (`reference_point`)."""
    return micro_batches == world


def _named(sums: dict[str, float], z0: float, prefix: str = "") -> dict[str, float]:
    """TRL's KTO metric names from summed stats (a side with no examples is left out)."""
    out = {
        f"{prefix}kl": z0,
        f"{prefix}count/chosen": sums["n_chosen"],
        f"{prefix}count/rejected": sums["n_rejected"],
    }
    for side in ("chosen", "rejected"):
        n = sums[f"n_{side}"]
        if n > 0:
            out[f"{prefix}rewards/{side}"] = sums[side] / n
            out[f"{prefix}logps/{side}"] = sums[f"logps_{side}"] / n
    if sums["n_chosen"] > 0 and sums["n_rejected"] > 0:
        out[f"{prefix}rewards/margins"] = (
            out[f"{prefix}rewards/chosen"] - out[f"{prefix}rewards/rejected"]
        )
    return out


def _batch(
    items: Sequence[EncodedPair], labels: torch.Tensor, index: list[int], pad_id: int, share: bool
) -> dict[str, Any]:
    batch = collate([items[i] for i in index], pad_id, share)
    batch["index"] = torch.tensor(index)
    batch["desirable"] = labels[index]
    return batch


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    items: Sequence[EncodedPair],
    labels: torch.Tensor,
    ref: Reference,
    cfg: KTOConfig,
    pad_id: int,
    weights: tuple[float, float],
) -> dict[str, float]:
    """Held-out loss and TRL's metrics over `items` (every process all of them), z₀ from the
    validation set's own mismatched pairs."""
    model = unwrap(model)
    batches = [
        _batch(items, labels, b, pad_id, cfg.data.share_prompt)
        for b in inference_batches(items, cfg.data)
    ]
    sums = dict.fromkeys(STAT_KEYS, 0.0)
    with eval_mode(model):
        z0 = kto_reference_point(sum(float(_kl_sum(model, b, ref)) for b in batches), len(items))
        for batch in batches:
            _, stats = micro_batch_loss(model, batch, ref, z0, len(items), 1, cfg, weights)
            for k, v in stats.items():
                sums[k] += float(v)
    return {"eval/loss": sums["loss"], **_named(sums, float(z0), "eval/")}


@dataclass
class KTORun:
    """What a KTO run trains with (`setup`)."""

    cfg: KTOConfig
    engine: Engine
    tokenizer: Any
    items: list[EncodedPair]  # each example: (its reply, its partner's reply) after its prompt
    labels: torch.Tensor  # (N,) bool, True = desirable
    val_items: list[EncodedPair]  # validation examples (may be empty)
    val_labels: torch.Tensor
    weights: tuple[float, float]  # (λ_D, λ_U)
    plan: list[list[list[int]]]  # per optimiser step, its micro-batches of item indices
    policy: torch.nn.Module  # prepared (inside the DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ref: Reference  # training examples → reference log-probs of both rows
    val_ref: Reference
    start: int  # the last step of the checkpoint resumed from (0: a fresh run)


def setup(cfg: KTOConfig) -> KTORun:
    """Read the data (every bad row, a file with one kind of label, a missing model or
    tokenizer, a model shorter than max_length reported before the run directory is made),
    split, pair each example with its mismatched reply, tokenize, plan; start the engine, load
    the policy, compute (or read back) the reference, resume if possible."""
    tokenizer = load_preference_tokenizer(cfg)
    d = cfg.data
    train_records, val_records = _read(cfg)
    items, labels = kto_items(tokenizer, train_records, cfg)
    val_items, val_labels = kto_items(tokenizer, val_records, cfg)
    n_good = int(labels.sum())
    if n_good in (0, len(labels)):  # the split left one kind only
        raise DataError(
            [],
            header=f"{d.train}: after the validation split the training set holds one "
            "kind of label only; lower data.validation_fraction or give data.validation",
        )
    lam_d, lam_u, warning = class_weights(cfg, n_good, len(labels) - n_good)
    engine = Engine(cfg.engine, cfg.out_dir, cfg)
    if warning:
        engine.print(f"[yellow]{warning}")
    lengths = [shared_length(it) if d.share_prompt else 2 * it.length for it in items]
    sampler = TokenBudgetSampler(lengths, d.max_tokens, shuffle=True, seed=cfg.engine.seed)
    plan = plan_steps(
        lambda e: epoch_batches(sampler, e, d.max_examples, cfg.engine.seed),
        cfg.grad_accum_steps,
        engine.num_processes,
        cfg.epochs,
        cfg.max_steps,
    )
    engine.print(
        f"kto: {len(items)} training examples ({n_good} desirable, λ_D {lam_d:.3g}, "
        f"λ_U {lam_u:.3g}), {len(val_items)} validation examples, {len(plan)} optimiser steps"
    )

    # the policy, optimiser, schedule (dropout off unless asked for)
    acc = engine.accelerator
    policy = load_policy(cfg.model, tokenizer)
    engine.compile(policy)  # engine.compile: the decoder blocks (a no-op when off)
    policy, optimizer, scheduler = engine.prepare_trainable(policy, cfg.optim, len(plan))
    policy.train(not cfg.disable_dropout)

    # the reference: cached log-probs of both rows (computed before any step, or read back)
    # or live
    refs = pair_references(
        engine,
        model=cfg.model,
        ref_model=cfg.ref_model,
        mode=cfg.reference,
        policy=acc.unwrap_model(policy),
        tokenizer=tokenizer,
        splits={"train": items, "validation": val_items},
        data=d,
        name="kto",
        unit="examples",
        compile=True,
    )
    return KTORun(
        cfg=cfg,
        engine=engine,
        tokenizer=tokenizer,
        items=items,
        labels=labels,
        val_items=val_items,
        val_labels=val_labels,
        weights=(lam_d, lam_u),
        plan=plan,
        policy=policy,
        optimizer=optimizer,
        scheduler=scheduler,
        ref=refs["train"],
        val_ref=refs["validation"],
        start=resumed_step(engine),
    )


def train(cfg: KTOConfig) -> KTOResult:
    """Train a policy with KTO on desirable / undesirable replies; returns the saved folder."""
    run = setup(cfg)
    engine, acc, policy = run.engine, run.engine.accelerator, run.policy
    world, rank, pad_id = engine.num_processes, acc.process_index, run.tokenizer.pad_token_id
    loop = OfflineLoop(
        engine,
        policy,
        run.optimizer,
        run.scheduler,
        cfg=cfg,
        name="kto",
        last=len(run.plan),
        stat_keys=STAT_KEYS,
        evaluate=functools.partial(
            evaluate, policy, run.val_items, run.val_labels, run.val_ref, cfg, pad_id, run.weights
        )
        if run.val_items
        else None,
        start=run.start,
    )
    metrics: dict[str, Any] = {}
    for step in loop.steps():
        # 1. batches: this process's micro-batches of the planned step, over its global examples
        groups = run.plan[step - 1]
        n_examples = sum(len(b) for b in groups)
        batches = [
            _batch(run.items, run.labels, b, pad_id, cfg.data.share_prompt)
            for b in groups[rank::world]
        ]

        # 2. z₀ of the step (mismatched pairs under the current policy, no gradient): from the
        #    loss forward when the step is one micro-batch per process, else a forward of its
        #    own; the reference log-probs of each micro-batch are taken once
        ref = functools.partial(_taken, {id(b): run.ref(b) for b in batches})
        z0_out: list[torch.Tensor] = []
        if one_pass(len(groups), world):
            losses = [
                functools.partial(
                    one_pass_loss, policy, batches[0], ref, z0_out, acc, n_examples, cfg,
                    run.weights,
                )
            ]  # fmt: skip
        else:
            z0_out.append(reference_point(acc, policy, batches, ref, n_examples))
            losses = [
                functools.partial(
                    micro_batch_loss, policy, b, ref, z0_out[0], n_examples, world, cfg,
                    run.weights,
                )
                for b in batches
            ]  # fmt: skip

        # 3. one optimiser step (a NaN/inf loss or gradient skips it: nothing moves)
        out = loop.step(step, losses)
        z0 = z0_out[0] if z0_out else torch.tensor(float("nan"))
        loop.rate.add(sum(int(b["attention_mask"].sum()) for b in batches))

        # 4. log, evaluate, checkpoint
        if loop.logs(step):
            # `accumulate` averaged the sums over processes: the loss is the step's, the other
            # sums (over this step's examples) are W times that average
            summed = {k: out.sums[k] * world for k in STAT_KEYS}
            metrics = {
                "loss/kto": out.sums["loss"],
                **_named(summed, float(z0)),
                **loop.optim_metrics(out, world),
            }
            engine.log(metrics, step)
        loop.end_step(step)

    # 5. final evaluation and the model folder
    unwrapped = acc.unwrap_model(policy)
    model_dir = loop.finish(metrics, lambda path: save_policy(unwrapped, run.tokenizer, path))
    return KTOResult(model_dir, engine.run.path, metrics)
