"""Offline preference optimisation: DPO, conservative DPO, IPO, SimPO and ORPO on comparisons.

Implementation details and their sources:

1. Losses (`rlhfkit.core`), picked once at setup from `LOSSES`:
   - sigmoid: DPO, −log σ(β·h), h = Δ log-ratio of chosen over rejected to the reference
     (Rafailov et al. 2023 eq. 7); with `label_smoothing` s > 0 conservative DPO,
     −(1 − s)·log σ(β·h) − s·log σ(−β·h) (Mitchell 2023; TRL `label_smoothing`);
   - ipo: (h − 1/(2β))² (Azar et al. 2023 eq. 17) on token-*mean* log-probs, as TRL does;
   - simpo: −log σ(β·(ā_w − ā_l) − γ) on token-mean log-probs, no reference model (Meng et al.
     2024 eq. 6; TRL `CPOTrainer(loss_type="simpo")`);
   - orpo: −ā_w − β·log σ(log odds(y_w) − log odds(y_l)), odds = e^ā / (1 − e^ā): the SFT
     NLL of the chosen reply (token mean) plus the odds-ratio term, no reference model (Hong
     et al. 2024 eqs. 2–7; TRL `ORPOTrainer`, whose `beta` is the paper's λ). A loss type of
     this trainer rather than its own command: it reads the same comparisons, batches them
     the same way and needs one policy forward per pair, like SimPO.
2. Response-only log-probs: the sum over the reply's tokens (EOS included) of log π(token | prompt,
   earlier reply tokens); prompt tokens are context. The LM head runs at response positions only
   and the last GPT-2 block at the predicting columns only (`update.pairs.pair_logps`).
3. Shared-prompt rows (`data.collate_shared_prompt`, as the reward model): one row per pair,
   the prompt once, a block mask so each reply sees the prompt and itself only; exact (tested
   against plain rows).
4. The reference (`update.reference`): "cached" computes the reference log-probs of every
   training and validation pair once, before the first step, in eval mode, and writes them
   atomically to RUN/reference_logps.pt with a fingerprint of the tokenized data; a resumed run
   reads them back (the policy has moved by then, so they could not be recomputed from it).
   TRL's `precompute_ref_log_probs`. "live" runs the reference beside the policy, and with LoRA
   and no `ref_model` it is the policy with its adapters disabled (peft `disable_adapter`; TRL
   and OpenRLHF do the same), so no second copy is held.
5. Gradient accumulation equals one big batch: each micro-batch's summed per-pair loss is
   divided by the step's global pair count (from the data plan) over W processes
   (`core.aggregate_loss` docstring), and the step goes through `engine.accumulate` /
   `engine.optimizer_step` (clipping; a NaN/inf loss or gradient skips the step).
6. Metrics with TRL's names and meanings: `rewards/chosen`, `rewards/rejected` (mean implicit
   reward β·(log π − log π_ref) of each side), `rewards/accuracies` (share of pairs with chosen
   reward > rejected), `rewards/margins` (mean difference), `logps/chosen`, `logps/rejected`
   (mean summed policy log-probs). The same on the validation split under `eval/`: the held-out
   preference accuracy of the implicit reward.
7. Dropout is off by default (TRL `disable_dropout=True`): the implicit reward is then a function
   of the weights, and the cached reference was computed in the same mode.
8. Resume: the data plan depends only on (seed, epoch); checkpoints hold model, optimiser,
   scheduler and RNG states, so a killed and resumed run ends equal to an uninterrupted one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit.algos.dpo.config import DPOConfig
from rlhfkit.core import (
    PreferenceLosses,
    dpo_sigmoid_losses,
    ipo_losses,
    orpo_losses,
    simpo_losses,
)
from rlhfkit.data import (
    DataError,
    EncodedPair,
    TokenBudgetSampler,
    encode_pairs,
    epoch_batches,
    plan_steps,
    read_preferences,
    shared_length,
    split_records,
)
from rlhfkit.data.readers import require_records
from rlhfkit.engine import (
    Engine,
    OfflineLoop,
    eval_mode,
    resumed_step,
    unwrap,
)
from rlhfkit.models import load_policy, save_policy
from rlhfkit.types import PreferencePair
from rlhfkit.update.pairs import PAIR_STAT_KEYS, collate, pair_loss, pair_metrics
from rlhfkit.update.reference import (
    REFERENCE_FILE,
    Reference,
    inference_batches,
    load_preference_tokenizer,
    pair_references,
    reference_logps,
)

__all__ = [
    "LOSSES",
    "REFERENCE_FILE",  # where a run keeps its cached reference log-probs
    "DPOResult",
    "DPORun",
    "Variant",
    "evaluate",
    "micro_batch_loss",
    "reference_logps",
    "setup",
    "train",
]


@dataclass
class DPOResult:
    model_dir: Path  # RUN/model: the trained policy and its tokenizer (HF folder)
    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)  # final eval/* and last train metrics


@dataclass(frozen=True)
class Variant:
    """One loss: whether it needs a reference, whether it takes token-mean log-probs, and the
    per-pair loss of (policy chosen, policy rejected, ref chosen, ref rejected)."""

    needs_reference: bool
    token_mean: bool
    losses: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, DPOConfig], Any]


LOSSES = {
    "sigmoid": Variant(
        True, False, lambda pc, pr, rc, rr, cfg: dpo_sigmoid_losses(
            pc, pr, rc, rr, cfg.beta, cfg.label_smoothing
        ),
    ),
    "ipo": Variant(True, True, lambda pc, pr, rc, rr, cfg: ipo_losses(pc, pr, rc, rr, cfg.beta)),
    "simpo": Variant(
        False, True, lambda pc, pr, rc, rr, cfg: simpo_losses(pc, pr, cfg.beta, cfg.simpo_gamma)
    ),
    "orpo": Variant(False, True, lambda pc, pr, rc, rr, cfg: orpo_losses(pc, pr, cfg.beta)),
}  # fmt: skip

STAT_KEYS = PAIR_STAT_KEYS


def _pairs(source: str, format: Any, on_error: Any) -> list[PreferencePair]:
    """The pairs of `source`; an empty source (no rows, every row bad or dropped) is a
    `DataError` naming the file, before the run directory is made."""
    result = read_preferences(source, format, on_error=on_error)
    return require_records(result, source, "preferences").records


def _read(cfg: DPOConfig) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Training and validation pairs (`read_preferences` expands ranked lists to their pairs)."""
    d = cfg.data
    if not d.train:
        raise DataError([], header="data.train is empty: give a comparisons file")
    train = _pairs(d.train, d.format, d.on_error)
    if d.validation:
        return train, _pairs(d.validation, d.format, d.on_error)
    if d.validation_fraction == 0:
        return train, []
    frac = d.validation_fraction
    train, val = split_records(train, (1.0 - frac, frac), seed=cfg.engine.seed)
    return train, val


def micro_batch_loss(
    model: torch.nn.Module,
    batch: dict[str, Any],
    ref: Callable[[dict[str, Any]], torch.Tensor] | None,
    n_pairs: float,
    world: int,
    variant: Variant,
    cfg: DPOConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch's summed per-pair loss divided by the step's *global* pair count
    (`update.pairs.pair_loss` with the variant's loss). `ref(batch)` gives the (2, n) reference
    log-probs (cached or live; None for SimPO and ORPO). Stats are sums over the batch's pairs."""
    losses = functools.partial(_variant_losses, variant, cfg)
    return pair_loss(model, batch, ref, losses, variant.token_mean, n_pairs, world)


def _variant_losses(variant: Variant, cfg: DPOConfig, *logps: torch.Tensor) -> PreferenceLosses:
    return variant.losses(*logps, cfg)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    items: Sequence[EncodedPair],
    ref: Callable[[dict[str, Any]], torch.Tensor] | None,
    variant: Variant,
    cfg: DPOConfig,
    pad_id: int,
) -> dict[str, float]:
    """Held-out loss and implicit-reward metrics (`eval/rewards/accuracies` is the preference
    accuracy of the implicit reward) over `items` (every process all of them, with the model
    inside the DDP wrapper)."""
    model = unwrap(model)
    sums = dict.fromkeys(STAT_KEYS, 0.0)
    with eval_mode(model):
        for b in inference_batches(items, cfg.data):
            batch = collate([items[i] for i in b], pad_id, cfg.data.share_prompt)
            batch["index"] = torch.tensor(b)
            _, stats = micro_batch_loss(model, batch, ref, len(items), 1, variant, cfg)
            for k, v in stats.items():
                sums[k] += float(v)
    return {
        "eval/loss": sums["loss"],
        **pair_metrics(sums, len(items), "eval/"),
        "eval/pairs": len(items),
    }


@dataclass
class DPORun:
    """What a DPO run trains with (`setup`)."""

    cfg: DPOConfig
    engine: Engine
    variant: Variant  # the loss, picked once from `LOSSES`
    tokenizer: Any
    items: list[EncodedPair]  # training pairs, tokenized
    val_items: list[EncodedPair]  # validation pairs (may be empty)
    plan: list[list[list[int]]]  # per optimiser step, its micro-batches of item indices
    policy: torch.nn.Module  # prepared (inside the DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ref: Reference | None  # training pairs → reference log-probs (None: SimPO, ORPO)
    val_ref: Reference | None
    start: int  # the last step of the checkpoint resumed from (0: a fresh run)


def setup(cfg: DPOConfig) -> DPORun:
    """Read and tokenize the data (every bad row, a missing model or tokenizer, a model
    shorter than max_length reported before the run directory is made), plan the steps, start
    the engine, load the policy, compute (or read back) the reference, resume if possible."""
    variant = LOSSES[cfg.loss_type]
    tokenizer = load_preference_tokenizer(cfg)
    d = cfg.data
    train_pairs, val_pairs = _read(cfg)
    encode = functools.partial(
        encode_pairs,
        tokenizer,
        max_length=d.max_length,
        max_prompt_length=d.max_prompt_length,
        template=d.prompt_template,
    )
    items, val_items = encode(train_pairs), encode(val_pairs)
    engine = Engine(cfg.engine, cfg.out_dir, cfg)
    lengths = [shared_length(it) if d.share_prompt else 2 * it.length for it in items]
    sampler = TokenBudgetSampler(lengths, d.max_tokens, shuffle=True, seed=cfg.engine.seed)
    plan = plan_steps(
        lambda e: epoch_batches(sampler, e, d.max_pairs, cfg.engine.seed),
        cfg.grad_accum_steps,
        engine.num_processes,
        cfg.epochs,
        cfg.max_steps,
    )
    engine.print(
        f"dpo ({cfg.loss_type}): {len(items)} training pairs, {len(val_items)} validation "
        f"pairs, {len(plan)} optimiser steps"
    )

    # the policy, optimiser, schedule (dropout off unless asked for: see detail 7)
    acc = engine.accelerator
    policy = load_policy(cfg.model, tokenizer)
    engine.compile(policy)
    policy, optimizer, scheduler = engine.prepare_trainable(policy, cfg.optim, len(plan))
    policy.train(not cfg.disable_dropout)

    # the reference: cached log-probs (computed before any step, or read back) or live
    refs: dict[str, Reference | None] = {"train": None, "validation": None}
    if variant.needs_reference:
        refs = pair_references(
            engine,
            model=cfg.model,
            ref_model=cfg.ref_model,
            mode=cfg.reference,
            policy=acc.unwrap_model(policy),
            tokenizer=tokenizer,
            splits={"train": items, "validation": val_items},
            data=d,
            name="dpo",
            unit="pairs",
            compile=True,
        )
    return DPORun(
        cfg=cfg,
        engine=engine,
        variant=variant,
        tokenizer=tokenizer,
        items=items,
        val_items=val_items,
        plan=plan,
        policy=policy,
        optimizer=optimizer,
        scheduler=scheduler,
        ref=refs["train"],
        val_ref=refs["validation"],
        start=resumed_step(engine),
    )


def train(cfg: DPOConfig) -> DPOResult:
    """Train a policy on comparisons with DPO / cDPO / IPO / SimPO / ORPO; returns the saved
    folder."""
    run = setup(cfg)
    engine, acc, policy = run.engine, run.engine.accelerator, run.policy
    world, rank, pad_id = engine.num_processes, acc.process_index, run.tokenizer.pad_token_id
    loop = OfflineLoop(
        engine,
        policy,
        run.optimizer,
        run.scheduler,
        cfg=cfg,
        name="dpo",
        last=len(run.plan),
        stat_keys=STAT_KEYS,
        evaluate=functools.partial(
            evaluate, policy, run.val_items, run.val_ref, run.variant, cfg, pad_id
        )
        if run.val_items
        else None,
        start=run.start,
    )
    metrics: dict[str, Any] = {}
    for step in loop.steps():
        # 1. batches: this process's micro-batches of the planned step, over its global pairs
        groups = run.plan[step - 1]
        n_pairs = sum(len(b) for b in groups)
        batches = []
        for b in groups[rank::world]:
            batch = collate([run.items[i] for i in b], pad_id, cfg.data.share_prompt)
            batch["index"] = torch.tensor(b)
            batches.append(batch)

        # 2. one optimiser step (a NaN/inf loss or gradient skips it: nothing moves)
        out = loop.step(
            step,
            [
                functools.partial(
                    micro_batch_loss, policy, b, run.ref, n_pairs, world, run.variant, cfg
                )
                for b in batches
            ],
        )
        loop.rate.add(sum(int(b["attention_mask"].sum()) for b in batches))

        # 3. log, evaluate, checkpoint
        if loop.logs(step):
            # `accumulate` averaged the sums over processes: the loss is the step's, the other
            # sums (over this step's pairs) are W times that average
            summed = {k: out.sums[k] * world for k in STAT_KEYS}
            metrics = {
                "loss/dpo": out.sums["loss"],
                **pair_metrics(summed, n_pairs),
                **loop.optim_metrics(out, world),
            }
            engine.log(metrics, step)
        loop.end_step(step)

    # 4. final evaluation and the model folder
    unwrapped = acc.unwrap_model(policy)
    model_dir = loop.finish(metrics, lambda path: save_policy(unwrapped, run.tokenizer, path))
    return DPOResult(model_dir, engine.run.path, metrics)
